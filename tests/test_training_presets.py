"""Every preset's exact runner config trains (only the model shrunk), every SAELens architecture trains
and loads, and SAELens's every-2,000-steps ``wandb.Histogram`` cannot kill a run with logging off."""

import dataclasses

import pytest
import torch
import wandb
from sae_lens import SAE

from sae_lib.demo.config import DemoConfig
from sae_lib.demo.data import as_dataset
from sae_lib.demo.lm import qwen3_config
from sae_lib.packing import pack_texts
from sae_lib.training import (
    ARCHITECTURES,
    PRESETS,
    TrainingInterrupted,
    configure_run,
    latest_checkpoint,
    preset_config,
    run_training,
)
from tests.conftest import TINY_TEXTS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FULL_LAYERS = {"qwen3-8b": 36, "demo": DemoConfig().lm.num_hidden_layers}
"""Layers of each preset's real model, to put the hook at the same depth in the shrunk one."""
QUIET = lambda _: None  # noqa: E731


def _hf_folder(tmp_path_factory, tokenizer, **shape):
    from transformers import Qwen3ForCausalLM

    folder = tmp_path_factory.mktemp("qwen3")
    torch.manual_seed(0)
    Qwen3ForCausalLM(qwen3_config(tokenizer, **shape)).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def shrunk_qwen3(tmp_path_factory, tiny_tokenizer):
    """A 4-layer, 32-wide random Qwen3ForCausalLM, loaded through the app's loader (as train_sae.py loads Qwen3-8B)."""
    from sae_lib.model import load_model

    folder = _hf_folder(tmp_path_factory, tiny_tokenizer, hidden_size=32, num_hidden_layers=4, intermediate_size=64,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    return load_model(str(folder), device=DEVICE, dtype="float32")


@pytest.fixture(scope="module")
def demo_sized(tmp_path_factory, tiny_tokenizer):
    """A random Qwen3 of the demo LM's exact shape (4 layers, 128 wide, GQA 4/2), via the app's loader."""
    from sae_lib.model import load_model

    lm = DemoConfig().lm
    folder = _hf_folder(tmp_path_factory, tiny_tokenizer, hidden_size=lm.hidden_size, num_hidden_layers=lm.num_hidden_layers,
                        intermediate_size=lm.intermediate_size, num_attention_heads=lm.num_attention_heads,
                        num_key_value_heads=lm.num_key_value_heads, head_dim=lm.head_dim)
    return load_model(str(folder), device=DEVICE, dtype="float32")


def local_tokens(tokenizer, context: int):
    """The fixture texts, tokenized and packed into rows of ``context``: a local stand-in for a Hub dataset."""
    rows = pack_texts(TINY_TEXTS, tokenizer, context).tokens
    assert len(rows) >= 4
    return as_dataset(rows)


def shrink(cfg, model, layers_full: int):
    """``cfg`` with only the model shrunk: the hook at the same depth, the SAE as many times wider than
    the model as the preset's is, the device this machine has. Everything else stays the preset's."""
    layer = int(cfg.hook_name.split(".")[1]) * model.cfg.n_layers // layers_full
    d_in = model.cfg.d_model
    sae = dataclasses.replace(cfg.sae, d_sae=cfg.sae.d_sae // cfg.sae.d_in * d_in)
    # SAELens resolved llm_device/act_store_device from the preset's device: they move with it.
    return dataclasses.replace(cfg, sae=sae, hook_name=f"blocks.{layer}.hook_mlp_out", device=DEVICE,
                               llm_device=DEVICE, act_store_device=DEVICE)


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_presets_exact_config_trains_two_steps(preset, shrunk_qwen3, tmp_path):
    model = shrunk_qwen3
    exact = preset_config(preset)
    # The activation-norm estimate reads n_batches_for_norm_estimate batches before step 1 (1,000 x 4,096
    # tokens for qwen3-8b: seconds on a GPU, minutes here); 4 go through the same store and buffer.
    shrunk = dataclasses.replace(shrink(exact, model, FULL_LAYERS[preset]), n_batches_for_norm_estimate=4)
    cfg = configure_run(shrunk, d_in=model.cfg.d_model, out=tmp_path, log=QUIET)
    # Only the model (hook depth, widths, device), the norm estimate's length and the outputs differ.
    changed = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(exact, f.name)}
    assert changed <= {"sae", "hook_name", "device", "llm_device", "act_store_device", "output_path", "checkpoint_path",
                       "n_batches_for_norm_estimate"}, changed
    assert (cfg.training_tokens, cfg.n_batches_in_buffer, cfg.train_batch_size_tokens) == (
        exact.training_tokens, exact.n_batches_in_buffer, exact.train_batch_size_tokens)
    with pytest.raises(TrainingInterrupted) as info:
        run_training(cfg, model=model, dataset=local_tokens(model.tokenizer, cfg.context_size), log=QUIET,
                     stop_after_steps=2)
    stats = info.value.stats
    assert stats.n_training_steps == 2 and stats.n_training_samples == 2 * cfg.train_batch_size_tokens
    ckpt = latest_checkpoint(tmp_path)  # the stop saved a full checkpoint, as Ctrl-C does
    assert ckpt is not None and int(ckpt.name) == 2 * cfg.train_batch_size_tokens
    assert SAE.load_from_disk(str(ckpt)).cfg.d_sae == cfg.sae.d_sae


def test_a_small_corpus_is_counted_in_tokens_not_rows(shrunk_qwen3, tmp_path):
    # SAELens warns "fewer samples (rows) than ... (tokens)" and again at every pass; the run says instead
    # how many times it reads the corpus, counted in tokens.
    import warnings

    model = shrunk_qwen3
    cfg = dataclasses.replace(preset_config("demo"), hook_name="blocks.1.hook_mlp_out", context_size=32,
                              train_batch_size_tokens=128, training_tokens=128 * 40, store_batch_size_prompts=4,
                              n_batches_in_buffer=4, n_batches_for_norm_estimate=2, device=DEVICE, llm_device=DEVICE,
                              act_store_device=DEVICE)
    cfg = configure_run(cfg, d_in=model.cfg.d_model, out=tmp_path, checkpoints=False, log=QUIET)
    dataset = local_tokens(model.tokenizer, cfg.context_size)
    tokens = len(dataset) * cfg.context_size
    assert tokens < cfg.training_tokens  # the corpus is read more than once
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, stats = run_training(cfg, model=model, dataset=dataset, log=lines.append)
    assert stats.n_training_steps == 40
    said = [line for line in lines if "the dataset holds" in line]
    assert said == [f"the dataset holds {tokens:,} tokens ({len(dataset):,} rows of 32), fewer than the run's "
                    f"{cfg.training_tokens:,}: it is read about {cfg.training_tokens / tokens:.1f} times"], lines
    assert not [w for w in caught if "fewer samples" in str(w.message) or "exhausted" in str(w.message)]


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_trains_on_the_demo_shape_and_loads(architecture, demo_sized, tmp_path):
    model = demo_sized
    cfg = preset_config("demo", architecture)
    cfg = dataclasses.replace(cfg, training_tokens=3 * cfg.train_batch_size_tokens, n_batches_for_norm_estimate=2,
                              device=DEVICE, llm_device=DEVICE, act_store_device=DEVICE)
    cfg = configure_run(cfg, d_in=model.cfg.d_model, out=tmp_path, checkpoints=False, log=QUIET)
    _, stats = run_training(cfg, model=model, dataset=local_tokens(model.tokenizer, cfg.context_size), log=QUIET)
    assert stats.n_training_steps == 3
    sae = SAE.load_from_disk(str(tmp_path), device=DEVICE)
    # SAELens saves a training SAE as its inference kind (batchtopk thresholds become a JumpReLU).
    assert sae.cfg.architecture() == cfg.sae.get_inference_config_class().architecture()
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.metadata.hook_name) == (128, 1024, "blocks.2.hook_mlp_out")
    x = torch.randn(5, 128, device=DEVICE)
    z = sae.encode(x)
    assert sae.decode(z).shape == (5, 128) and bool(torch.isfinite(sae.decode(z)).all())
    assert int((z != 0).sum()) < z.numel()  # sparse codes
    if architecture != "abstopk":  # abstopk keeps the k largest by magnitude, signs included
        assert bool((z >= 0).all())
    if getattr(sae.cfg, "k", None) is not None and architecture in ("topk", "abstopk"):
        assert int((z != 0).sum(-1).max()) <= sae.cfg.k  # at most k latents per input


