"""Runner-config rules a run must satisfy before SAELens sees it: buffer size, whole batches, d_in, outputs.

Every rule here exists because SAELens would otherwise fail late (at step 1 of a day-long run) or
silently do something other than asked. ``configure_run`` applies them all; the presets and the
demo build call it, so a config that trains here trains everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sae_lens import LanguageModelSAERunnerConfig
from transformer_lens import HookedTransformer

from sae_lib import constants
from sae_lib.errors import InputError
from sae_lib.sae import hook_width as sae_hook_width

Log = Callable[[str], None]


@contextmanager
def saelens_settings() -> Iterator[None]:
    """Settings SAELens's runner config refuses in its constructor (a bare ValueError) or divides by
    when 0 (a ZeroDivisionError) as an :class:`InputError`: with ``--train_batch_size_tokens 0`` or
    ``--context_size -1`` train_sae.py ended in a traceback while parsing its flags."""
    try:
        yield
    except ZeroDivisionError:
        raise InputError("--train_batch_size_tokens, --feature_sampling_window and --logger.wandb_log_frequency "
                         "must be positive (SAELens divides by them).") from None
    except ValueError as err:
        raise InputError(f"SAELens refuses these training settings: {err}") from None


def buffer_batches(train_batch_size_tokens: int, context_size: int, train_batches: int) -> int:
    """``n_batches_in_buffer`` that makes SAELens's shuffle buffer hold ``train_batches`` training batches.

    SAELens 6.54.12's activation store sizes its mixing buffer as ``n_batches_in_buffer *
    context_size`` tokens (one "batch" is one context row there, where SAELens 5, which the write-up
    ran, counted ``store_batch_size_prompts`` rows), and stops at the first step with "Buffer size
    must be greater than or equal to batch size" when that is less than ``train_batch_size_tokens``.
    Deriving the count from the batch and context sizes keeps every preset above that bound.
    """
    if min(train_batch_size_tokens, context_size, train_batches) <= 0:
        raise InputError("train_batch_size_tokens, context_size and the buffer's batch count must be positive.")
    return math.ceil(train_batches * train_batch_size_tokens / context_size)


def check_buffer(cfg: LanguageModelSAERunnerConfig[Any]) -> None:
    """InputError (with the fix) unless SAELens's shuffle buffer holds at least one training batch."""
    if cfg.use_cached_activations:
        return  # cached activations are read without the mixing buffer
    context = cfg.context_size  # SAELens uses the seqpos-sliced length; a slice only makes it smaller
    if cfg.seqpos_slice != (None,):
        context = len(range(cfg.context_size)[slice(*cfg.seqpos_slice)])
    if cfg.n_batches_in_buffer * context < cfg.train_batch_size_tokens:
        need = buffer_batches(cfg.train_batch_size_tokens, context, 1)
        raise InputError(
            f"SAELens's shuffle buffer holds n_batches_in_buffer x context = {cfg.n_batches_in_buffer} x {context} = "
            f"{cfg.n_batches_in_buffer * context:,} tokens, less than one training batch ({cfg.train_batch_size_tokens:,} "
            f"tokens), so training would stop at step 1. Pass --n_batches_in_buffer {need} or more "
            f"(a few batches' worth shuffles better)."
        )


def round_training_tokens(training_tokens: int, batch_tokens: int) -> tuple[int, str | None]:
    """``training_tokens`` rounded down to whole batches, with a warning when it changed.

    SAELens runs ``ceil(tokens / batch)`` steps, so a remainder silently trains on more tokens
    than asked and makes checkpoint/step arithmetic uneven.
    """
    if batch_tokens <= 0:
        raise InputError(f"train_batch_size_tokens must be positive, got {batch_tokens}.")
    if training_tokens < batch_tokens:
        raise InputError(
            f"training_tokens ({training_tokens:,}) is less than one batch (train_batch_size_tokens="
            f"{batch_tokens:,}). Raise --training_tokens or lower --train_batch_size_tokens."
        )
    rounded = training_tokens - training_tokens % batch_tokens
    if rounded == training_tokens:
        return training_tokens, None
    return rounded, (
        f"training_tokens {training_tokens:,} is not a multiple of train_batch_size_tokens {batch_tokens:,}; "
        f"rounded down to {rounded:,} ({rounded // batch_tokens:,} steps)."
    )


def hook_width(model: HookedTransformer, hook_name: str) -> int:
    """Width of the activations at ``hook_name`` (what the SAE's d_in must be); a missing hook is an
    :class:`InputError` worded for the script's flags."""
    if hook_name not in model.hook_dict:
        examples = [h for h in model.hook_dict if h.endswith("hook_mlp_out")][:3]
        raise InputError(
            f"The model has no hook named {hook_name!r} (it has {model.cfg.n_layers} layers; hooks look like "
            f"{', '.join(examples)}). Pass --hook_name with one of its hooks."
        )
    return sae_hook_width(model, hook_name)


def configure_run(
    cfg: LanguageModelSAERunnerConfig[Any],
    *,
    d_in: int,
    out: Path | None,
    checkpoints: bool = True,
    log: Log = print,
) -> LanguageModelSAERunnerConfig[Any]:
    """``cfg`` made ready to train: d_in from the model, whole batches, a buffer that fits a batch, outputs.

    ``out`` receives the SAE (``output_path``) and, with ``checkpoints``, ``out/checkpoints``
    (SAELens appends a run id). The SAE lives on the runner's device (SAELens's trainer moves it
    there anyway). Returns a new config; ``cfg`` is not changed.
    """
    if cfg.sae.d_sae < 1:  # SAELens trains (and evaluates, to NaN) an SAE of no latents
        raise InputError(f"--sae.d_sae is {cfg.sae.d_sae}: an SAE needs at least one latent (the presets use 8-16x d_in).")
    sae = dataclasses.replace(cfg.sae, d_in=d_in, device=cfg.device)
    if cfg.sae.d_in != d_in:
        log(f"note: sae.d_in is the model's width at {cfg.hook_name}: {d_in} (the config said {cfg.sae.d_in}).")
    training_tokens, warning = round_training_tokens(cfg.training_tokens, cfg.train_batch_size_tokens)
    if warning:
        log(f"warning: {warning}")
    try:
        ready = dataclasses.replace(
            cfg,
            sae=sae,
            training_tokens=training_tokens,
            output_path=str(out) if out is not None else None,
            checkpoint_path=str(Path(out) / constants.CHECKPOINTS_SUBDIR) if out is not None and checkpoints else None,
            n_checkpoints=cfg.n_checkpoints if checkpoints else 0,
            resume_from_checkpoint=None,
        )
    except (TypeError, ValueError) as err:
        raise InputError(f"The training settings are inconsistent: {err}") from None
    check_buffer(ready)
    return ready
