"""bench/gpu.py's smoke test: every step of the flagship run, at the demo's shape, on this machine.

Checks that each step runs and reports what it says (not how fast: never timed tests).
"""

import json

import pytest

# The whole bench at demo shape (~10 s): in `make test`, not in the fast tier.
pytestmark = pytest.mark.slow

from bench import gpu


@pytest.fixture(scope="module")
def report():
    return gpu.run(gpu.GpuBenchConfig(preset="demo-shape"))


def test_every_step_runs_and_reports(report):
    json.dumps(report)  # one JSON object
    for step in ("bandwidth", "generation", "index", "training"):
        assert "error" not in report[step], report[step]
    assert report["bandwidth"]["gb_per_s"] > 0
    assert 100 <= report["sae"]["l0"] <= 150  # calibrated thresholds, not zero ones
    assert report["sae"]["hook"] == "blocks.3.hook_mlp_out"  # block 28 of 36 at the demo's 4 layers
    gen = report["generation"]
    assert gen["engine"].startswith("Hugging Face") and gen["compile_failed"] is None
    for batch in ("batch_1", "batch_5"):
        row = gen[batch]
        for key in ("unsteered", "steered", "hf_generate_eager", "engine_eager_unsteered"):
            assert row[f"{key}_tokens_per_s"] > 0
    assert gen["batch_5"]["transformerlens_tokens_per_s"] > 0
    assert report["index"]["bare_tokens_per_s"] > 0 and report["index"]["index_stream_tokens_per_s"] > 0
    assert report["training"]["train_tokens_per_s"] > 0 and report["training"]["steps"] == 20
    profile = report["training"]["sae_step_profile"]  # where one SAE step's time goes, from the untimed run
    assert "error" not in profile and profile["device_ms_per_step"] > 0
    assert 0 < sum(profile["top_ms_per_step"].values()) <= profile["device_ms_per_step"] + 0.05
    assert "skipped" in report["load"]  # the fresh-interpreter load check is for the flagship run


def test_flagship_refuses_without_a_gpu(monkeypatch):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="CUDA"):
        gpu.run(gpu.GpuBenchConfig(preset="flagship"))


def test_flagship_preset_is_the_issue_shape():
    preset = gpu.PRESETS["flagship"]
    assert preset.shape["hidden_size"] == 4096 and preset.shape["num_hidden_layers"] == 36
    assert preset.d_sae == 65536 and preset.train_steps == 200 and preset.train_batch_tokens == 4096
    assert gpu.flagship_layer(preset.shape) == 28


def test_only_runs_the_named_steps():
    report = gpu.run(gpu.GpuBenchConfig(preset="demo-shape", only=("index",)))
    assert "error" not in report["index"] and "per_build_fixed_s" in report["index"]
    assert not {"generation", "training", "load"} & set(report)


def test_training_step_leaves_the_signal_handlers_as_it_found_them():
    """SAELens's own runner leaves its SIGINT/SIGTERM handlers installed (a later SIGTERM then raised
    inside an unrelated forward on the H100); the bench trains through the app's runner, which does not."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    report = gpu.run(gpu.GpuBenchConfig(preset="demo-shape", only=("training",)))
    assert "error" not in report["training"], report["training"]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_profiler_that_cannot_start_costs_only_the_profile(monkeypatch):
    # The SAE-step profile is an extra: where torch's profiler fails, the training figures still come.
    import torch.profiler

    def broken(*args, **kwargs):
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    monkeypatch.setattr(torch.profiler, "profile", broken)
    report = gpu.run(gpu.GpuBenchConfig(preset="demo-shape", only=("training",)))
    training = report["training"]
    assert "error" not in training and training["train_tokens_per_s"] > 0, training
    assert training["sae_step_profile"]["error"] == "RuntimeError: CUPTI_ERROR_NOT_INITIALIZED"
    assert "device_ms_per_step" not in training["sae_step_profile"]
