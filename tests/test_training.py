"""sae_lib.training: presets, config rules, bad input, a real (tiny) SAELens run, interrupt + resume."""

import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from sae_lib import constants
from sae_lib.errors import InputError
from sae_lib.training import (
    ARCHITECTURES,
    CHECKPOINT_FILES,
    PRESETS,
    QWEN3_8B_TRAINING_TOKENS,
    Progress,
    TrainingInterrupted,
    TrainJob,
    buffer_batches,
    check_buffer,
    configure_run,
    hook_width,
    latest_checkpoint,
    preset_config,
    round_training_tokens,
    train,
    with_architecture,
)
from tests.conftest import TINY_HOOK

QUIET = lambda _: None  # noqa: E731


def tiny_cfg(**overrides):
    """The demo preset on the 32-wide fixture model: 12 steps of 128 tokens, a real SAELens run in about a second."""
    cfg = preset_config("demo")
    values = dict(hook_name=TINY_HOOK, context_size=32, train_batch_size_tokens=128, training_tokens=128 * 12,
                  store_batch_size_prompts=4, n_batches_in_buffer=8, n_batches_for_norm_estimate=5, n_checkpoints=3)
    values.update(overrides)
    return dataclasses.replace(cfg, sae=dataclasses.replace(cfg.sae, d_in=32, d_sae=64), **values)


