"""Benchmark of the latent index pass's co-occurrence tables at the flagship's width; prints JSON.

The index pass's statistics at Qwen3-8B's shape cost more than its goal (issue 11: +31% over the bare
forward on an H100), mostly in the two Misra-Gries tables (:mod:`sae_lib.heavy_hitters`): tokens per
latent (~600k firings a batch) and co-firing latents (~4M pairs a batch). This times them on this
machine with no model: a synthetic stream of firing entries of the flagship's size (65,536 latents,
an L0 of 145 over a Zipf-like latent popularity, batches of 32 x 128 tokens, Qwen3's vocabulary),
through today's tables and through a baseline kept here, the tables as they were before (two stable
sorts per merge, a merge every batch). Today's co-firing "table" is no table: the sampled positions'
firing latents, kept, and every pair counted exactly at the end (``SampledPositions``; the bounded
table could not rank partners at this L0), so its figure is that end spread over the batches, against
the old table. Both see the same batches in the same run; the figure is each
table's time per batch over the stream, the merge that reads the table at the end included (two
runs of each, interleaved, the faster kept).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sae_lib.cooccurrence import CountsAccumulator
from sae_lib.heavy_hitters import ExactCounts, HeavyHitters


class BaselineHeavyHitters(HeavyHitters):
    """The tables before: every batch merged at once (``merge_at=0``), rows ordered by two stable sorts."""

    def __init__(self, n_rows: int, n_items: int, k: int):
        super().__init__(n_rows, n_items, k, merge_at=0)

    @staticmethod
    def _by_row_then_count(row: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
        order = summed.argsort(descending=True, stable=True)
        return order[row[order].argsort(stable=True)]


def stream(d_sae: int, vocab: int, n_pos: int, l0: int, n_batches: int):
    """``n_batches`` of (tokens, positions, latents): distinct firing entries sorted by position."""
    popularity = 1.0 / torch.arange(1, d_sae + 1).float() ** 0.6
    token_freq = 1.0 / torch.arange(1, vocab + 1).float()
    out = []
    for seed in range(n_batches):
        g = torch.Generator().manual_seed(seed)
        lat = torch.multinomial(popularity, n_pos * l0, replacement=True, generator=g).view(n_pos, l0)
        key = torch.unique(torch.arange(n_pos)[:, None] * d_sae + lat)  # sorted by position, distinct
        toks = torch.multinomial(token_freq, n_pos, replacement=True, generator=g)
        out.append((toks, key // d_sae, key % d_sae))
    return out


def time_tables(acc: CountsAccumulator, batches) -> dict[str, float]:
    """Seconds per batch of each table over ``batches``, reading each table once at the end."""
    t_tok = t_co = 0.0
    for toks, pos, lat in batches:
        t0 = time.perf_counter()
        acc.tokens.update(lat, toks[pos])
        t1 = time.perf_counter()
        acc._cofire(pos, lat, len(toks))
        t_co += time.perf_counter() - t1
        t_tok += t1 - t0
    t0 = time.perf_counter()
    acc.tokens.top()
    t1 = time.perf_counter()
    acc.cofire.top()
    t_co += time.perf_counter() - t1
    t_tok += t1 - t0
    return {"tokens": t_tok / len(batches), "cofire": t_co / len(batches)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-sae", type=int, default=65536, help="latents (default: 65,536, the flagship's)")
    parser.add_argument("--l0", type=int, default=145, help="latents firing per token (default: 145)")
    parser.add_argument("--batches", type=int, default=8, help="batches of 32 x 128 tokens (default: 8)")
    args = parser.parse_args(argv)
    vocab, n_pos = 151_936, 32 * 128
    batches = stream(args.d_sae, vocab, n_pos, args.l0, args.batches)

    def accumulator(baseline: bool) -> CountsAccumulator:
        acc = CountsAccumulator(args.d_sae, vocab, seed=0)
        if baseline:  # same shapes, the old merge
            acc.tokens = BaselineHeavyHitters(args.d_sae, vocab, acc.tokens.k)
            acc.cofire = BaselineHeavyHitters(args.d_sae, args.d_sae, acc.cofire.k)
        return acc

    if isinstance(accumulator(False).cofire, ExactCounts):
        raise SystemExit(f"{args.d_sae} latents are counted exactly (a dense table): pick a larger --d-sae.")
    time_tables(accumulator(False), batches[:2])  # warm-up: allocator, first calls
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(2):  # interleaved, fastest kept: a shared machine only ever adds time
        for baseline in (True, False):
            runs[baseline].append(time_tables(accumulator(baseline), batches))
    now, before = ({k: min(r[k] for r in runs[b]) for k in ("tokens", "cofire")} for b in (False, True))
    print(json.dumps({
        "device": "cpu", "torch_threads": torch.get_num_threads(), "d_sae": args.d_sae, "l0": args.l0,
        "tokens_per_batch": n_pos, "batches": args.batches,
        "firing_entries_per_batch": round(sum(len(p) for _, p, _ in batches) / len(batches)),
        "token_table_ms_per_batch": {"now": round(1000 * now["tokens"], 1), "before": round(1000 * before["tokens"], 1),
                                     "ratio": round(now["tokens"] / before["tokens"], 3)},
        "cofire_table_ms_per_batch": {"now": round(1000 * now["cofire"], 1), "before": round(1000 * before["cofire"], 1),
                                      "ratio": round(now["cofire"] / before["cofire"], 3)},
    }, indent=2))


if __name__ == "__main__":
    main()
