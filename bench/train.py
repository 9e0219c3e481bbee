"""Benchmark: SAE training throughput on the demo preset vs the bare model forward to the hook.

    python bench/train.py [--model DIR] [--training-tokens N]

Prints JSON. ``train_tokens_per_s`` is SAELens's training loop (activation generation included, as
in a real run, plus the one-off activation-norm estimate); ``forward_tokens_per_s`` is the model
alone run to the hook (``stop_at_layer``) on the same rows, batch shape and process.
``train_over_forward_cost`` = forward tok/s / train tok/s: how many times slower training is than
just generating the activations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name

from sae_lib.demo.data import demo_corpus_rows
from sae_lib.timing import sync
from sae_lib.training import TrainJob, preset_config, train


def forward_tokens_per_s(model, rows: torch.Tensor, hook: str, batch_prompts: int, min_tokens: int, device: str) -> float:
    stop = extract_stop_at_layer_from_tlens_hook_name(hook)
    sync(device)
    done, t0, i = 0, time.perf_counter(), 0
    with torch.no_grad():
        while done < min_tokens:
            batch = rows[(torch.arange(batch_prompts) + i) % len(rows)]  # (batch_prompts, context)
            model.run_with_cache(batch, names_filter=[hook], stop_at_layer=stop)
            done += batch.numel()
            i += batch_prompts
    sync(device)
    return done / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    cfg = preset_config("demo")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="Model folder (default: the embedded demo model, built if missing).")
    parser.add_argument("--training-tokens", type=int, default=cfg.training_tokens,
                        help=f"Tokens to train on (default: the demo preset's {cfg.training_tokens:,}).")
    args = parser.parse_args(argv)
    from sae_lib.model import load_model

    if args.model is None:
        from sae_lib.demo.build import ensure_demo

        model_source = str(ensure_demo().model)
    else:
        model_source = args.model
    model = load_model(model_source, device=cfg.device, dtype=cfg.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        job = TrainJob(out=Path(tmp) / "sae", preset="demo", evals=False, progress_every_s=1e9)
        run_cfg = dataclasses.replace(cfg, training_tokens=args.training_tokens, n_checkpoints=0)
        result = train(job, run_cfg, model, log=lambda _: None)
    stats = result.stats
    rows = demo_corpus_rows(model.tokenizer, cfg.context_size, seed=cfg.seed).train
    fwd = forward_tokens_per_s(model, rows, cfg.hook_name, cfg.store_batch_size_prompts,
                               min_tokens=min(args.training_tokens, 200_000), device=cfg.device)
    train_tps = stats.tokens_this_run / stats.train_seconds
    print(json.dumps({
        "preset": "demo",
        "model": Path(model_source).name,
        "device": cfg.device,
        "training_tokens": stats.n_training_samples,
        "train_seconds": round(stats.train_seconds, 2),
        "train_tokens_per_s": round(train_tps, 1),
        "forward_tokens_per_s": round(fwd, 1),
        "train_over_forward_cost": round(fwd / train_tps, 3),
        "torch_threads": torch.get_num_threads(),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