def tiny_job(out: Path, **kwargs) -> TrainJob:
    return TrainJob(out=out, preset="demo", demo_stories=120, eval_batches=2, progress_every_s=0.0, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """One finished tiny run (module-scoped: several tests read its folder)."""
    out = tmp_path_factory.mktemp("run") / "sae"
    torch.manual_seed(0)
    lines: list[str] = []
    result = train(tiny_job(out), tiny_cfg(), tiny_model, log=lines.append)
    return result, lines


# --- presets and config rules ------------------------------------------------------------------


def test_unknown_preset_and_architecture_name_the_choices():
    with pytest.raises(InputError, match=r"Unknown preset 'qwen9'.*qwen3-8b, demo"):
        preset_config("qwen9")
    with pytest.raises(InputError, match=r"Unknown architecture 'transcoder'.*jumprelu"):
        preset_config("demo", "transcoder")


def test_qwen3_preset_is_the_write_ups_run(tmp_path):
    cfg = configure_run(preset_config("qwen3-8b"), d_in=4096, out=tmp_path, log=QUIET)
    assert type(cfg).__name__ == "LanguageModelSAERunnerConfig"  # SAELens's own config, nothing of ours
    assert (cfg.model_name, cfg.hook_name, cfg.dataset_path) == ("Qwen/Qwen3-8B", "blocks.28.hook_mlp_out", "HuggingFaceFW/fineweb")
    assert cfg.streaming and not cfg.is_dataset_tokenized and not cfg.prepend_bos and not cfg.dataset_trust_remote_code
    assert (cfg.training_tokens, cfg.total_training_steps, cfg.n_checkpoints, cfg.seed) == (1_228_800_000, 300_000, 5, 42)
    assert (cfg.context_size, cfg.train_batch_size_tokens) == (128, 4096) and cfg.autocast and cfg.autocast_lm
    assert cfg.sae.architecture() == "jumprelu" and (cfg.sae.d_in, cfg.sae.d_sae) == (4096, 65536)
    assert cfg.sae.jumprelu_sparsity_loss_mode == "tanh" and cfg.sae.pre_act_loss_coefficient == 3e-6
    assert cfg.sae.l0_warm_up_steps == 300_000 and cfg.lr_decay_steps == 60_000
    # The write-up's SAELens 5 buffer (20 x 32 prompts x 128 = 81,920 tokens) in SAELens 6.54's units.
    assert cfg.n_batches_in_buffer * cfg.context_size == 20 * 4096
    assert not cfg.logger.log_to_wandb
    assert cfg.output_path == str(tmp_path) and cfg.checkpoint_path.startswith(str(tmp_path / "checkpoints"))


def test_the_old_qwen3_buffer_is_refused_before_step_1():
    # SAELens's default n_batches_in_buffer (20) at context 128 holds 2,560 tokens < a 4,096-token batch:
    # the qwen3-8b preset crashed at step 1 with it (issue 11).
    cfg = dataclasses.replace(preset_config("qwen3-8b"), n_batches_in_buffer=20)
    with pytest.raises(InputError, match=r"20 x 128 = 2,560 tokens, less than one training batch \(4,096.*--n_batches_in_buffer 32"):
        check_buffer(cfg)
    assert buffer_batches(4096, 128, 1) == 32 and buffer_batches(1000, 128, 1) == 8  # rounded up
    with pytest.raises(InputError):
        buffer_batches(0, 128, 1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_preset_and_architecture_holds_a_batch_in_its_buffer(preset, architecture):
    cfg = preset_config(preset, architecture)
    check_buffer(cfg)
    assert cfg.sae.architecture() == architecture
    base = preset_config(preset)
    assert (cfg.sae.d_in, cfg.sae.d_sae, cfg.sae.normalize_activations) == (base.sae.d_in, base.sae.d_sae, base.sae.normalize_activations)
    assert cfg.logger.run_name.startswith(architecture)  # SAELens re-derived the run name


def test_saelens_trains_no_transcoders_and_we_offer_every_architecture_it_does():
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    assert set(ARCHITECTURES) == set(SAE_TRAINING_CLASS_REGISTRY)
    assert {"jumprelu", "topk", "batchtopk", "matryoshka_batchtopk", "standard", "gated"} <= set(ARCHITECTURES)
    assert not any("transcoder" in name for name in ARCHITECTURES)


def test_demo_preset_is_the_demo_builds_tuned_sae():
    from sae_lib.demo.config import DemoConfig

    demo, cfg = DemoConfig(), preset_config("demo")
    assert (cfg.sae.d_sae, cfg.sae.l0_coefficient, cfg.lr) == (demo.d_sae, demo.sae_l0_coefficient, demo.sae_lr) == (1024, 10.0, 2e-3)
    assert (cfg.training_tokens, cfg.train_batch_size_tokens, cfg.context_size, cfg.hook_name) == (
        demo.sae_training_tokens, demo.sae_batch_tokens, demo.sae_context, demo.hook_name)
    assert cfg.n_batches_in_buffer * cfg.context_size == 4 * cfg.train_batch_size_tokens


def test_configure_run_takes_d_in_from_the_model_and_rounds_tokens(tmp_path):
    lines: list[str] = []
    cfg = configure_run(dataclasses.replace(preset_config("demo"), training_tokens=5000), d_in=32, out=None, log=lines.append)
    assert cfg.sae.d_in == 32 and cfg.training_tokens == 4096 and cfg.output_path is None and cfg.checkpoint_path is None
    assert any("sae.d_in is the model's width" in line for line in lines) and any("rounded down" in line for line in lines)
    no_ckpt = configure_run(preset_config("demo"), d_in=128, out=tmp_path, checkpoints=False, log=QUIET)
    assert no_ckpt.checkpoint_path is None and no_ckpt.n_checkpoints == 0 and no_ckpt.output_path == str(tmp_path)


def test_an_sae_of_no_latents_is_refused():
    """--sae.d_sae 0 trained a 0-latent SAE, wrote it and said done (its evals' dense fraction NaN)."""
    for d_sae in (0, -4):
        cfg = tiny_cfg()
        with pytest.raises(InputError, match=f"--sae.d_sae is {d_sae}: an SAE needs at least one latent"):
            configure_run(dataclasses.replace(cfg, sae=dataclasses.replace(cfg.sae, d_sae=d_sae)), d_in=32, out=None, log=QUIET)


def test_training_tokens_are_rounded_to_whole_batches_with_a_warning():
    assert round_training_tokens(4096, 1024) == (4096, None)
    tokens, warning = round_training_tokens(5000, 1024)
    assert tokens == 4096 and "not a multiple" in warning and "4,096" in warning
    with pytest.raises(InputError, match="less than one batch"):
        round_training_tokens(100, 1024)


def test_hook_width_and_missing_hook(tiny_model):
    assert hook_width(tiny_model, TINY_HOOK) == 32
    assert hook_width(tiny_model, "blocks.0.attn.hook_z") == 4 * 8  # heads flattened
    with pytest.raises(InputError, match="no hook named 'blocks.7.hook_mlp_out'.*2 layers"):
        hook_width(tiny_model, "blocks.7.hook_mlp_out")


def test_progress_line_reports_tokens_rate_and_time_left():
    p = Progress(total_tokens=10_000, start_tokens=0, total_steps=10, log=QUIET)
    p.t0 = 100.0
    line = p.line(tokens=2_000, step=2, now=102.0)  # 2,000 tokens in 2 s -> 1,000 tok/s, 8 s left
    assert line == "step 2/10 | tokens 2,000/10,000 (20.0%) | 1,000 tok/s | 8s left"


def test_with_architecture_keeps_shape_and_takes_saelens_defaults():
    cfg = with_architecture(preset_config("qwen3-8b"), "topk")
    assert (cfg.sae.d_in, cfg.sae.d_sae, cfg.sae.k) == (4096, 65536, 100)
    assert cfg.training_tokens == QWEN3_8B_TRAINING_TOKENS


# --- a real run ---------------------------------------------------------------------------------


def test_run_writes_a_loadable_sae_with_evals_and_summary(trained):
    result, lines = trained
    out = result.sae_dir
    sae = SAE.load_from_disk(str(out))
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.metadata.hook_name) == (32, 64, TINY_HOOK)
    assert result.stats.n_training_steps == 12 and result.stats.n_training_samples == 12 * 128
    assert result.stats.resumed_from is None
    assert any("tok/s" in line and "left" in line for line in lines)
    summary = json.loads((out / constants.TRAIN_SUMMARY_FILENAME).read_text())
    assert summary["n_training_steps"] == summary["total_training_steps"] == 12
    evals = json.loads((out / constants.EVALS_FILENAME).read_text())["summary"]
    for key in ("explained_variance", "mse", "l0", "ce_loss_score", "ce_loss_without_sae", "ce_loss_with_sae",
                "ce_loss_with_ablation", "ce_ablation_gap", "ce_loss_score_meaningful", "kl_div_with_sae",
                "dead_fraction", "dense_fraction"):
        assert key in evals


def test_finished_folder_names_no_local_path_and_states_measured_metadata(trained):
    result, _ = trained
    out = result.sae_dir
    for name in (constants.SAE_CFG_FILENAME, "runner_cfg.json"):
        text = (out / name).read_text()
        assert str(out) not in text and str(out.parent) not in text, name
    meta = json.loads((out / constants.SAE_CFG_FILENAME).read_text())["metadata"]
    evals = result.evals["summary"]
    assert meta["l0"] == evals["l0"] and meta["num_dead_features"] == round(evals["dead_fraction"] * 64)
    assert meta["measured_on_tokens"] == evals["n_tokens"] > 0
    # The checkpoints keep SAELens's own files (with their paths): --resume reads them.
    assert (out / constants.CHECKPOINTS_SUBDIR).is_dir()


def test_refuses_an_out_folder_with_a_finished_sae(trained, tiny_model):
    result, _ = trained
    with pytest.raises(InputError, match="already holds a finished SAE.*--overwrite"):
        train(tiny_job(result.sae_dir), tiny_cfg(), tiny_model, log=QUIET)
    with pytest.raises(InputError, match="nothing to resume"):
        train(tiny_job(result.sae_dir, resume=True), None, tiny_model, log=QUIET)


def test_resume_with_no_checkpoint(tmp_path, tiny_model):
    with pytest.raises(InputError, match="No complete checkpoint to resume"):
        train(tiny_job(tmp_path / "empty", resume=True), None, tiny_model, log=QUIET)


def test_a_missing_out_is_refused(tiny_model):
    with pytest.raises(InputError, match="--out is required"):
        train(TrainJob(), tiny_cfg(), tiny_model, log=QUIET)


def test_an_unwritable_out_is_refused_before_the_model_loads(tmp_path):
    """--out naming a file (or a folder under one) ended in a FileExistsError/NotADirectoryError traceback
    at out.mkdir, after the model had loaded."""
    afile = tmp_path / "afile"
    afile.write_text("mine")
    loads = []

    def loader(source, device, dtype):
        loads.append(source)
        raise AssertionError("the model must not load for an unwritable --out")

    for out in (afile, afile / "sub"):
        with pytest.raises(InputError, match="Cannot write the SAE into .*Give a writable folder with --out"):
            train(tiny_job(out), tiny_cfg(), loader, log=QUIET)
    assert loads == [] and afile.read_text() == "mine"


def test_latest_checkpoint_skips_half_written_ones(tmp_path):
    run = tmp_path / "checkpoints" / "abc"
    names = [*CHECKPOINT_FILES, "runner_cfg.json"]
    for tokens, files, cfg_text in [(100, names, "{}"), (300, names, "{trunc"), (400, names[:-2], "{}"), (200, names, "{}")]:
        d = run / str(tokens)
        d.mkdir(parents=True)
        for name in files:
            (d / name).write_text(cfg_text if name == "runner_cfg.json" else "x")
    assert latest_checkpoint(tmp_path) == run / "200"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_sigint_saves_a_resumable_checkpoint_and_resume_keeps_the_step_count(tmp_path, tiny_model):
    out = tmp_path / "run"
    sent = []

    def log(line: str) -> None:
        if line.startswith("step 5/") and not sent:
            sent.append(line)
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the handler stops at the next step

    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        train(tiny_job(out, evals=False), tiny_cfg(), tiny_model, log=log)
    stats = info.value.stats
    assert stats.n_training_steps == 5 and stats.n_training_samples == 5 * 128
    assert Path(stats.interrupted_checkpoint) == latest_checkpoint(out)
    assert not (out / constants.SAE_WEIGHTS_FILENAME).exists()
    with pytest.raises(InputError, match="unfinished run.*--resume"):
        train(tiny_job(out), tiny_cfg(), tiny_model, log=QUIET)

    lines: list[str] = []
    loaded: list[str] = []

    def loader(source, device, dtype):  # a resumed run loads the model it was started with
        loaded.append(source)
        return tiny_model

    result = train(tiny_job(out, resume=True, evals=False), None, loader, log=lines.append)
    assert loaded == ["latent-lab/demo"]
    assert (result.stats.resumed_at_step, result.stats.resumed_at_tokens) == (5, 5 * 128)
    assert result.stats.n_training_steps == 12 and result.stats.tokens_this_run == 7 * 128
    assert any(line.startswith("resuming from") for line in lines)
    assert SAE.load_from_disk(str(out)).cfg.d_sae == 64


def test_training_and_its_evals_read_activations_through_the_engine(tmp_path, tiny_hf_qwen3_dir, monkeypatch):
    """A loaded Hugging Face model trains from the engine's forward (its MLP runs), never from
    HookedTransformer.run_with_cache; the trained SAE still names the TransformerLens hook."""
    from transformer_lens import HookedTransformer

    from sae_lib.engine import engine_for
    from sae_lib.model import load_model

    model = load_model(str(tiny_hf_qwen3_dir), device="cpu", dtype="float32")
    engine = engine_for(model)
    assert engine is not None
    engine_calls, tl_calls = [], []
    handle = engine.hf.model.layers[1].mlp.register_forward_hook(lambda *a: engine_calls.append(1))
    real = HookedTransformer.run_with_cache
    monkeypatch.setattr(HookedTransformer, "run_with_cache",
                        lambda self, *a, **k: tl_calls.append(1) or real(self, *a, **k))
    cfg = tiny_cfg()
    cfg = dataclasses.replace(cfg, sae=dataclasses.replace(cfg.sae, d_in=64, d_sae=64))
    try:
        result = train(tiny_job(tmp_path / "sae"), cfg, model, log=QUIET)
    finally:
        handle.remove()
    # norm estimate + buffer fills + evals' sparsity pass: many engine forwards, no TransformerLens cache
    assert len(engine_calls) >= 5 and tl_calls == []
    sae = SAE.load_from_disk(str(result.sae_dir))
    assert sae.cfg.metadata.hook_name == TINY_HOOK
    assert result.evals["summary"]["n_tokens"] > 0


def test_fuse_adam_gives_the_foreach_update_and_survives_a_resume():
    from sae_lib.training.runner import fuse_adam

    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]

    def three_steps(fused: bool):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = torch.optim.Adam(params, lr=1e-2, betas=(0.9, 0.999))
        if fused:
            # The CPU has a fused Adam too, so the switch is checked here; the runner switches on CUDA only.
            assert not fuse_adam(opt)
            assert fuse_adam(opt, device_types=("cpu",))
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        return params, opt

    ref, _ = three_steps(fused=False)
    got, opt = three_steps(fused=True)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(g["fused"] and not g["foreach"] for g in opt.param_groups)
    # A checkpoint of the fused optimizer resumes fused.
    params = [torch.nn.Parameter(p.detach().clone()) for p in got]
    resumed = torch.optim.Adam(params, lr=1e-2)
    resumed.load_state_dict(opt.state_dict())
    assert resumed.param_groups[0]["fused"]
    assert not fuse_adam(torch.optim.SGD(params, lr=0.1), device_types=("cpu",))  # only Adam is switched
    # A foreach checkpoint resumed fused: its step counters move beside the parameters, in float32.
    _, foreach_opt = three_steps(fused=False)
    params = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    switched = torch.optim.Adam(params, lr=1e-2)
    switched.load_state_dict(foreach_opt.state_dict())
    assert fuse_adam(switched, device_types=("cpu",))
    steps = [switched.state[p]["step"] for p in params]
    assert all(s.dtype == torch.float32 and s.device == p.device and float(s) == 3 for s, p in zip(steps, params))


