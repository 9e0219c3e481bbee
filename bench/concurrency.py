"""Benchmark of visitors sharing one model through its queue; prints one JSON object.

N simulated visitors (threads, as Streamlit runs one script thread per session) each ask for a
steered generation (``sae_lib.generation.generate``, which holds ``queue_for(model).slot()``) at the same
moment. The baseline, measured in the same run: the same N requests sent one by one.

- ``wall_ratio``: total wall time concurrent / one by one (goal <= 1.1: queueing costs nothing extra);
- ``worst_wait_s``: the longest any visitor waited for the model (from asking to its first forward
  pass), next to the one-by-one time of a single request (the unavoidable wait is N - 1 of those);
- ``identical``: every visitor got exactly its one-by-one result (no steering leaked between them).

Median over ``--repeats`` rounds (alternating which mode goes first), after one warm-up request. Runs on the embedded default (built on
first use), or ``--model/--sae`` for another pair.

    python bench/concurrency.py [--visitors 4] [--tokens 30] [--samples 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass

import torch

from sae_lib.generation import GenerationResult, GenerationSettings, generate
from sae_lib.steering import SteeringSpec
from sae_lib.workspace import Workspace, load_workspace

PROMPTS = [
    "What are you? When you look in the mirror, what do you see?",
    "The ship left the harbour at dawn and",
    "In the kitchen the cook",
    "The old castle on the hill",
    "The players ran onto the field",
    "The doctor looked at the patient and",
    "Far above the planet, the rocket",
    "The farmer walked to the barn where",
]


@dataclass(frozen=True)
class Config:
    visitors: int = 4
    """Simulated visitors asking at the same moment."""
    tokens: int = 30
    """New tokens per sample."""
    samples: int = 3
    """Samples per request (one batch)."""
    repeats: int = 5
    """Rounds; the JSON reports medians."""
    model: str | None = None
    """Model source (default: the embedded demo)."""
    sae: str | None = None
    """SAE source (default: the embedded demo's)."""
    device: str | None = None
    """Device (default: auto)."""

    def __post_init__(self) -> None:
        if self.visitors < 1 or self.repeats < 1 or self.tokens < 1 or self.samples < 1:
            raise SystemExit("--visitors, --repeats, --tokens and --samples must be at least 1")


def requests_for(ws: Workspace, cfg: Config) -> list[tuple[str, list[SteeringSpec], GenerationSettings]]:
    """One steered request per visitor: its own prompt, latent (the most active ones) and seed."""
    if ws.index is not None:
        latents = torch.argsort(ws.index.max_act * (ws.index.count > 0), descending=True)[: cfg.visitors].tolist()
        max_acts = [float(ws.index.max_act[i]) for i in latents]
    else:
        latents, max_acts = list(range(cfg.visitors)), [1.0] * cfg.visitors
    return [
        (
            PROMPTS[v % len(PROMPTS)],
            [SteeringSpec(latents[v % len(latents)], "add", max_acts[v % len(latents)], coeff=4.0)],
            GenerationSettings(max_new_tokens=cfg.tokens, n_samples=cfg.samples, seed=v),
        )
        for v in range(cfg.visitors)
    ]


def one_by_one(ws: Workspace, reqs) -> tuple[float, list[GenerationResult]]:
    start = time.perf_counter()
    results = [generate(ws.model, ws.sae, p, s, g) for p, s, g in reqs]
    return time.perf_counter() - start, results


def concurrent(ws: Workspace, reqs) -> tuple[float, list[float], list[GenerationResult]]:
    """All visitors released at once; (total wall, each visitor's wait for the model, results)."""
    n = len(reqs)
    barrier = threading.Barrier(n + 1)
    waits: list[float] = [0.0] * n
    results: list[GenerationResult | None] = [None] * n
    errors: list[BaseException] = []

    def visitor(v: int) -> None:
        prompt, specs, settings = reqs[v]
        barrier.wait()
        asked = time.perf_counter()
        first: list[float] = []

        def progress(done: int, total: int) -> None:
            if not first:
                first.append(time.perf_counter())

        try:
            results[v] = generate(ws.model, ws.sae, prompt, specs, settings, progress=progress)
            waits[v] = first[0] - asked
        except BaseException as err:  # reported below: a bench must not hide a failure
            errors.append(err)

    threads = [threading.Thread(target=visitor, args=(v,)) for v in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return wall, waits, results  # type: ignore[return-value]


def same(a: GenerationResult, b: GenerationResult) -> bool:
    return torch.equal(a.normal_tokens, b.normal_tokens) and torch.equal(a.steered_tokens, b.steered_tokens)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Config()
    parser.add_argument("--visitors", type=int, default=d.visitors, help=f"visitors at once (default {d.visitors})")
    parser.add_argument("--tokens", type=int, default=d.tokens, help=f"new tokens per sample (default {d.tokens})")
    parser.add_argument("--samples", type=int, default=d.samples, help=f"samples per request (default {d.samples})")
    parser.add_argument("--repeats", type=int, default=d.repeats, help=f"rounds, medians reported (default {d.repeats})")
    parser.add_argument("--model", default=None, help="model source (default: the embedded demo)")
    parser.add_argument("--sae", default=None, help="SAE source (default: the embedded demo's)")
    parser.add_argument("--device", default=None, help="device (default: auto)")
    cfg = Config(**vars(parser.parse_args(argv)))

    ws = load_workspace(cfg.model, cfg.sae, device=cfg.device, fallback=False)
    reqs = requests_for(ws, cfg)
    generate(ws.model, ws.sae, *reqs[0])  # warm-up: first-call allocations and lazy imports
    seq_walls, conc_walls, worst_waits, identical = [], [], [], True
    for r in range(cfg.repeats):
        # Alternate which goes first, so a machine getting busier or quieter favours neither.
        if r % 2 == 0:
            seq_wall, seq_results = one_by_one(ws, reqs)
            conc_wall, waits, conc_results = concurrent(ws, reqs)
        else:
            conc_wall, waits, conc_results = concurrent(ws, reqs)
            seq_wall, seq_results = one_by_one(ws, reqs)
        seq_walls.append(seq_wall)
        conc_walls.append(conc_wall)
        worst_waits.append(max(waits))
        identical &= all(same(a, b) for a, b in zip(seq_results, conc_results))
    seq, conc = statistics.median(seq_walls), statistics.median(conc_walls)
    out = {
        "bench": "concurrency",
        "config": asdict(cfg),
        "device": str(next(ws.model.parameters()).device),
        "model": ws.model_source,
        "one_by_one_wall_s": round(seq, 3),
        "concurrent_wall_s": round(conc, 3),
        "wall_ratio": round(conc / seq, 3),
        "goal_wall_ratio_max": 1.1,
        "worst_wait_s": round(statistics.median(worst_waits), 3),
        "one_request_s": round(seq / cfg.visitors, 3),
        "worst_wait_in_requests": round(statistics.median(worst_waits) / (seq / cfg.visitors), 2),
        "identical": identical,
        "rounds": {"one_by_one_wall_s": [round(x, 3) for x in seq_walls],
                   "concurrent_wall_s": [round(x, 3) for x in conc_walls]},
    }  # fmt: skip
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
