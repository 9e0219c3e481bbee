"""Seeded batched generation, normal and steered, on the model's engine or TransformerLens.

Generation runs on the model's engine (:mod:`sae_lib.engine`: the Hugging Face module, steered at
the module whose output is the SAE's hook) when it has one, else on TransformerLens; both sample
alike, so a seed gives the same text. Steering hooks (:mod:`sae_lib.steering`) only live for one
generation, and every generation runs in the model's queue slot (:mod:`sae_lib.model_queue`), so
visitors sharing the model never see each other's steering.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_lib import sae_hooks
from sae_lib.engine import Engine, NonFiniteLogits, engine_for
from sae_lib.hf_hooks import hook_site
from sae_lib.errors import CompatibilityError, GenerationError, InputError
from sae_lib.limits import LIMITS, Limits, check_range, oom_guard
from sae_lib.model_queue import queue_for
from sae_lib.probe import model_device, prompt_tokens
from sae_lib.steering import POSITIONS, Positions, SteeringHook, SteeringSpec, check_specs, steering_hooks

log = logging.getLogger(__name__)
"""Failures the visitor sees as a message are logged here with their trace, for the operator."""


MIN_TEMPERATURE = 1e-3
"""The smallest non-zero temperature: the logits are divided by it in float32, and below ~1e-38 they
overflowed to NaN (a failure that "try again" never cured; on CUDA a NaN sampler can assert). Between
0 and this, 0 (greedy) is what a user means."""


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample; the defaults are the write-up's."""

    max_new_tokens: int = 50
    """Tokens added to the prompt per sample."""
    n_samples: int = 5
    """Samples per run, generated as one batch (the prompt repeated ``n_samples`` times)."""
    temperature: float = 0.05
    """Sampling temperature; 0 is greedy (TransformerLens then ignores the frequency penalty)."""
    freq_penalty: float = 2.0
    """Subtracted from the temperature-scaled logits once per earlier occurrence of a token (prompt included)."""
    seed: int = 0
    """Seeds the sampler; normal and steered runs start from the same seed, so they share the random stream."""
    positions: Positions = "all"
    """Where steering acts: ``all`` positions (the write-up) or ``generated`` ones (see ``POSITIONS_HELP``)."""
    stop_at_eos: bool = True
    """Stop a sample at the end-of-text token (the rest of its row is padding)."""

    def __post_init__(self) -> None:
        self.check(LIMITS)

    def check(self, limits: Limits) -> None:
        """Raise :class:`InputError` unless every setting is within ``limits``."""
        check_range("Tokens to generate", self.max_new_tokens, 1, limits.max_new_tokens)
        check_range("Samples", self.n_samples, 1, limits.max_samples)
        check_range("Temperature", self.temperature, 0.0, limits.max_temperature)
        if 0 < self.temperature < MIN_TEMPERATURE:  # logits / T overflows to inf/NaN below ~1e-38
            raise InputError(f"Temperature {self.temperature:g} is too small to sample with: use 0 for greedy "
                             f"decoding, or at least {MIN_TEMPERATURE:g}.")
        check_range("Frequency penalty", self.freq_penalty, 0.0, limits.max_freq_penalty)
        if self.positions not in POSITIONS:
            raise InputError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}.")


class GenerationResult(NamedTuple):
    """Normal and steered samples of one prompt, sample ``i`` of each drawn from the same random stream."""

    prompt: str
    """The prompt as given."""
    prompt_len: int
    """Prompt length in tokens."""
    normal: list[str]
    """``n_samples`` continuations (new text only) without steering."""
    steered: list[str] | None
    """``n_samples`` continuations with steering; None when no latent was given."""
    normal_tokens: Tensor
    """Prompt + new tokens without steering. Shape (n_samples, prompt_len + max_new_tokens), or shorter if
    every sample stopped early."""
    steered_tokens: Tensor | None
    """Same with steering, or None."""


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    # TransformerLens samples from torch's global generator; fork it so the seed neither leaks out nor
    # depends on what ran before. Safe because callers hold the model's queue slot.
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if device.type != "cpu" else "cuda"):
        torch.manual_seed(seed)
        yield


NON_FINITE_MESSAGE = (
    "The model's numbers overflowed (NaN or infinity) while {what}: the steering is too strong for this "
    "model. Lower the max activation or the multipliers and try again; the model is unchanged."
)


