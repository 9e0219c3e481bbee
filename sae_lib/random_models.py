"""Random models of real shapes, for the benches: Qwen3 built straight on the device in its dtype, wrapped
as the loader wraps a model, and a random JumpReLU SAE with calibrated thresholds.

Random weights stand in for real ones: speed and memory depend on shapes and dtypes, not on values.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
"""Qwen3-8B's config.json (8.19 B parameters)."""
DEMO_SHAPE = dict(
    vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, max_position_embeddings=512, tie_word_embeddings=True,
)
"""The embedded demo's shape."""


def flagship_layer(shape: dict) -> int:
    """The write-up's SAE layer: block 28 of Qwen3-8B's 36, the same depth for other shapes."""
    return round(shape["num_hidden_layers"] * 28 / 36)


def random_model(shape: dict, dtype: torch.dtype, device: str | torch.device):
    """A random ``Qwen3ForCausalLM`` of ``shape`` built directly on ``device`` in ``dtype`` (no float32
    copy, no CPU copy), wrapped as the app's loader wraps it: a HookedTransformer over its tensors with
    the HF module as generation engine. Returns the HookedTransformer."""
    from transformer_lens import loading_from_pretrained as tl_loading
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from sae_lib.model import hooked_transformer_over

    config = Qwen3Config(**shape, architectures=["Qwen3ForCausalLM"])
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype, on the device
    try:
        with torch.device(device):
            hf = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    hf.eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)  # TransformerLens reads the architecture from a folder's config.json
        cfg = tl_loading.get_pretrained_model_config(tmp, device=str(device), dtype=dtype)
        cfg.tokenizer_name = None  # random weights, token-id prompts: no tokenizer
        cfg.trust_remote_code = False
        return hooked_transformer_over(hf, cfg, None, tmp)


def calibrated_sae(model, hook: str, d_sae: int, tokens: torch.Tensor, l0: float = 125.0):
    """A random JumpReLU SAE on ``hook`` whose thresholds make about ``l0`` latents fire per token.

    Unit-norm random decoder rows, ``W_enc = W_dec.T``; each latent's threshold is the value its
    pre-activation exceeds on a fraction ``l0 / d_sae`` of the activations of ``tokens`` (batch, pos),
    so the L0 on text like ``tokens`` is ``l0`` on average (zero thresholds would fire half the latents).
    """
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from sae_lib.probe import hook_activations

    device = next(model.parameters()).device
    acts = hook_activations(model, tokens, hook).reshape(-1, model.cfg.d_model).float()  # (n, d_in)
    n = acts.shape[0]
    above = max(1, round(n * l0 / d_sae))  # activations above each threshold
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=model.cfg.d_model, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook)))
    sae = sae.to(device)
    with torch.no_grad():
        gen = torch.Generator(device=device).manual_seed(0)
        w = torch.randn(d_sae, model.cfg.d_model, device=device, generator=gen)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        for start in range(0, d_sae, 8192):  # (n, chunk) pre-activations at a time
            pre = acts @ sae.W_enc[:, start : start + 8192]
            sae.threshold[start : start + 8192] = pre.kthvalue(n - above, dim=0).values.clamp(min=1e-3)
    return sae.eval()


def l0_of(model, sae, tokens: torch.Tensor) -> float:
    """Mean number of latents firing per token on ``tokens``."""
    from sae_lib.probe import hook_activations

    with torch.no_grad():
        acts = hook_activations(model, tokens, sae.cfg.metadata.hook_name)
        return float((sae.encode(acts.to(sae.W_enc.dtype)) > 0).sum(-1).float().mean())


def write_random_qwen3(folder: Path, dtype: str, **sizes) -> Path:
    """A random-weight ``Qwen3ForCausalLM`` + a small BPE tokenizer saved as a Hugging Face folder.

    The parameters are allocated once, in ``dtype`` (built on the meta device, cast there, then given
    storage): an 8B model in bfloat16 takes 16.4 GB of RAM while written, not a 32.8 GB float32 copy.
    """
    import gc

    from transformers import Qwen3Config, Qwen3ForCausalLM

    from sae_lib.demo.tokenizer import train_tokenizer

    texts = [f"Story {i}: the ship sailed, the rocket flew, the band played and the soup boiled." for i in range(50)]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    tokenizer.save_pretrained(folder)
    cfg = Qwen3Config(**{"tie_word_embeddings": False, "max_position_embeddings": 2048, **sizes})
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg)
    model = model.to(getattr(torch, dtype)).to_empty(device="cpu")  # meta -> dtype is free; one allocation
    with torch.no_grad():
        for p in model.parameters():  # cheap random values; the bench measures memory, not quality
            p.uniform_(-0.05, 0.05) if p.ndim > 1 else p.fill_(1.0)
    model.save_pretrained(folder, max_shard_size="2GB")  # shard by shard: no second full copy
    del model
    gc.collect()
    return folder
