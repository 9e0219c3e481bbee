"""scripts/train_sae.py: --help and bad input in process; kill -9 then --resume in subprocesses."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from sae_lib import constants
from sae_lib.training import latest_checkpoint
from tests.conftest import TINY_HOOK, TINY_TEXTS
from tests.helpers import load_script, script_env

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_sae.py"
STEPS = 200
train_sae = load_script("train_sae")
TINY_ARGS = [
    "--preset", "demo", "--hook_name", TINY_HOOK, "--context_size", "32", "--train_batch_size_tokens", "128",
    "--training_tokens", str(128 * STEPS), "--store_batch_size_prompts", "4", "--n_batches_in_buffer", "8",
    "--n_batches_for_norm_estimate", "5", "--n_checkpoints", "10", "--sae.d_sae", "64",
    "--demo-stories", "120", "--eval-batches", "1", "--progress-every-s", "0.5",
]


def run(args, **kw):
    env = script_env(ROOT, TQDM_DISABLE="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_sae.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # help text is wrapped


def test_help_shows_the_write_ups_run_with_saelens_help_texts(capsys):
    out = _help(capsys, "--preset", "qwen3-8b")
    for fact in ("(default: Qwen/Qwen3-8B)", "(default: blocks.28.hook_mlp_out)", "(default: HuggingFaceFW/fineweb)",
                 "The number of training tokens. (default: 1228800000)", "--seed int The seed to use. (default: 42)",
                 "(default: 65536)", "(default: tanh)", "The learning rate. (default: 0.0003)",
                 "(default: 640)", "--resume bool", "--logger.wandb", "--sae.l0_coefficient", "(default: 5.0)",
                 "Whether to prepend the beginning of sequence token", "--n_checkpoints int", "(default: 5)",
                 "jumprelu", "matryoshka_batchtopk", "no transcoders"):
        assert fact in out, fact


def test_architecture_flag_swaps_the_sae_config(capsys):
    out = _help(capsys, "--preset", "qwen3-8b", "--architecture", "topk")
    assert "TopKTrainingSAEConfig" in out and "--sae.k int" in out and "(default: 100)" in out
    assert "--sae.l0_coefficient" not in out and "(default: 65536)" in out


def test_flags_reach_saelens_config_and_devices_follow_device():
    job, cfg = train_sae.parse_args(["--preset", "qwen3-8b", "--out", "x", "--lr", "1e-4", "--sae.l0_coefficient", "2",
                                     "--device", "cpu", "--logger.wandb_project", "p", "--architecture", "jumprelu"])
    assert type(cfg).__name__ == "LanguageModelSAERunnerConfig" and job.out == Path("x") and job.preset == "qwen3-8b"
    assert (cfg.lr, cfg.sae.l0_coefficient, cfg.logger.wandb_project) == (1e-4, 2.0, "p")
    assert cfg.device == cfg.llm_device == cfg.act_store_device == "cpu"  # not the preset's cuda
    assert "LR-0.0001-" in cfg.logger.run_name  # re-derived from the overridden lr
    _, apart = train_sae.parse_args(["--preset", "qwen3-8b", "--out", "x", "--device", "cuda:1", "--llm_device", "cuda:0"])
    assert (apart.device, apart.llm_device, apart.act_store_device) == ("cuda:1", "cuda:0", "cuda:1")
    with pytest.raises(SystemExit):  # an abbreviation would be parsed, then overwritten by --device
        train_sae.parse_args(["--preset", "qwen3-8b", "--out", "x", "--device", "cuda:1", "--llm_dev", "cuda:0"])


@pytest.mark.slow
def test_unknown_preset_architecture_and_missing_out(capsys):
    assert train_sae.main(["--preset", "gpt5", "--out", "x"]) == 2
    assert "Unknown preset 'gpt5'" in capsys.readouterr().err
    assert train_sae.main(["--architecture", "transcoder", "--out", "x"]) == 2
    assert "Unknown architecture 'transcoder'" in capsys.readouterr().err
    assert train_sae.main(["--preset", "demo"]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert train_sae.main(["--out", "x", "--output_path", "/elsewhere"]) == 2
    assert "set by --out" in capsys.readouterr().err


def test_a_bad_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_sae.main(["--out", "x", "--lr", "fast"])
    assert exit_info.value.code == 2 and "invalid float value: 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--train_batch_size_tokens", "0", "--train_batch_size_tokens, .* must be positive"),
    ("--logger.wandb_log_frequency", "0", "--logger.wandb_log_frequency must be positive"),
    ("--context_size", "-1", "SAELens refuses these training settings: The provided context_size is -1"),
])
def test_settings_saelens_refuses_are_a_message_not_a_traceback(capsys, flag, value, message):
    """SAELens's config checks (or divides by) these as simple_parsing builds it: a ZeroDivisionError or
    ValueError traceback before."""
    assert train_sae.main(["--out", "x", flag, value]) == 2
    err = capsys.readouterr().err
    assert re.search(f"^error: .*{message}", err) and "Traceback" not in err


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory, tiny_tokenizer):
    """A 2-layer, 32-wide Qwen3ForCausalLM folder with the fixture tokenizer, as the loader reads it."""
    from transformers import Qwen3ForCausalLM

    from sae_lib.demo.lm import qwen3_config

    folder = tmp_path_factory.mktemp("tiny_qwen3")
    torch.manual_seed(0)
    cfg = qwen3_config(tiny_tokenizer, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=128)
    Qwen3ForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_kill_then_resume_continues_from_the_checkpoint(tmp_path, hf_model_dir):
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--model", str(hf_model_dir), "--out", str(out)]
    env = script_env(ROOT, TQDM_DISABLE="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while latest_checkpoint(out) is None:  # complete checkpoints only (runner_cfg.json written last)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # a hard kill: no chance to save anything more
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / constants.SAE_WEIGHTS_FILENAME).exists()
    ckpt = latest_checkpoint(out)
    ckpt_tokens = int(ckpt.name)
    assert 0 < ckpt_tokens < 128 * STEPS and ckpt_tokens % 128 == 0

    again = run([*args, "--resume"])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming from {ckpt} at step {ckpt_tokens // 128:,}" in again.stdout
    summary = json.loads((out / constants.TRAIN_SUMMARY_FILENAME).read_text())
    assert summary["resumed_at_step"] == ckpt_tokens // 128 and summary["resumed_at_tokens"] == ckpt_tokens
    assert summary["n_training_steps"] == STEPS and summary["n_training_samples"] == 128 * STEPS
    assert summary["tokens_this_run"] == 128 * STEPS - ckpt_tokens  # nothing repeated, nothing skipped
    assert SAE.load_from_disk(str(out)).cfg.d_sae == 64
    assert (out / constants.EVALS_FILENAME).is_file() and "explained variance" in again.stdout
    # A model given as a local folder is recorded by its name, never its path.
    for name in (constants.SAE_CFG_FILENAME, "runner_cfg.json"):
        text = (out / name).read_text()
        assert str(hf_model_dir) not in text and str(tmp_path) not in text, name
    assert json.loads((out / constants.SAE_CFG_FILENAME).read_text())["metadata"]["model_name"] == hf_model_dir.name

    # Bad input on the finished folder: refused (before any model is loaded) without --overwrite.
    assert train_sae.main(args) == 2


@pytest.mark.slow
def test_qwen3_8b_preset_runs_through_the_script_on_a_local_text_dataset(tmp_path, hf_model_dir):
    # The flagship preset as a user runs it: raw text streamed and tokenized by SAELens (the preset's
    # fineweb settings), its compiled SAE step and forward to the hook, 4,096-token batches and 640-row buffer, the evals; only
    # the model (a local folder, hook at the same relative depth), the SAE's width (16x) and the run's
    # length differ. --help alone would not show that the preset trains.
    data = tmp_path / "text"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TINY_TEXTS * 5))
    out = tmp_path / "run"
    proc = run(["--preset", "qwen3-8b", "--model", str(hf_model_dir), "--dataset_path", str(data), "--device", "cpu",
                "--hook_name", "blocks.1.hook_mlp_out", "--sae.d_sae", "512", "--training_tokens", str(2 * 4096),
                "--n_batches_for_norm_estimate", "4", "--eval-batches", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "step 2/2" in proc.stdout and "explained variance" in proc.stdout
    sae = SAE.load_from_disk(str(out))
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.metadata.hook_name) == (32, 512, "blocks.1.hook_mlp_out")
    runner_cfg = json.loads((out / "runner_cfg.json").read_text())
    assert runner_cfg["compile_sae"] and runner_cfg["compile_llm"] and runner_cfg["train_batch_size_tokens"] == 4096
    assert "--compile_llm: activations come from a torch.compile'd copy" in proc.stdout  # the engine's forward
    assert runner_cfg["n_batches_in_buffer"] == 640 and runner_cfg["streaming"]
    for name in (constants.SAE_CFG_FILENAME, "runner_cfg.json"):  # published files name no local path
        assert str(tmp_path) not in (out / name).read_text(), name
