"""Benchmark of the latent index pass (the embedded demo, or Qwen3-8B's shape on a GPU); prints JSON.

(a) ``pass_vs_bare``: the index pass's tokens/s divided by a bare model-to-hook + SAE-encode forward's
    tokens/s on the same tokens and batches (goal: >= 1/1.3, i.e. the statistics cost at most 30% on top);
(b) ``naive_vs_one_pass``: the write-up's per-latent loop (a forward over every batch per latent, keep one
    column, histogram and top rows of it) timed on a sample of latents and scaled to all latents, divided
    by the one-pass time.

Each timing is the best of ``--repeats`` runs, all in this process on this machine.
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch

from sae_lib import latent_index as li
from sae_lib.packing import pack_texts
from sae_lib.probe import encode_tokens
from sae_lib.random_models import QWEN3_8B, calibrated_sae, flagship_layer, random_model
from sae_lib.timing import timed


@torch.no_grad()
def bare_pass(model, sae, tokens: torch.Tensor, batch_size: int) -> None:
    for b in range(0, tokens.shape[0], batch_size):
        encode_tokens(model, sae, tokens[b : b + batch_size])


@torch.no_grad()
def naive_latent(model, sae, tokens: torch.Tensor, batch_size: int, latent: int, k: int, n_bins: int) -> None:
    """The write-up's ``show_activation_histogram`` for one latent, plus its top rows."""
    positives, row_max = [], []
    for b in range(0, tokens.shape[0], batch_size):
        acts = encode_tokens(model, sae, tokens[b : b + batch_size])[..., latent]  # (batch, ctx)
        positives.extend(acts[acts > 0].cpu().tolist())
        row_max.append(acts.max(dim=1).values)
    if positives:
        np.histogram(positives, bins=n_bins)
    torch.cat(row_max).topk(min(k, tokens.shape[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-latents-sample", type=int, default=8, help="latents timed with the naive loop (default: 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing, the best is kept (default: 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward (default: 32)")
    parser.add_argument("--context", type=int, default=128, help="tokens per row (default: 128)")
    parser.add_argument("--preset", choices=["demo", "qwen3-8b"], default="demo",
                        help="demo: the embedded model + SAE on its held-out stories (CPU); qwen3-8b: random "
                             "bfloat16 weights of Qwen3-8B's shape on the GPU, a calibrated 65,536-latent SAE on "
                             "block 28, random tokens (default: demo)")
    parser.add_argument("--n-seq", type=int, default=256, help="qwen3-8b: rows of random tokens (default: 256)")
    args = parser.parse_args(argv)

    if args.preset == "qwen3-8b":
        if not torch.cuda.is_available():
            raise SystemExit("The qwen3-8b preset needs a CUDA GPU (about 40 GB).")
        device = "cuda"
        model = random_model(QWEN3_8B, torch.bfloat16, device)
        calib = torch.randint(0, QWEN3_8B["vocab_size"], (32, 128), generator=torch.Generator().manual_seed(1))
        sae = calibrated_sae(model, f"blocks.{flagship_layer(QWEN3_8B)}.hook_mlp_out", 65536, calib)
        tokens = torch.randint(0, QWEN3_8B["vocab_size"], (args.n_seq, args.context),
                               generator=torch.Generator().manual_seed(2))
    else:
        from sae_lib.demo.build import ensure_demo, load_corpus_split
        from sae_lib.workspace import load_workspace

        device = "cpu"
        paths = ensure_demo()
        ws = load_workspace(str(paths.model), str(paths.sae), device=device, dtype="float32", fallback=False)
        model, sae = ws.model, ws.sae
        texts = [s["text"] for s in load_corpus_split(paths.root, "heldout")]
        tokens = pack_texts(texts, model.tokenizer, args.context, n_seq=10**6).tokens
    cfg = li.IndexConfig(batch_size=args.batch_size)
    n_tok = tokens.numel()

    bare_pass(model, sae, tokens[: args.batch_size], args.batch_size)  # warm-up
    t_bare = timed({"x": lambda: bare_pass(model, sae, tokens, args.batch_size)}, args.repeats, device, warmup=False)["x"]
    t_index = timed({"x": lambda: li.build_index(model, sae, tokens, cfg)}, args.repeats, device, warmup=False)["x"]
    d_sae = int(sae.cfg.d_sae)
    sample = random.Random(0).sample(range(d_sae), args.n_latents_sample)

    def naive_sample() -> None:
        for i in sample:
            naive_latent(model, sae, tokens, args.batch_size, i, cfg.top_k, cfg.n_bins)

    t_naive_all = timed({"x": naive_sample}, 1, device, warmup=False)["x"] / len(sample) * d_sae
    print(
        json.dumps(
            {
                "preset": args.preset,
                "device": str(sae.device),
                "torch_threads": torch.get_num_threads(),
                "tokens": n_tok,
                "d_sae": d_sae,
                "bare_tokens_per_s": round(n_tok / t_bare),
                "index_tokens_per_s": round(n_tok / t_index),
                "pass_vs_bare": round(t_bare / t_index, 3),
                "stats_overhead": round(t_index / t_bare - 1, 3),
                "goal_stats_overhead_at_most": 0.3,
                "naive_latents_timed": len(sample),
                "naive_all_latents_s_estimated": round(t_naive_all, 1),
                "one_pass_s": round(t_index, 3),
                "naive_vs_one_pass": round(t_naive_all / t_index, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
