"""Errors whose message is meant for the person using the app or a script.

Every message says what went wrong and what to do about it; pages show ``str(err)`` as is,
scripts print it and exit non-zero. Anything else that escapes is a bug.
"""


def quoted(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters (a pasted page or a crafted URL must not
    fill the screen)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} characters)"


class LatentLabError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` is the message to show."""


class ModelLoadError(LatentLabError):
    """The language model could not be loaded (missing folder, bad weights, offline Hub id, ...)."""


class SAELoadError(LatentLabError):
    """The SAE could not be loaded (missing folder, pickle-only checkpoint, bad weights, ...)."""


class CompatibilityError(LatentLabError):
    """Two artifacts do not belong together (SAE vs model hook/width, index vs SAE)."""


class InputError(LatentLabError):
    """A value a visitor typed or a script was given is out of bounds or malformed."""


class GenerationError(LatentLabError):
    """A generation failed part-way (out of memory, a numerical error); the model is left unchanged."""
