"""Shared fixtures: everything seeded, tiny models built in code (no network, seconds to build)."""

import random

import numpy as np
import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer

from sae_lib.demo.tokenizer import train_tokenizer

TINY_TEXTS = [
    "The ship sailed across the ocean while the waves crashed on the shore.",
    "The rocket flew past the moon and the stars toward a distant planet.",
    "She stirred the soup and baked fresh bread in the warm kitchen.",
    "The band played a loud song and the drummer kept the rhythm.",
] * 20
TINY_HOOK = "blocks.1.hook_mlp_out"


DEMO_FIXTURES = {"demo_paths", "demo_workspace"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs the built demo (through any fixture chain) ``demo``, so the fast tier
    (``-m "not demo ..."``) can never start the minutes-long demo build by forgetting a marker."""
    for item in items:
        if DEMO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.demo)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    # Saved and reloaded: TransformerLens re-reads a tokenizer from its ``name_or_path``.
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(TINY_TEXTS, vocab_size=300).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """A 2-layer, 32-wide Qwen3-shaped HookedTransformer (RMSNorm, GQA, rotary, SwiGLU, qk-norm)."""
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        n_key_value_heads=2,
        d_mlp=64,
        n_ctx=128,
        d_vocab=len(tiny_tokenizer),
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        final_rms=True,
        use_qk_norm=True,
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg, tokenizer=tiny_tokenizer)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_sae():
    """A JumpReLU SAE on ``TINY_HOOK`` (d_in 32, d_sae 96) with random weights and small thresholds."""
    torch.manual_seed(0)
    cfg = JumpReLUSAEConfig(d_in=32, d_sae=96, metadata=SAEMetadata(hook_name=TINY_HOOK))
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True))
        sae.b_enc.normal_(0, 0.05)
        sae.threshold.fill_(0.05)
    sae.eval()
    return sae


@pytest.fixture(scope="session")
def demo_paths():
    """The full embedded demo, built once (cached in ``$LATENT_LAB_DEMO_DIR`` or data/demo)."""
    from sae_lib.demo.build import ensure_demo

    return ensure_demo()


@pytest.fixture(scope="session")
def demo_workspace(demo_paths):
    """The embedded demo loaded exactly as the app loads it (model + SAE + latent index)."""
    from sae_lib.workspace import load_workspace

    return load_workspace(
        str(demo_paths.model), str(demo_paths.sae), device="cpu", dtype="float32", fallback=False
    )


@pytest.fixture(scope="session")
def tiny_hf_qwen3_dir(tmp_path_factory):
    """A local Hugging Face folder: a 2-layer, 64-wide random ``Qwen3ForCausalLM`` + BPE tokenizer.

    Saved as safetensors (``save_pretrained``) with the tokenizer next to it, like the demo and any
    Hub snapshot. Weights are scaled up from HF's 0.02-std init (and norm gains moved off 1) so that
    logits are O(1) and a wrong weight mapping cannot hide below a test tolerance.
    """
    from transformers import Qwen3ForCausalLM

    from sae_lib.demo.lm import qwen3_config

    path = tmp_path_factory.mktemp("hf_qwen3")
    tokenizer = train_tokenizer(TINY_TEXTS, vocab_size=300)
    tokenizer.save_pretrained(path)
    cfg = qwen3_config(tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:  # RMSNorm gains
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.1)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def device() -> str:
    """Where tests that load models put them: ``LATENT_LAB_TEST_DEVICE``, else CUDA when present, else CPU.

    Tests compare tensors on this one device, so the suite passes on a GPU machine and on CPU CI.
    """
    import os

    return os.environ.get("LATENT_LAB_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