@pytest.mark.parametrize("flag, what", [("compile_sae", "the SAE's training step"), ("compile_llm", "the model's forward")])
def test_a_failing_compile_falls_back_to_eager_with_a_notice(tmp_path, tiny_model, monkeypatch, flag, what):
    # compile_sae: SAELens's compile of the SAE's training step. compile_llm: tiny_model is TransformerLens
    # alone (no engine), so it is SAELens's own compile of run_with_cache. Where the compiler fails, the
    # run goes on eagerly and says so.
    from torch._inductor.exc import InductorError

    compiled_calls = []

    def broken_compile(fn, **kwargs):  # what torch.compile gives where inductor cannot build its kernels
        def run(*args, **kw):
            compiled_calls.append(1)
            raise InductorError(RuntimeError("CppCompileError: C++ compile error (no compiler found)"), None)
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    lines: list[str] = []
    torch.manual_seed(0)
    result = train(tiny_job(tmp_path / "run"), tiny_cfg(**{flag: True}), tiny_model, log=lines.append)
    assert result.stats.n_training_steps == 12  # the run finished, eagerly
    assert compiled_calls == [1]  # tried once, then never again
    notice = [line for line in lines if f"compiling {what} failed" in line]
    assert len(notice) == 1 and "InductorError" in notice[0] and f"--{flag} false" in notice[0], lines
    assert "run_with_cache" not in vars(tiny_model)  # the shared fixture model is left as it was
    # An error that is not the compiler's still ends the run.
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: lambda *a, **k: (_ for _ in ()).throw(ValueError("bad batch")))
    with pytest.raises(ValueError, match="bad batch"):
        train(tiny_job(tmp_path / "again"), tiny_cfg(**{flag: True}), tiny_model, log=QUIET)