class FiniteGuard:
    """A forward hook on the model's last activation before the unembedding, raising
    :class:`GenerationError` as soon as it holds NaN or infinity: the logits made from it would be
    non-finite too, and the sampler would fail with an unreadable error (or sample garbage)."""

    def __init__(self, what: str = "generating") -> None:
        self.what = what

    def __call__(self, act: Tensor, hook: object = None) -> Tensor:
        if not bool(torch.isfinite(act).all()):
            raise GenerationError(NON_FINITE_MESSAGE.format(what=self.what))
        return act


def final_hook_name(model: HookedTransformer) -> str:
    """The hook point whose output the unembedding reads (after the final norm when there is one)."""
    name = "ln_final.hook_normalized"
    return name if name in model.hook_dict else f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


@contextmanager
def generation_errors(what: str = "generating") -> Iterator[None]:
    """Turn any failure inside the ``with`` into a message for the visitor; the trace goes to the log.

    A visitor's own mistake (:class:`InputError`, out of memory) and our messages pass through as they
    are. Anything else (a device error, a sampler refusing its input) is logged with its traceback for
    the operator and becomes a :class:`GenerationError` that says what to do, never a traceback.
    """
    try:
        yield
    except (InputError, GenerationError, CompatibilityError):
        raise
    except RuntimeError as err:
        log.exception("Generation failed while %s", what)
        raise GenerationError(f"Generation failed part-way ({err}). The model is unchanged; try again.") from err
    except Exception as err:  # noqa: BLE001: whatever the libraries raise, the visitor gets a message
        log.exception("Generation failed while %s", what)
        raise GenerationError(
            f"Generation failed part-way ({type(err).__name__}; the details are in the server's log). "
            "The model is unchanged: try again, or lower the max activation or the multipliers."
        ) from err


def sample_tokens(
    model: HookedTransformer,
    sae: SAE,
    tokens: Tensor,
    specs: Sequence[SteeringSpec],
    settings: GenerationSettings,
    row_scales: Tensor | None = None,
    on_step: Callable[[], None] | None = None,
) -> Tensor:
    """One seeded, batched, KV-cached generation; ``tokens`` (batch, pos) -> (batch, pos + new).

    On the model's generation engine (:mod:`sae_lib.engine`: the Hugging Face module, steered at the
    module whose output is the SAE's hook) when it has one, else TransformerLens's ``generate``; both
    sample the same way, so a seed gives the same text. The caller holds the model's queue slot
    (``generate`` and ``dose_response`` do); ``settings.n_samples`` is ignored, the batch is ``tokens``'s.
    """
    engine = engine_serving(model, sae)
    # oom_guard frees the failed run's memory and empties the CUDA cache before telling the visitor
    # to ask for less, so the app keeps serving; the hooks are gone by then (scoped context). Non-finite
    # logits stop the run before the sampler sees them: the engine checks them itself, and on the
    # TransformerLens path the FiniteGuard does.
    with generation_errors("generating"), oom_guard("generating"):
        try:
            if engine is not None:
                steer = SteeringHook(sae, specs, settings.positions, tokens.shape[1], row_scales) if specs else None
                return engine.sample(
                    tokens,
                    max_new_tokens=settings.max_new_tokens,
                    temperature=settings.temperature,
                    freq_penalty=settings.freq_penalty,
                    seed=settings.seed,
                    stop_at_eos=settings.stop_at_eos,
                    hook_name=sae.cfg.metadata.hook_name,
                    steer=steer,
                    on_step=on_step,
                )
        except NonFiniteLogits as err:
            raise GenerationError(NON_FINITE_MESSAGE.format(what="generating")) from err
        with _seeded(settings.seed, model_device(model)):
            with steering_hooks(model, sae, specs, settings.positions, tokens.shape[1], row_scales, on_step):
                with model.hooks(fwd_hooks=[(final_hook_name(model), FiniteGuard("generating"))]):
                    return model.generate(
                        tokens,
                        max_new_tokens=settings.max_new_tokens,
                        temperature=settings.temperature,
                        freq_penalty=settings.freq_penalty,
                        stop_at_eos=settings.stop_at_eos,
                        use_past_kv_cache=True,
                        return_type="tokens",
                        verbose=False,
                    )


