"""Live probe of a model + SAE: a prompt's tokens, the activations at the SAE's hook, and which latents fire.

Shared by the Latent browser's "What fires here" view, the latent index pass (``encode_tokens``) and
steering (``prompt_tokens``), so a prompt is checked and tokenized the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import pandas as pd
import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from sae_lib import sae_hooks
from sae_lib.errors import InputError
from sae_lib.limits import LIMITS, Limits, check_prompt
from sae_lib.model_queue import queue_for


def model_device(model: HookedTransformer) -> torch.device:
    """The device the model's weights are on."""
    return next(model.parameters()).device


def prompt_tokens(
    model: HookedTransformer, prompt: str, max_new_tokens: int = 0, limits: Limits = LIMITS
) -> torch.Tensor:
    """The prompt's tokens, shape (1, pos), after checking it, its length, and that ``max_new_tokens`` more
    fit the model's context; :class:`InputError` (with what to do) otherwise."""
    check_prompt(prompt, limits)
    tokens = model.to_tokens(prompt)  # (1, pos)
    n = tokens.shape[1]
    if n > limits.max_prompt_tokens:
        raise InputError(f"The prompt is {n} tokens long; the limit is {limits.max_prompt_tokens}. Shorten it.")
    if n + max_new_tokens > model.cfg.n_ctx:
        raise InputError(
            f"The prompt ({n} tokens) plus {max_new_tokens} new tokens exceeds the model's context of "
            f"{model.cfg.n_ctx} tokens: shorten the prompt or generate fewer tokens."
        )
    return tokens


def hook_activations(model: HookedTransformer, tokens: torch.Tensor, hook_name: str, compiled: bool = False) -> torch.Tensor:
    """Activations at ``hook_name`` for ``tokens`` (B, ctx), running the model only up to that hook's layer
    (on the generation engine's Hugging Face kernels when the model has one and a module for the hook:
    ``sae_lib.engine``; otherwise TransformerLens, where names that are not plain hook points,
    ``blocks.L.mlp.hook_in``, are mapped by :mod:`sae_lib.sae_hooks`). ``compiled``: the engine's forward
    to the hook through ``torch.compile`` (:mod:`sae_lib.engine_prefix`)."""
    return sae_hooks.read_activations(model, hook_name, tokens, compiled=compiled)


@contextmanager
def tf32_matmuls(device: torch.device | str) -> Iterator[None]:
    """float32 matmuls on ``device`` in TF32 for the block (CUDA only; a no-op elsewhere), then as before.

    Why: a float32 SAE's encode is a (tokens x d_in) @ (d_in x d_sae) matmul, and in IEEE float32 an
    H100 runs it on its CUDA cores (~50 TFLOP/s): at Qwen3-8B's 4,096 x 65,536 it took 46 ms per 4,096
    tokens, 30% of the index pass's bare forward (docs/bench_gpu_h100_run2.json). TF32 uses the tensor
    cores (inputs rounded to a 10-bit mantissa, float32 range and accumulation), several times faster.
    The switch is process-wide, so it is set only around a block that holds the model's queue slot.
    """
    matmul = torch.backends.cuda.matmul
    if torch.device(device).type != "cuda":
        yield
        return
    previous = matmul.fp32_precision  # the new API only: torch refuses a mix with allow_tf32
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


@torch.no_grad()
def encode_tokens(model: HookedTransformer, sae: SAE, tokens: torch.Tensor, tf32: bool = False,
                  compiled: bool = False) -> torch.Tensor:
    """SAE activations (B, ctx, d_sae) for tokens (B, ctx): model to the SAE's input hook (for a transcoder
    the hook it reads, not the one it writes), then ``sae.encode`` (with ``tf32``: its float32 matmuls in
    TF32 on CUDA, :func:`tf32_matmuls`; the model's forward is untouched; ``compiled``: that forward
    compiled, :func:`hook_activations`)."""
    acts = hook_activations(model, tokens.to(model_device(model)), sae_hooks.input_hook(sae), compiled=compiled)
    acts = sae_hooks.sae_input(sae, acts)  # a per-head hook: one head, or the heads flattened
    with tf32_matmuls(sae.device) if tf32 else nullcontext():
        return sae.encode(acts.to(sae.device))


class Firing(NamedTuple):
    """Which latents fire most on each token of one prompt."""

    tokens: list[str]
    """The prompt's tokens as text."""
    latents: torch.Tensor
    """(n_tokens, top_n) int64: the latents firing most on each token (by activation)."""
    acts: torch.Tensor
    """(n_tokens, top_n) float32: their activations (0 where fewer latents fire)."""


@torch.no_grad()
def what_fires(
    model: HookedTransformer, sae: SAE, prompt: str, top_n: int = 5, limits: Limits = LIMITS,
    on_wait: Callable[[int], None] | None = None,
) -> Firing:
    """Per token of ``prompt``, the ``top_n`` latents with the largest activation. ``on_wait(n_ahead)``:
    the model queue's report while this waits for other visitors' runs (``ModelQueue.slot``)."""
    tokens = prompt_tokens(model, prompt, limits=limits)  # (1, n)
    # The model is shared with steering, whose hooks live on it while a generation runs: wait our turn.
    with queue_for(model).slot(on_wait):
        feats = encode_tokens(model, sae, tokens)[0].float().cpu()  # (n, d_sae)
    acts, latents = feats.topk(min(top_n, feats.shape[1]), dim=1)
    return Firing(model.to_str_tokens(tokens[0]), latents, acts)


def firing_table(firing: Firing) -> pd.DataFrame:
    """One row per token: the latents that fire most there, as ``latent (activation)``."""
    cols = {}
    for j in range(firing.latents.shape[1]):
        cols[f"#{j + 1}"] = [
            f"{int(lat)} ({float(a):.2f})" if a > 0 else ""
            for lat, a in zip(firing.latents[:, j], firing.acts[:, j])
        ]
    return pd.DataFrame({"token": firing.tokens, **cols})


def firing_latents(firing: Firing) -> list[int]:
    """Latents that fire anywhere in the prompt, strongest first (for click-through)."""
    best: dict[int, float] = {}
    for lat, a in zip(firing.latents.flatten().tolist(), firing.acts.flatten().tolist()):
        if a > 0:
            best[lat] = max(best.get(lat, 0.0), a)
    return sorted(best, key=lambda k: -best[k])