@pytest.mark.slow  # compiles with inductor on the CPU
def test_compile_llm_compiles_the_engines_forward_to_the_hook(tmp_path, tiny_hf_qwen3_dir):
    # SAELens's compile_llm compiles run_with_cache; compiled, the engine's forward (which stops at the
    # hook by raising) failed on the first batch with an IndexError. The engine's own compilable forward
    # to the hook serves it instead, and trains the SAE the eager run trains (to float32 rounding).
    from sae_lib.engine import engine_for
    from sae_lib.model import load_model

    model = load_model(str(tiny_hf_qwen3_dir), device="cpu", dtype="float32")
    runs = {}
    for compile_llm in (False, True):
        cfg = tiny_cfg(compile_llm=compile_llm)
        cfg = dataclasses.replace(cfg, sae=dataclasses.replace(cfg.sae, d_in=64, d_sae=64))
        lines: list[str] = []
        torch.manual_seed(0)
        result = train(tiny_job(tmp_path / f"sae{int(compile_llm)}"), cfg, model, log=lines.append)
        assert result.stats.n_training_steps == 12
        runs[compile_llm] = (SAE.load_from_disk(str(result.sae_dir)), lines)
    assert sum("--compile_llm: activations come from a torch.compile'd copy" in line for line in runs[True][1]) == 1
    assert not any("--compile_llm" in line for line in runs[False][1])
    prefix = engine_for(model)._prefixes.get(TINY_HOOK)
    assert prefix is not None and prefix is not False  # compiled, and it held
    torch.testing.assert_close(runs[True][0].W_enc, runs[False][0].W_enc, atol=1e-3, rtol=1e-3)


