"""One place for every bound on what a visitor can ask for.

Each bound can be changed with an environment variable (``LATENT_LAB_MAX_<NAME>``), so a Space on a
big GPU can allow more than the CPU demo. Pages read ``LIMITS`` for their widget ranges and call
the ``check_*`` helpers, which raise :class:`InputError` with a message that says what to change.
"""

import dataclasses
import os
from dataclasses import dataclass

from sae_lib.errors import InputError


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

    @classmethod
    def from_env(cls, environ: "os._Environ[str] | dict[str, str] | None" = None) -> "Limits":
        """Read ``LATENT_LAB_MAX_PROMPT_CHARS`` etc.; a malformed value is an :class:`InputError`."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            key = "LATENT_LAB_" + field.name.upper()
            if key in environ:
                try:
                    value = field.type(environ[key]) if isinstance(field.type, type) else float(environ[key])
                except ValueError:
                    raise InputError(f"{key}={environ[key]!r} is not a number; unset it or give a number.") from None
                if value <= 0:
                    raise InputError(f"{key} must be positive, got {environ[key]!r}.")
                values[field.name] = value
        return cls(**values)


LIMITS = Limits.from_env()


def check_prompt(prompt: str, limits: Limits = LIMITS) -> str:
    """Return the prompt if it is usable, else raise :class:`InputError` saying why."""
    if not prompt or not prompt.strip():
        raise InputError("The prompt is empty: type some text to run the model on.")
    if len(prompt) > limits.max_prompt_chars:
        raise InputError(
            f"The prompt has {len(prompt):,} characters; the limit is {limits.max_prompt_chars:,}. "
            "Shorten it (a few sentences are enough to steer or inspect)."
        )
    return prompt


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Raise :class:`InputError` unless ``low <= value <= high``."""
    if not (low <= value <= high):
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {value:g}.")
    return value
