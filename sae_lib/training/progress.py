"""The training progress line: step, tokens done, tokens/s and time left, at most every few seconds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Log = Callable[[str], None]


class Progress:
    """Prints ``step | tokens done | tokens/s | time left`` at most every ``every_s`` seconds."""

    def __init__(self, total_tokens: int, start_tokens: int, total_steps: int, log: Log, every_s: float = 10.0):
        self.total_tokens = total_tokens
        self.start_tokens = start_tokens
        self.total_steps = total_steps
        self.log = log
        self.every_s = every_s
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def line(self, tokens: int, step: int, now: float) -> str:
        done = tokens - self.start_tokens
        elapsed = max(now - self.t0, 1e-9)
        rate = done / elapsed
        left = (self.total_tokens - tokens) / rate if rate > 0 else math.inf
        return (
            f"step {step:,}/{self.total_steps:,} | tokens {tokens:,}/{self.total_tokens:,} "
            f"({100 * tokens / self.total_tokens:.1f}%) | {rate:,.0f} tok/s | {duration(left)} left"
        )

    def update(self, tokens: int, step: int, force: bool = False) -> None:
        now = time.perf_counter()
        if self.last == -math.inf and not force:
            # Rate from the first step on: the activation-norm estimate before it is a one-off.
            self.t0, self.start_tokens, self.last = now, tokens, now
            return
        if force or now - self.last >= self.every_s:
            self.last = now
            self.log(self.line(tokens, step, now))


def duration(seconds: float) -> str:
    """``1h05m``, ``3m07s``, ``42s``; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