def test_failing_evals_still_finish_the_trained_folder(tmp_path, tiny_model, monkeypatch):
    """Evals run after the whole run: when they fail, the SAE on disk is still finished (no local path
    in its cfg, loadable) and the log says why, instead of a traceback that leaves SAELens's raw files."""
    import sae_lib.training.job as job

    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(job, "evaluate_sae", broken)
    lines: list[str] = []
    out = tmp_path / "sae"
    result = train(tiny_job(out), tiny_cfg(), tiny_model, log=lines.append)
    assert result.evals is None and not (out / constants.EVALS_FILENAME).exists()
    assert any("evals failed (ZeroDivisionError: float division by zero)" in line and "complete" in line for line in lines)
    for name in (constants.SAE_CFG_FILENAME, "runner_cfg.json"):
        assert str(tmp_path) not in (out / name).read_text(), name
    assert SAE.load_from_disk(str(out)).cfg.d_sae == 64


def test_overwrite_removes_the_old_saes_index_and_explanations(tmp_path, tiny_model):
    """A latent index and explanations built next to the old SAE describe weights --overwrite replaces:
    left there, push_to_hub.py would publish them beside the new SAE."""
    out = tmp_path / "sae"
    train(tiny_job(out, evals=False), tiny_cfg(), tiny_model, log=QUIET)
    old_index = [constants.INDEX_META_FILENAME, constants.INDEX_STATS_FILENAME, constants.INDEX_CONTEXTS_FILENAME,
                 constants.INDEX_COUNTS_FILENAME, constants.EXPLANATIONS_FILENAME]
    for name in old_index:
        (out / name).write_bytes(b"built for the old weights")
    (out / "notes.txt").write_text("mine")  # not the run's: kept
    train(tiny_job(out, evals=False, overwrite=True), tiny_cfg(), tiny_model, log=QUIET)
    assert [name for name in old_index if (out / name).exists()] == []
    assert (out / "notes.txt").read_text() == "mine" and SAE.load_from_disk(str(out)).cfg.d_sae == 64


