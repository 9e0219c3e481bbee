"""Dose-response of steering: as every multiplier is scaled from 0 up, how far the model moves and
how much the steered latents fire on what it writes (one sample per scale, all in one batch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_lib import sae_hooks
from sae_lib.errors import GenerationError, InputError
from sae_lib.limits import LIMITS, check_range, oom_guard
from sae_lib.model_queue import queue_for
from sae_lib.probe import model_device, prompt_tokens
from sae_lib.generation import (
    NON_FINITE_MESSAGE,
    FiniteGuard,
    GenerationSettings,
    decode_new,
    engine_serving,
    final_hook_name,
    generation_errors,
    sample_tokens,
)
from sae_lib.steering import SteeringHook, SteeringSpec, check_specs, steering_hooks


class DoseResponse(NamedTuple):
    """What happens as every multiplier is scaled from 0 up: where steering starts to act, where it breaks."""

    scales: Tensor
    """The factors applied to every spec's multipliers. Shape (k,)."""
    kl_next_token: Tensor
    """KL(steered || unsteered) of the next-token distribution right after the prompt, in nats. Shape (k,)."""
    kl_generated: Tensor
    """Mean KL(steered || unsteered) over the positions that produced the steered text, in nats. Shape (k,)."""
    latent_acts: Tensor
    """Mean activation of each steered latent on the steered text as the unsteered model reads it: does
    the text steering wrote evoke the latent by itself? Over the generated tokens (up to the first
    end-of-text). Shape (k, n_specs), spec order."""
    steered_acts: Tensor
    """Mean activation of each steered latent at the hook with the steering applied (the SAE encoding of
    what the model carries on after the hook): what steering puts in: it rises with the scale when the latent's encoder reads its own decoder direction
    (on the demo, latent 10's barely does: 0 up to half strength). Over
    the positions that wrote the text (the prompt's last token and each generated token that predicted
    another). Shape (k, n_specs), spec order."""
    texts: list[str]
    """The steered continuation at each scale (one sample per scale)."""
    tokens: Tensor
    """Prompt + steered tokens per scale. Shape (k, prompt_len + new)."""


def _valid_new(tokens: Tensor, prompt_len: int, eos: int | None) -> Tensor:
    """(batch, new) mask of generated tokens up to and including the first end-of-text token."""
    new = tokens[:, prompt_len:]
    if eos is None:
        return torch.ones_like(new, dtype=torch.bool)
    is_eos = (new == eos).int()
    return (is_eos.cumsum(1) - is_eos) == 0


def dose_response(
    model: HookedTransformer,
    sae: SAE,
    prompt: str,
    specs: Sequence[SteeringSpec],
    scales: Sequence[float],
    settings: GenerationSettings = GenerationSettings(),
    *,
    on_wait: Callable[[int], None] | None = None,
) -> DoseResponse:
    """Generate one sample per scale (all as one batch, row ``j`` steered with multipliers × ``scales[j]``)
    and measure how far each moved the model and how much the steered latents fire on the result."""
    if not specs:
        raise InputError("Pick at least one latent to sweep.")
    check_specs(specs, int(sae.cfg.d_sae))
    if not (1 <= len(scales) <= LIMITS.max_sweep_points):
        raise InputError(f"A sweep takes 1 to {LIMITS.max_sweep_points} values, got {len(scales)}.")
    largest = max(abs(m) for s in specs for m in s.multipliers()) or 1.0
    for value in scales:
        check_range("Sweep scale", value, 0.0, LIMITS.max_multiplier / largest)
    tokens = prompt_tokens(model, prompt, settings.max_new_tokens)
    device = model_device(model)
    k = len(scales)
    batch = tokens.expand(k, -1).to(device)  # (k, pos)
    row_scales = torch.tensor(list(scales), dtype=torch.float32, device=device)  # (k,)
    n = tokens.shape[1]
    # What the encoder reads: the SAE's input hook (a transcoder's differs from where steering writes).
    in_site = sae_hooks.resolve(model, sae_hooks.input_hook(sae))
    hook_name = in_site.model_hook
    latents = torch.tensor([s.latent for s in specs], dtype=torch.long)
    engine = engine_serving(model, sae)
    with queue_for(model).slot(on_wait):
        out = sample_tokens(model, sae, batch, specs, settings, row_scales=row_scales)  # (k, n + new)
        guard = [(final_hook_name(model), FiniteGuard("measuring the sweep"))]
        with generation_errors("measuring the sweep"), oom_guard("measuring the sweep"), torch.inference_mode():
            inputs = out[:, :-1]  # (k, L - 1): every position that predicted a generated token
            if engine is not None:  # the same forwards on the generation engine's kernels
                steer = SteeringHook(sae, specs, settings.positions, n, row_scales)
                # The steered activation is what the hook hands on (steering applied).
                logits_steered, acts_steered = engine.logits(inputs, hook_name, steer, capture=True)  # (k, L - 1, vocab)
                logits_clean, acts_clean = engine.logits(out, hook_name, capture=True)
                if not (bool(torch.isfinite(logits_steered).all()) and bool(torch.isfinite(logits_clean).all())):
                    raise GenerationError(NON_FINITE_MESSAGE.format(what="measuring the sweep"))
            else:
                with steering_hooks(model, sae, specs, settings.positions, n, row_scales), model.hooks(fwd_hooks=guard):
                    # The cache hook is added after the steering hook, so it records the steered activation.
                    logits_steered, cache_steered = model.run_with_cache(
                        inputs, return_type="logits", names_filter=[hook_name]
                    )  # (k, L - 1, vocab)
                with model.hooks(fwd_hooks=guard):
                    logits_clean, cache = model.run_with_cache(out, return_type="logits", names_filter=[hook_name])
                acts_steered, acts_clean = cache_steered[hook_name], cache[hook_name]
    logits_clean = logits_clean[:, :-1]
    logp_s = logits_steered[:, n - 1 :].float().log_softmax(-1)  # (k, new, vocab)
    logp_c = logits_clean[:, n - 1 :].float().log_softmax(-1)
    kl = (logp_s.exp() * (logp_s - logp_c)).sum(-1)  # (k, new)
    valid = _valid_new(out, n, model.tokenizer.eos_token_id if model.tokenizer is not None else None)
    weights = valid.float()  # (k, new)
    kl_generated = (kl * weights).sum(1) / weights.sum(1).clamp(min=1)
    with torch.inference_mode():
        acts = sae_hooks.sae_input(sae, sae_hooks.to_sae_space(in_site, acts_clean[:, n:])).to(sae.W_dec.dtype)  # (k, new, d_in): the generated tokens
        z = sae.encode(acts)[..., latents.to(acts.device)].float()  # (k, new, n_specs)
        acts_s = sae_hooks.sae_input(sae, sae_hooks.to_sae_space(in_site, acts_steered[:, n - 1 :])).to(sae.W_dec.dtype)  # (k, new, d_in): the writing positions
        z_s = sae.encode(acts_s)[..., latents.to(acts_s.device)].float()  # (k, new, n_specs)
    per_row = weights.sum(1).clamp(min=1)[:, None]  # (k, 1)
    latent_acts = (z * weights[..., None]).sum(1) / per_row
    steered_acts = (z_s * weights[..., None]).sum(1) / per_row
    return DoseResponse(
        scales=row_scales.cpu(),
        kl_next_token=kl[:, 0].cpu(),
        kl_generated=kl_generated.cpu(),
        latent_acts=latent_acts.cpu(),
        steered_acts=steered_acts.cpu(),
        texts=decode_new(model, out, n),
        tokens=out.cpu(),
    )
