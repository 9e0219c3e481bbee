"""One place for every bound on what a visitor can ask for, and for running out of GPU memory.

Each bound can be changed with an environment variable (``LATENT_LAB_MAX_<NAME>``, see
:func:`env_var`), so a Space on a big GPU can allow more than the CPU demo. Pages read ``LIMITS`` for
their widget ranges and call the ``check_*`` helpers, which raise :class:`InputError` with a message
that says what to change. Work that may run out of accelerator memory runs inside :func:`oom_guard`.
"""

import dataclasses
import gc
import math
import os
import traceback
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sae_lib.errors import InputError

ENV_PREFIX = "LATENT_LAB_"


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 2000
    """Longest prompt accepted, in characters (checked before tokenizing)."""
    max_prompt_tokens: int = 256
    """Longest prompt accepted, in tokens."""
    max_new_tokens: int = 200
    """Most tokens one generation may add."""
    max_samples: int = 10
    """Most samples generated at once (as one batch)."""
    max_sweep_points: int = 21
    """Most multiplier values in one dose-response sweep."""
    max_steered_latents: int = 8
    """Most latents steered at once."""
    max_multiplier: float = 200.0
    """Largest absolute steering multiplier / coefficient."""
    max_temperature: float = 2.0
    """Highest sampling temperature (0 is greedy)."""
    max_freq_penalty: float = 10.0
    """Largest frequency penalty (subtracted from temperature-scaled logits per earlier use)."""
    max_toy_features: int = 20
    """Most features in the Theory page's toy model of superposition."""
    max_toy_levels: int = 16
    """Most sparsity levels trained at once in the toy model sweep."""
    max_toy_steps: int = 10000
    """Most training steps for the toy model (and its tiny SAE)."""
    max_latent_activation: float = 10000.0
    """Largest max activation a visitor may steer with (the unit of every multiplier). Real latents peak in
    the tens to hundreds; without a bound ``1e308`` times a multiplier overflows to inf and the model's
    logits turn NaN."""
    max_seed: int = 2**31 - 1
    """Largest random seed a visitor may type."""
    max_text_chars: int = 2_000_000
    """Longest text any text box accepts (its ``max_chars``). The browser silently ignores a paste longer
    than a box's ``max_chars``, so this sits far above ``max_prompt_chars``: a paste that is only too long
    for a prompt reaches the server and is refused with a message giving its length."""

    def __post_init__(self) -> None:
        # A bound of 0, a negative one or NaN would turn every widget range upside down.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"Limit {field.name} must be a number, got {value!r}.")
            if not math.isfinite(value) or value <= 0:
                raise InputError(
                    f"{env_var(field.name)} must be a positive finite number, got {value!r}; unset it or fix it."
                )
        # The Theory page's smallest meaningful widgets: superposition needs 3 features (2 hidden neurons
        # fewer than them is the point), and its steps slider moves in hundreds.
        for name, floor in (("max_toy_features", 3), ("max_toy_steps", 100)):
            if getattr(self, name) < floor:
                raise InputError(f"{env_var(name)} must be at least {floor}, got {getattr(self, name)!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Limits":
        """Read ``LATENT_LAB_MAX_PROMPT_CHARS`` etc.; a malformed value is an :class:`InputError`.

        A ``LATENT_LAB_MAX_*`` variable that names no bound is refused too: a typo in a Space's
        settings would otherwise silently keep the default.
        """
        environ = os.environ if environ is None else environ
        names = {env_var(f.name): f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX + "MAX_") and k not in names)
        if unknown:
            raise InputError(
                f"Unknown limit variable(s) {', '.join(unknown)}; the limits are {', '.join(sorted(names))}."
            )
        values: dict[str, int | float] = {}
        for key, field in names.items():
            if key not in environ:
                continue
            raw = environ[key].strip()
            try:
                value: int | float = int(raw) if field.type in (int, "int") else float(raw)
            except ValueError:
                kind = "a whole number" if field.type in (int, "int") else "a number"
                raise InputError(f"{key}={environ[key]!r} is not {kind}; unset it or give {kind}.") from None
            values[field.name] = value
        return cls(**values)


def env_var(field_name: str) -> str:
    """The environment variable that sets a bound: ``max_samples`` -> ``LATENT_LAB_MAX_SAMPLES``."""
    return ENV_PREFIX + field_name.upper()


LIMITS = Limits.from_env()

# Characters a prompt may contain that show nothing: control characters (``Cc``, tab and newlines
# included) and format characters (``Cf``: zero-width spaces, bidi marks and overrides).
_INVISIBLE_CATEGORIES = ("Cc", "Cf")


def _has_visible_text(prompt: str) -> bool:
    return any(not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in prompt)


def check_prompt(prompt: str, limits: Limits = LIMITS) -> str:
    """Return the prompt if it is usable, else raise :class:`InputError` saying why.

    Any Unicode text is accepted as is (the tokenizers are byte-level, so right-to-left scripts,
    emoji and control characters all have tokens); the prompt only has to show something and fit
    the length limit. Length is checked first, so a pasted novel is refused without scanning it.
    """
    if not isinstance(prompt, str):
        raise InputError(f"The prompt must be text, got {type(prompt).__name__}.")
    if len(prompt) > limits.max_prompt_chars:
        raise InputError(
            f"The prompt has {len(prompt):,} characters; the limit is {limits.max_prompt_chars:,}. "
            "Shorten it (a few sentences are enough to steer or inspect)."
        )
    if not _has_visible_text(prompt):
        raise InputError("The prompt is empty (nothing but spaces or invisible characters): type some text.")
    return prompt


def _number(value: float) -> str:
    """A bound or value as a person reads it: whole numbers in full with separators, others short."""
    if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:g}"


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Raise :class:`InputError` unless ``low <= value <= high`` (NaN is never in range)."""
    if not (low <= value <= high):
        raise InputError(f"{name} must be between {_number(low)} and {_number(high)}, got {_number(value)}.")
    return value


def free_accelerator_memory() -> None:
    """Drop unreachable tensors and give cached GPU blocks back, so the next visitor starts clean."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()


@contextmanager
def oom_guard(what: str = "generating", limits: Limits = LIMITS) -> Iterator[None]:
    """Turn running out of accelerator memory inside the ``with`` into an :class:`InputError`.

    The failed frames' locals (the half-built activations) are cleared before the cache is emptied:
    the exception's traceback would otherwise keep them alive while the ``with`` statement unwinds,
    and ``empty_cache`` could give nothing back. So the memory is free when the visitor is told to
    ask for less, and the app keeps serving.
    """
    # torch is imported here, not at module level, so reading the limits (the start script's check,
    # every page) does not pay for importing torch.
    import torch

    failed = False
    try:
        yield
    except torch.OutOfMemoryError as err:
        traceback.clear_frames(err.__traceback__)
        failed = True
    if failed:
        free_accelerator_memory()
        raise InputError(
            f"The GPU ran out of memory while {what}. Lower the number of samples or of tokens to generate "
            f"(this server allows up to {limits.max_samples} samples and {limits.max_new_tokens} tokens, "
            "but not always both at once) and try again."
        ) from None
