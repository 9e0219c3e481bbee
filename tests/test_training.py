"""sae_lib.training: presets, flags, bad input, a real (tiny) SAELens run, interrupt + resume."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from sae_lib import constants, training
from sae_lib.errors import InputError
from sae_lib.training import (
    PRESETS,
    Progress,
    TrainingInterrupted,
    TrainJob,
    build_runner_config,
    config_fields,
    get_preset,
    hook_width,
    latest_checkpoint,
    parse_field_value,
    resolve_values,
    round_training_tokens,
    train,
)
from tests.conftest import TINY_HOOK

TINY_OVERRIDES = {
    "hook_name": TINY_HOOK,
    "context_size": 32,
    "train_batch_size_tokens": 128,
    "training_tokens": 128 * 12,
    "store_batch_size_prompts": 4,
    "n_batches_in_buffer": 8,
    "n_batches_for_norm_estimate": 5,
    "n_checkpoints": 3,
    "sae.d_sae": 64,
}
"""12 steps of 128 tokens on the 32-wide fixture model: a real SAELens run in about a second."""


@pytest.fixture
def use_tiny_model(monkeypatch, tiny_model):
    # Model loading is sae_lib.model's job (tested there); here every source is the fixture model.
    monkeypatch.setattr(training, "_load_model", lambda source, device, dtype: tiny_model)


def tiny_job(out: Path, **kwargs) -> TrainJob:
    return TrainJob(preset="demo", out=out, overrides=dict(TINY_OVERRIDES), model="tiny", demo_stories=120,
                    eval_batches=2, progress_every_s=0.0, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """One finished tiny run (module-scoped: several tests read its folder)."""
    out = tmp_path_factory.mktemp("run") / "sae"
    mp = pytest.MonkeyPatch()
    mp.setattr(training, "_load_model", lambda source, device, dtype: tiny_model)
    torch.manual_seed(0)
    lines: list[str] = []
    try:
        result = train(tiny_job(out), log=lines.append)
    finally:
        mp.undo()
    return result, lines


# --- presets and flags -------------------------------------------------------------------------


def test_unknown_preset_names_the_choices():
    with pytest.raises(InputError, match=r"Unknown preset 'qwen9'.*demo, qwen3-8b|qwen3-8b, demo"):
        get_preset("qwen9")


def test_qwen3_preset_is_the_write_ups_run(tmp_path):
    values = resolve_values(PRESETS["qwen3-8b"], {})
    cfg = build_runner_config(values, d_in=4096, out=tmp_path, log=lambda _: None)
    assert (cfg.model_name, cfg.hook_name, cfg.dataset_path) == ("Qwen/Qwen3-8B", "blocks.28.hook_mlp_out", "HuggingFaceFW/fineweb")
    assert cfg.streaming and not cfg.is_dataset_tokenized and not cfg.prepend_bos
    assert (cfg.training_tokens, cfg.total_training_steps, cfg.n_checkpoints, cfg.seed) == (1_228_800_000, 300_000, 5, 42)
    assert cfg.autocast and cfg.autocast_lm
    assert (cfg.sae.d_in, cfg.sae.d_sae) == (4096, 65536)
    assert cfg.sae.jumprelu_sparsity_loss_mode == "tanh" and cfg.sae.pre_act_loss_coefficient == 3e-6
    assert cfg.sae.l0_warm_up_steps == 300_000 and cfg.lr_decay_steps == 60_000
    assert not cfg.logger.log_to_wandb
    assert cfg.output_path == str(tmp_path) and cfg.checkpoint_path.startswith(str(tmp_path / "checkpoints"))
    with pytest.raises(InputError, match="sae.d_in is 4096 but .* width 32"):
        build_runner_config(values, d_in=32, out=tmp_path)
    assert build_runner_config(values, d_in=4096, out=None, wandb_project="p").logger.wandb_project == "p"


def test_every_runner_and_sae_field_is_a_flag_with_the_preset_default():
    import dataclasses

    from sae_lens import JumpReLUTrainingSAEConfig, LanguageModelSAERunnerConfig

    fields = {f.flag: f for f in config_fields(PRESETS["qwen3-8b"])}
    runner_names = {f.name for f in dataclasses.fields(LanguageModelSAERunnerConfig)} - training._SKIP_RUNNER
    sae_names = {f.name for f in dataclasses.fields(JumpReLUTrainingSAEConfig)} - training._SKIP_SAE
    assert runner_names <= fields.keys() and {f"sae.{n}" for n in sae_names} <= fields.keys()
    assert fields["hook_name"].default == "blocks.28.hook_mlp_out"
    assert fields["lr"].default == 3e-4 and "learning rate" in fields["lr"].help  # SAELens's default and docs
    assert fields["sae.l0_coefficient"].default == 5.0
    with pytest.raises(InputError, match="Unknown setting 'nope'"):
        resolve_values(PRESETS["demo"], {"nope": 1})


@pytest.mark.parametrize(
    ("flag", "text", "expected"),
    [("lr", "1e-4", 1e-4), ("training_tokens", "1_000", 1000), ("autocast", "false", False),
     ("llm_device", "none", None), ("llm_device", "cuda:0", "cuda:0"), ("prefetch_llm_batches", "true", True),
     ("prefetch_llm_batches", "2", 2), ("sequence_separator_token", "eos", "eos"), ("sequence_separator_token", "7", 7),
     ("seqpos_slice", "[1, null]", (1, None)), ("model_kwargs", '{"a": 1}', {"a": 1}),
     ("sae.jumprelu_sparsity_loss_mode", "tanh", "tanh")],
)
def test_parse_field_value(flag, text, expected):
    f = {f.flag: f for f in config_fields(PRESETS["demo"])}[flag]
    assert parse_field_value(f.type, text) == expected


@pytest.mark.parametrize(("flag", "text"), [("lr", "fast"), ("autocast", "maybe"), ("sae.jumprelu_sparsity_loss_mode", "l1")])
def test_parse_field_value_rejects_bad_text(flag, text):
    f = {f.flag: f for f in config_fields(PRESETS["demo"])}[flag]
    with pytest.raises(ValueError):
        parse_field_value(f.type, text)


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
    p = Progress(total_tokens=10_000, start_tokens=0, total_steps=10, log=lambda _: None)
    p.t0 = 100.0
    line = p.line(tokens=2_000, step=2, now=102.0)  # 2,000 tokens in 2 s -> 1,000 tok/s, 8 s left
    assert line == "step 2/10 | tokens 2,000/10,000 (20.0%) | 1,000 tok/s | 8s left"


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
    for key in ("explained_variance", "mse", "l0", "ce_loss_score", "kl_div_with_sae", "dead_fraction", "dense_fraction"):
        assert key in evals
    assert 0 <= evals["dead_fraction"] <= 1 and 0 <= evals["dense_fraction"] <= 1


def test_refuses_an_out_folder_with_a_finished_sae(trained, use_tiny_model):
    result, _ = trained
    with pytest.raises(InputError, match="already holds a finished SAE.*--overwrite"):
        train(tiny_job(result.sae_dir), log=lambda _: None)
    with pytest.raises(InputError, match="nothing to resume"):
        train(tiny_job(result.sae_dir, resume=True), log=lambda _: None)


def test_resume_with_no_checkpoint(tmp_path, use_tiny_model):
    with pytest.raises(InputError, match="No complete checkpoint to resume"):
        train(tiny_job(tmp_path / "empty", resume=True), log=lambda _: None)


def test_latest_checkpoint_skips_half_written_ones(tmp_path):
    run = tmp_path / "checkpoints" / "abc"
    names = [*training._CHECKPOINT_FILES, "runner_cfg.json"]
    for tokens, files, cfg_text in [(100, names, "{}"), (300, names, "{trunc"), (400, names[:-2], "{}"), (200, names, "{}")]:
        d = run / str(tokens)
        d.mkdir(parents=True)
        for name in files:
            (d / name).write_text(cfg_text if name == "runner_cfg.json" else "x")
    assert latest_checkpoint(tmp_path) == run / "200"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_sigint_saves_a_resumable_checkpoint_and_resume_keeps_the_step_count(tmp_path, use_tiny_model):
    out = tmp_path / "run"
    sent = []

    def log(line: str) -> None:
        if line.startswith("step 5/") and not sent:
            sent.append(line)
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the handler stops at the next step

    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        train(tiny_job(out, evals=False), log=log)
    stats = info.value.stats
    assert stats.n_training_steps == 5 and stats.n_training_samples == 5 * 128
    assert Path(stats.interrupted_checkpoint) == latest_checkpoint(out)
    assert not (out / constants.SAE_WEIGHTS_FILENAME).exists()
    with pytest.raises(InputError, match="unfinished run.*--resume"):
        train(tiny_job(out), log=lambda _: None)

    lines: list[str] = []
    result = train(tiny_job(out, resume=True, evals=False), log=lines.append)
    assert (result.stats.resumed_at_step, result.stats.resumed_at_tokens) == (5, 5 * 128)
    assert result.stats.n_training_steps == 12 and result.stats.tokens_this_run == 7 * 128
    assert any(line.startswith("resuming from") for line in lines)
    # the interrupt-time checkpoint is past the first scheduled one: no re-saving of passed thresholds
    assert SAE.load_from_disk(str(out)).cfg.d_sae == 64