WARM_UP_PROMPT_TOKENS = 8
"""Prompt length of the warm-up runs (any token ids do: only shapes matter to compilation)."""


def warm_up(model: HookedTransformer, sae: SAE, batch_sizes: Sequence[int] = (1, GenerationSettings.n_samples)) -> float | None:
    """Compile and capture the engine's decode step now, so the first visitor's generation does not.

    On an H100 at Qwen3-8B's shape the first compiled run took 54 s and the second shape another 80 s
    (``bench/gpu.py``: torch.compile, then a recompile with dynamic sizes); afterwards a new batch size
    or length only records a CUDA graph. Two runs of different shapes (batch 1, then ``n_samples``
    with a longer cache) leave the dynamic graph in place, with the SAE's decode slot registered
    first. Holds the model's queue slot, so a visitor arriving meanwhile waits in line and sees it.
    Returns the seconds spent, or None when there is nothing to compile (no engine serving the SAE,
    compiled decoding off: CPU, ``LATENT_LAB_COMPILE=0``, or an earlier failure).
    """
    import time

    engine = engine_serving(model, sae)
    if engine is None or not engine.compile_decode or engine.compile_failed is not None:
        return None
    t0 = time.perf_counter()
    with queue_for(model).slot():
        for i, batch in enumerate(batch_sizes):
            # Within the operator's limits (GenerationSettings checks them; the batch is the tokens' rows).
            settings = GenerationSettings(max_new_tokens=min(8 * 4**i, LIMITS.max_new_tokens), n_samples=1, stop_at_eos=False)
            tokens = torch.zeros(batch, WARM_UP_PROMPT_TOKENS, dtype=torch.long)
            sample_tokens(model, sae, tokens, [], settings)
    seconds = time.perf_counter() - t0
    log.info("compiled decoding warmed up in %.0f s%s", seconds,
             f" (compilation failed, eager: {engine.compile_failed})" if engine.compile_failed else "")
    return seconds


def engine_serving(model: HookedTransformer, sae: SAE) -> Engine | None:
    """The model's generation engine when it has one with a module for the SAE's hook, else None
    (then TransformerLens serves)."""
    engine = engine_for(model)
    # A transcoder reads one hook and writes another, and a bridge name (``blocks.L.mlp.hook_in``) needs
    # sae_hooks's mapping: both stay on the TransformerLens path, which handles them.
    if engine is None or sae_hooks.is_transcoder(sae) or hook_site(engine.hf, sae_hooks.input_hook(sae), write=True) is None:
        return None
    return engine


def decode_new(model: HookedTransformer, tokens: Tensor, prompt_len: int) -> list[str]:
    """Each row's text after its first ``prompt_len`` tokens, special tokens left out."""
    return [model.tokenizer.decode(row[prompt_len:], skip_special_tokens=True) for row in tokens]


def generate(
    model: HookedTransformer,
    sae: SAE,
    prompt: str,
    specs: Sequence[SteeringSpec],
    settings: GenerationSettings = GenerationSettings(),
    *,
    progress: Callable[[int, int], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Generate ``settings.n_samples`` normal and (if ``specs``) steered continuations of ``prompt``.

    Both runs are one batch each, start from ``settings.seed`` and hold the model's queue slot.
    ``progress(done, total)`` is called once per forward pass, ``on_wait(n_ahead)`` while queued; either
    may raise to stop the run (the hooks are removed and the slot released).
    """
    check_specs(specs, int(sae.cfg.d_sae))
    tokens = prompt_tokens(model, prompt, settings.max_new_tokens)
    batch = tokens.expand(settings.n_samples, -1).to(model_device(model))  # (n_samples, pos)
    total = settings.max_new_tokens * (2 if specs else 1)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with queue_for(model).slot(on_wait):
        normal = sample_tokens(model, sae, batch, [], settings, on_step=step)
        done = settings.max_new_tokens  # a run that stopped at EOS early still counts as finished
        steered = sample_tokens(model, sae, batch, specs, settings, on_step=step) if specs else None
    n = tokens.shape[1]
    return GenerationResult(
        prompt=prompt,
        prompt_len=n,
        normal=decode_new(model, normal, n),
        steered=None if steered is None else decode_new(model, steered, n),
        normal_tokens=normal,
        steered_tokens=steered,
    )