def _interrupt_at(step: int, times: int = 1):
    """A log callback sending SIGINT ``times`` times when the progress line of ``step`` appears."""
    sent = []

    def log(line: str) -> None:
        if line.startswith(f"step {step}/") and not sent:
            sent.append(line)
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    return log


def test_a_checkpoint_on_a_sparsity_windows_first_step_resumes(tmp_path, tiny_model):
    """Stopped at a window boundary, the checkpoint holds a just-reset window (no samples yet): the
    resume must go on, not build SAELens's histogram of 0/0 (NaN) and die on every --resume."""
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(tiny_job(out, evals=False), tiny_cfg(feature_sampling_window=4, n_checkpoints=0), tiny_model,
              log=_interrupt_at(4))
    assert latest_checkpoint(out).name == str(4 * 128)
    result = train(tiny_job(out, resume=True, evals=False), None, tiny_model, log=QUIET)
    assert result.stats.resumed_at_step == 4 and result.stats.n_training_steps == 12


def test_a_moved_run_folder_resumes_and_checkpoints_in_its_new_place(tmp_path, tiny_model):
    """A run moved after a stop (a preempted machine's scratch disk to persistent storage): its next
    checkpoints go into the folder it now sits in, where the next --resume looks."""
    scratch, kept = tmp_path / "scratch" / "run", tmp_path / "persistent" / "run"
    with pytest.raises(TrainingInterrupted):
        train(tiny_job(scratch, evals=False), tiny_cfg(), tiny_model, log=_interrupt_at(2))
    kept.parent.mkdir()
    shutil.move(scratch, kept)
    train(tiny_job(kept, resume=True, evals=False), None, tiny_model, log=QUIET)
    assert not scratch.exists()  # nothing written back to the old place
    saved = sorted(int(p.name) for p in (kept / constants.CHECKPOINTS_SUBDIR).glob("*/*"))
    assert saved[0] == 2 * 128 and len(saved) > 1  # the stop's, then the resumed run's scheduled ones


