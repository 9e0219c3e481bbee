"""Benchmark of explaining + scoring latents: latents per minute, batched vs one prompt at a time; prints JSON.

    python bench/explain.py                          # the demo model explains the demo SAE's latents, CPU
    python bench/explain.py --preset qwen3-8b        # a random-weight model of Qwen3-8B's shape explains (GPU)

Both presets read the demo's latent index (real excerpts, real prompt lengths) and run the same
``explain_and_score`` path as ``scripts/explain_latents.py``: one explanation prompt per latent and
about 80 scoring questions (detection and fuzzing, 10 + 10 excerpts each, with the shuffled baseline).
``demo`` explains with the loaded model (the app's path: through its generation engine's Hugging Face
module, and timed again on TransformerLens's ``generate`` for comparison); ``qwen3-8b`` with a Hugging Face ``Qwen3ForCausalLM``
of Qwen3-8B's shape (36 layers, 4096 wide, bf16) with random weights, since throughput depends on the
shape, not the weights (its answers are junk, and the output length is capped the same way).
The baseline, timed in the same run on the same latents, is the same work one prompt per batch.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sae_lib.explain.explainer import ExplainConfig, explain_and_score
from sae_lib.timing import sync


def qwen3_8b_shaped(tokenizer, device: str):
    """A random-weight ``Qwen3ForCausalLM`` with Qwen3-8B's configuration, in bf16 on ``device``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=151_936, hidden_size=4096, intermediate_size=12_288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40_960,
        rope_theta=1_000_000, tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="bfloat16",
    )  # fmt: skip
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    return model.eval()


def time_run(gen, index, latents, cfg: ExplainConfig, chunk: int) -> float:
    sync("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    for i in range(0, len(latents), chunk):
        explain_and_score(gen, index, latents[i : i + chunk], cfg, fallback_shuffled=lambda _: "text about something")
    sync("cuda" if torch.cuda.is_available() else "cpu")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["demo", "qwen3-8b"], default="demo")
    parser.add_argument("--latents", type=int, default=16, help="latents explained and scored per timing (default 16)")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per generation batch (default 64)")
    args = parser.parse_args(argv)

    from sae_lib.demo.build import ensure_demo
    from sae_lib.engine import engine_for, transformerlens_only
    from sae_lib.explain.generator import HFGenerator, LoadedModelGenerator
    from sae_lib.workspace import load_workspace

    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = ensure_demo()
    ws = load_workspace(str(paths.model), str(paths.sae), device=device if args.preset == "demo" else "cpu",
                        dtype="float32", fallback=False)  # fmt: skip
    index = ws.index
    latents = index.count.argsort(descending=True)[: args.latents].tolist()  # the most frequent: full excerpts
    cfg = ExplainConfig()
    if args.preset == "demo":
        batched = LoadedModelGenerator(ws.model, name="demo", batch_size=args.batch_size)
        single = LoadedModelGenerator(ws.model, name="demo", batch_size=1)
    else:
        model = qwen3_8b_shaped(ws.model.tokenizer, device)
        batched = HFGenerator.from_loaded(model, ws.model.tokenizer, "qwen3-8b-shaped", batch_size=args.batch_size)
        single = HFGenerator.from_loaded(model, ws.model.tokenizer, "qwen3-8b-shaped", batch_size=1)
    time_run(batched, index, latents[:2], cfg, chunk=2)  # warm-up
    t_batched = time_run(batched, index, latents, cfg, chunk=len(latents))
    t_tl = None
    if args.preset == "demo" and engine_for(ws.model) is not None:
        with transformerlens_only(ws.model):  # the same batches on TransformerLens's generate
            t_tl = time_run(batched, index, latents, cfg, chunk=len(latents))
    n_single = max(2, len(latents) // 4)  # one prompt at a time is slow: time a quarter, per latent
    t_single = time_run(single, index, latents[:n_single], cfg, chunk=n_single)
    per_min_batched = len(latents) / t_batched * 60
    per_min_single = n_single / t_single * 60
    print(json.dumps({
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "latents": len(latents),
        "batch_size": args.batch_size,
        "engine": args.preset == "demo" and engine_for(ws.model) is not None,
        "latents_per_minute_batched": round(per_min_batched, 2),
        "latents_per_minute_one_prompt_at_a_time": round(per_min_single, 2),
        "batched_vs_one_at_a_time": round(per_min_batched / per_min_single, 2),
        "latents_per_minute_batched_transformerlens": round(len(latents) / t_tl * 60, 2) if t_tl else None,
        "hours_for_65536_latents_batched": round(65_536 / per_min_batched / 60, 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
