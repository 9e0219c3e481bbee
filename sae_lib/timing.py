"""Timing that means what it says: CUDA synchronized around every call, calls interleaved."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer reads what the GPU did and not what was queued."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device | str,
          warmup: bool = True) -> dict[str, float]:
    """Fastest seconds per call of each function, CUDA synchronized around every call, calls interleaved
    round-robin. The minimum, not the median: on a shared machine (the 2-core CI box runs other jobs)
    every disturbance only adds time, so the fastest call is the least disturbed measurement of each."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    if warmup:
        for fn in fns.values():  # allocator, kernels, caches, compiled graphs
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}