def test_a_stop_on_a_scheduled_checkpoints_step_keeps_that_checkpoint(tmp_path, tiny_model):
    """The stop lands on the step a scheduled checkpoint was just saved at: that complete checkpoint is
    the stop's too (rewriting it in place would risk the only copy)."""
    out = tmp_path / "run"
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        _stop(line)

    _stop = _interrupt_at(4)  # tiny_cfg's first scheduled checkpoint is saved during step 4
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_job(out, evals=False), tiny_cfg(), tiny_model, log=log)
    assert any(line.startswith("checkpoint already saved at this step") for line in lines)
    assert Path(info.value.stats.interrupted_checkpoint) == latest_checkpoint(out)


def test_a_second_signal_stops_without_a_checkpoint(tmp_path, tiny_model):
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="no checkpoint was saved"):
        train(tiny_job(out, evals=False), tiny_cfg(n_checkpoints=0), tiny_model, log=_interrupt_at(3, times=2))
    assert latest_checkpoint(out) is None


def test_a_final_checkpoint_is_never_resumed_from(tmp_path):
    """SAELens's final_N checkpoint holds weights with the activation scaling folded in: resuming from
    it would fold it a second time. The latest scheduled checkpoint is resumed instead."""
    from sae_lib.training import CHECKPOINT_FILES
    from sae_lib.training.checkpoints import checkpoint_tokens

    for name in ("512", "final_1536"):
        folder = tmp_path / constants.CHECKPOINTS_SUBDIR / "run1" / name
        folder.mkdir(parents=True)
        for file in (*CHECKPOINT_FILES, "runner_cfg.json"):
            (folder / file).write_text("{}")
    assert checkpoint_tokens(folder) is None
    assert latest_checkpoint(tmp_path).name == "512"


