"""Seconds to train the toy-model sweep batched (one model, an instance per sparsity level) vs one level at a time.

Both sides train the same levels with the same steps, batch and restarts through ``sae_lib.toy_model.train_toy``;
the loop side calls it once per level (``n_levels=1``), which is how the sweep would be trained without
an instance dimension. Goal: batched at least 3x faster (and the batched sweep inside the page's 3 s). Both run in this process, interleaved
``--repeats`` times, and the median of each is reported, so a busy machine slows both alike.

Prints one JSON object. Run: ``python bench/toy_model.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass

import torch

from sae_lib.toy_model import ToyConfig, train_toy


@dataclass
class BenchConfig:
    steps: int = ToyConfig.steps
    """Training steps per model (default: the page's default)."""
    repeats: int = 3
    """Times each side is timed (interleaved); the median is reported."""
    threads: int = 1
    """torch intra-op threads for this process; 1 measures the page's one-core budget."""
    seed: int = 0
    """Seed of the sweep."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.repeats < 1 or self.threads < 1:
            raise SystemExit("--steps, --repeats and --threads must be at least 1.")


def time_batched(cfg: ToyConfig) -> tuple[float, float]:
    """(wall, CPU) seconds to train every level at once."""
    wall, cpu = time.perf_counter(), time.process_time()
    train_toy(cfg)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_loop(cfg: ToyConfig) -> tuple[float, float]:
    """(wall, CPU) seconds to train the same levels one at a time."""
    wall, cpu = time.perf_counter(), time.process_time()
    for p in cfg.feature_probability().tolist():
        train_toy(dataclasses.replace(cfg, n_levels=1, min_probability=p, max_probability=p))
    return time.perf_counter() - wall, time.process_time() - cpu


def run(bench: BenchConfig) -> dict[str, object]:
    cfg = ToyConfig(steps=bench.steps, seed=bench.seed)
    batched, loop = [], []
    for _ in range(bench.repeats):
        batched.append(time_batched(cfg))
        loop.append(time_loop(cfg))
    batched_s, loop_s = (statistics.median(t[0] for t in ts) for ts in (batched, loop))
    # CPU seconds as well: on a shared machine wall time also counts other people's processes.
    batched_cpu, loop_cpu = (statistics.median(t[1] for t in ts) for ts in (batched, loop))
    return {
        "config": dataclasses.asdict(cfg),
        "threads": torch.get_num_threads(),
        "batched_s": round(batched_s, 3),
        "loop_s": round(loop_s, 3),
        "batched_cpu_s": round(batched_cpu, 3),
        "loop_cpu_s": round(loop_cpu, 3),
        "speedup": round(loop_s / batched_s, 2),
        "goal_speedup": 3.0,
        "meets_goal": loop_s / batched_s >= 3.0,
        "page_budget_s": 3.0,
        "batched_within_page_budget": batched_s <= 3.0,
    }


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    d = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=d.steps, help=f"training steps per model (default: {d.steps})")
    parser.add_argument(
        "--repeats", type=int, default=d.repeats,
        help=f"timings per side, interleaved; the median is reported (default: {d.repeats})",
    )
    parser.add_argument(
        "--threads", type=int, default=d.threads,
        help=f"torch intra-op threads; 1 measures the page's one-core budget (default: {d.threads})",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of the sweep (default: {d.seed})")
    return BenchConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    bench = parse_args(argv)
    torch.set_num_threads(bench.threads)  # a script's own process: the library never sets this
    print(json.dumps(run(bench), indent=2))


if __name__ == "__main__":
    main()