def test_sparsity_histogram_every_window_does_not_kill_a_run_without_wandb_logging(shrunk_qwen3, tmp_path, monkeypatch):
    # SAELens 6.54.12's SAETrainer.fit builds wandb.Histogram(log feature sparsity) at every
    # feature_sampling_window (2,000) steps whether or not it logs to W&B; wandb must be importable
    # and the call must work offline. The window is shortened here so the call happens at step 2.
    built = []
    real = wandb.Histogram
    monkeypatch.setattr(wandb, "Histogram", lambda *a, **kw: built.append(real(*a, **kw)) or built[-1])
    model = shrunk_qwen3
    cfg = preset_config("demo")
    cfg = dataclasses.replace(cfg, training_tokens=4 * cfg.train_batch_size_tokens, feature_sampling_window=2,
                              dead_feature_window=2, n_batches_for_norm_estimate=2, device=DEVICE,
                              llm_device=DEVICE, act_store_device=DEVICE,
                              hook_name="blocks.2.hook_mlp_out")
    cfg = configure_run(cfg, d_in=model.cfg.d_model, out=tmp_path, checkpoints=False, log=QUIET)
    assert not cfg.logger.log_to_wandb
    _, stats = run_training(cfg, model=model, dataset=local_tokens(model.tokenizer, cfg.context_size), log=QUIET)
    assert stats.n_training_steps == 4 and len(built) >= 1
