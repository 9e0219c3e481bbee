"""scripts/train_sae.py: --help and bad input in process; kill -9 then --resume in subprocesses."""

import importlib.util
import json
import os
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
from tests.conftest import TINY_HOOK

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_sae.py"
STEPS = 200
spec = importlib.util.spec_from_file_location("train_sae", SCRIPT)
train_sae = importlib.util.module_from_spec(spec)
sys.modules["train_sae"] = train_sae
spec.loader.exec_module(train_sae)
TINY_ARGS = [
    "--preset", "demo", "--hook_name", TINY_HOOK, "--context_size", "32", "--train_batch_size_tokens", "128",
    "--training_tokens", str(128 * STEPS), "--store_batch_size_prompts", "4", "--n_batches_in_buffer", "8",
    "--n_batches_for_norm_estimate", "5", "--n_checkpoints", "10", "--sae.d_sae", "64",
    "--demo-stories", "120", "--eval-batches", "1", "--progress-every", "0.5",
]


def run(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_help_shows_the_write_ups_run(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_sae.main(["--preset", "qwen3-8b", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped
    for fact in ("'Qwen/Qwen3-8B'", "'blocks.28.hook_mlp_out'", "'HuggingFaceFW/fineweb'", "(default: 1228800000)",
                 "--seed V The seed to use. (default: 42)", "(default: 65536)", "'tanh'", "--resume", "--wandb-project",
                 "--prepend_bos V", "(default: False)", "--n_checkpoints V"):
        assert fact in out, fact


def test_unknown_preset_and_missing_out(capsys):
    assert train_sae.main(["--preset", "gpt5", "--out", "x"]) == 2
    assert "Unknown preset 'gpt5'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        train_sae.main(["--preset", "demo"])
    assert exit_info.value.code == 2 and "--out is required" in capsys.readouterr().err


def test_a_bad_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_sae.main(["--out", "x", "--lr", "fast"])
    assert exit_info.value.code == 2 and "'fast': expected a number" in capsys.readouterr().err


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory, tiny_tokenizer):
    """A 2-layer, 32-wide Qwen3ForCausalLM folder with the fixture tokenizer, as the loader reads it."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = tmp_path_factory.mktemp("tiny_qwen3")
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=False)
    Qwen3ForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_kill_then_resume_continues_from_the_checkpoint(tmp_path, hf_model_dir):
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--model", str(hf_model_dir), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
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

    # Bad input on the finished folder: refused (before any model is loaded) without --overwrite.
    assert train_sae.main(args) == 2