def test_keep_checkpoints_keeps_the_latest_complete_ones_and_resume_still_works(tmp_path, tiny_model):
    """--keep_checkpoints 1: each checkpoint replaces the one before once it is complete (a qwen3-8b run
    wrote five of 6.4 GB); a stop's checkpoint too, and --resume continues from it."""
    out = tmp_path / "run"
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        stop(line)

    stop = _interrupt_at(10)  # after tiny_cfg's checkpoints at 4 and 8 steps (n_checkpoints=3 over 12 steps)
    with pytest.raises(TrainingInterrupted):
        train(tiny_job(out, evals=False, keep_checkpoints=1), tiny_cfg(), tiny_model, log=log)
    left = sorted(p.name for p in (out / constants.CHECKPOINTS_SUBDIR).glob("*/*"))
    assert left == [str(10 * 128)]  # the stop's; the scheduled ones at 4 and 8 steps went once superseded
    assert sum(line.startswith("removed the older checkpoint") for line in lines) == 2
    result = train(tiny_job(out, resume=True, evals=False, keep_checkpoints=1), None, tiny_model, log=QUIET)
    assert result.stats.resumed_at_step == 10 and result.stats.n_training_steps == 12


def test_keep_checkpoints_leaves_half_written_and_final_folders(tmp_path):
    from sae_lib.training import CHECKPOINT_FILES
    from sae_lib.training.checkpoints import prune_checkpoints

    run = tmp_path / "run1"
    for name, complete in (("512", True), ("1024", True), ("1536", True), ("2048", False), ("final_2560", True)):
        (run / name).mkdir(parents=True)
        for file in (*CHECKPOINT_FILES, *(["runner_cfg.json"] if complete else [])):
            (run / name / file).write_text("{}")
    gone = prune_checkpoints(run, keep=2)
    assert sorted(p.name for p in gone) == ["512"]
    assert sorted(p.name for p in run.iterdir()) == ["1024", "1536", "2048", "final_2560"]
    assert prune_checkpoints(run, keep=0) == [] and len(list(run.iterdir())) == 4  # 0: keep all


def test_a_run_whose_checkpoints_will_not_fit_on_the_disk_says_so_at_the_start(tmp_path, tiny_model, monkeypatch):
    import shutil as shutil_mod

    from sae_lib.training import runner as runner_mod

    weights = (2 * 32 * 64 + 64 + 64 + 32) * 4  # the tiny SAE's float32 parameters: W_enc, W_dec, b_enc, threshold, b_dec
    need = 3 * 3 * weights + weights  # three checkpoints of weights + Adam's two moments, then the SAE
    usage = shutil_mod.disk_usage(tmp_path)
    lines: list[str] = []
    monkeypatch.setattr(runner_mod.shutil, "disk_usage", lambda path: usage._replace(free=need - 1))
    train(tiny_job(tmp_path / "run", evals=False), tiny_cfg(), tiny_model, log=lines.append)
    warning = [line for line in lines if line.startswith("WARNING: this run will write")]
    assert len(warning) == 1 and "3 checkpoint(s)" in warning[0] and "--keep_checkpoints 1" in warning[0]
    lines.clear()
    monkeypatch.setattr(runner_mod.shutil, "disk_usage", lambda path: usage._replace(free=need))
    train(tiny_job(tmp_path / "run2", evals=False), tiny_cfg(), tiny_model, log=lines.append)
    assert not any(line.startswith("WARNING: this run will write") for line in lines)


def test_a_negative_keep_checkpoints_is_refused(tmp_path, tiny_model):
    with pytest.raises(InputError, match="--keep_checkpoints must be 0"):
        train(tiny_job(tmp_path / "run", keep_checkpoints=-1), tiny_cfg(), tiny_model, log=QUIET)
