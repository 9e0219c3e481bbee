"""Benchmark of steered generation; prints one JSON object.

Figures, each a ratio against a baseline measured in the same run:
- tokens/s of the engine (``sae_lib.engine``: the Hugging Face module generating, our path) steered vs
  unsteered (goal: steering costs at most 5%);
- the engine vs today's TransformerLens ``generate`` path on the same weights (goal on 2 CPU cores:
  at least 1.3x) and vs Hugging Face ``generate`` (goal: at least 0.95x);
- 5 samples as one batch vs 5 sequential runs (goal: at least 3x faster on a GPU);
- on a GPU, tokens/s against the memory-bandwidth bound (weight bytes / bandwidth per step).

Presets: ``demo`` (the embedded model + SAE, must be built), ``demo-shape`` (random weights of the
demo's shape, runs anywhere in seconds), ``qwen3-8b`` (random weights of the exact Qwen3-8B shape in
bfloat16 built on the GPU, a 65,536-latent SAE on block 28 with calibrated thresholds; needs ~40 GB).
``bench/gpu.py`` is the one-command flagship run.

    python bench/steering.py --preset demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Literal

import torch

from sae_lib import constants
from sae_lib.engine import engine_for, transformerlens_only
from sae_lib.limits import LIMITS
from sae_lib.random_models import DEMO_SHAPE, QWEN3_8B, calibrated_sae, flagship_layer, l0_of, random_model
from sae_lib.generation import GenerationSettings, sample_tokens
from sae_lib.steering import SteeringHook, SteeringSpec
from sae_lib.timing import sync, timed

Preset = Literal["demo", "demo-shape", "qwen3-8b"]


@dataclass
class BenchConfig:
    preset: Preset = "demo-shape"
    """demo: the embedded model + SAE; demo-shape: random weights of its shape; qwen3-8b: random 8B, bf16, GPU."""
    samples: int = 5
    """Samples per generation (one batch)."""
    new_tokens: int = 50
    """Tokens generated per sample (no early stop, so every run does the same work)."""
    prompt_tokens: int = 16
    """Prompt length in tokens (random token ids for the random presets)."""
    repeats: int = 9
    """Timed repeats per figure; the fastest is reported (one untimed warm-up first)."""
    d_sae: int = 0
    """SAE width for random presets (0: 8x d_model for demo-shape, 65536 for qwen3-8b)."""
    bandwidth_gbs: float = 3350.0
    """GPU memory bandwidth in GB/s for the bound (H100 SXM: 3350; H200: 4800)."""

    def __post_init__(self) -> None:
        if self.preset == "qwen3-8b" and not torch.cuda.is_available():
            raise SystemExit("The qwen3-8b preset needs a CUDA GPU (about 40 GB); use --preset demo-shape here.")
        if min(self.samples, self.new_tokens, self.prompt_tokens, self.repeats) < 1:
            raise SystemExit("samples, new_tokens, prompt_tokens and repeats must be at least 1.")
        if self.new_tokens > LIMITS.max_new_tokens or self.samples > LIMITS.max_samples:
            raise SystemExit(f"At most {LIMITS.max_new_tokens} tokens and {LIMITS.max_samples} samples "
                             "(raise LATENT_LAB_MAX_NEW_TOKENS / LATENT_LAB_MAX_SAMPLES).")


def load(cfg: BenchConfig):
    """(HookedTransformer with its engine, SAE, device): the demo as the app loads it, or random weights."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.preset == "demo":
        from sae_lib.workspace import load_workspace

        root = constants.demo_dir()
        if not (root / constants.DEMO_BUILD_MANIFEST).exists():
            raise SystemExit(f"No built demo in {root}: build it first (scripts/build_demo.py) or set {constants.ENV_DEMO_DIR}.")
        ws = load_workspace(str(root / constants.DEMO_MODEL_SUBDIR), str(root / constants.DEMO_SAE_SUBDIR),
                            device=device, dtype="float32", fallback=False)
        return ws.model, ws.sae, device
    shape, dtype = (QWEN3_8B, torch.bfloat16) if cfg.preset == "qwen3-8b" else (DEMO_SHAPE, torch.float32)
    model = random_model(shape, dtype, device)
    d_sae = cfg.d_sae or (65536 if cfg.preset == "qwen3-8b" else 8 * shape["hidden_size"])
    calib = torch.randint(0, shape["vocab_size"], (32, 128), generator=torch.Generator().manual_seed(1))
    sae = calibrated_sae(model, f"blocks.{flagship_layer(shape)}.hook_mlp_out", d_sae, calib)
    return model, sae, device


def run(cfg: BenchConfig) -> dict:
    model, sae, device = load(cfg)
    engine = engine_for(model)
    if engine is None:
        raise SystemExit("This model has no generation engine (unsupported architecture): nothing to compare.")
    n, t = cfg.samples, cfg.new_tokens
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.cfg.d_vocab, (1, cfg.prompt_tokens), generator=g).to(device)
    batch = prompt.expand(n, -1)
    settings = GenerationSettings(max_new_tokens=t, n_samples=1, stop_at_eos=False)  # write-up defaults
    no_penalty = dataclasses.replace(settings, freq_penalty=0.0)
    spec = [SteeringSpec(0, "write-up clamp", max_act=1.0)]
    ours = lambda toks, specs=(), s=settings: sample_tokens(model, sae, toks, list(specs), s)  # noqa: E731

    def transformerlens(s=settings):
        with transformerlens_only(model):
            return sample_tokens(model, sae, batch, [], s)

    def hf_generate():
        # The same weights (the engine's module), Hugging Face's own sampling loop; no frequency penalty
        # (HF's repetition_penalty is a different, multiplicative rule), so it does slightly less work.
        with torch.inference_mode():
            engine.hf.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=t, min_new_tokens=t,
                               do_sample=True, temperature=settings.temperature, top_k=None, top_p=None,
                               use_cache=True, pad_token_id=0)

    s = timed(
        {
            "normal": lambda: ours(batch),
            "steered": lambda: ours(batch, spec),
            "sequential": lambda: [ours(prompt) for _ in range(n)],
            "normal_no_penalty": lambda: ours(batch, (), no_penalty),
            "transformerlens": transformerlens,
            "transformerlens_no_penalty": lambda: transformerlens(no_penalty),
            "hf": hf_generate,
        },
        cfg.repeats,
        device,
    )
    # The hook's own cost, isolated from machine noise: one decode step's activation, many calls.
    hook = SteeringHook(sae, spec, "all", cfg.prompt_tokens)
    act = torch.randn(n, 1, int(sae.cfg.d_in), device=device, dtype=next(model.parameters()).dtype)
    calls = 200
    with torch.inference_mode():
        hook(act)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            hook(act)
        sync(device)
    hook_s_per_step = (time.perf_counter() - t0) / calls
    new = n * t
    rate = {k: round(new / v, 1) for k, v in s.items()}
    out = {
        "preset": cfg.preset,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "engine": engine.mode,
        "samples": n,
        "new_tokens": t,
        "d_sae": int(sae.cfg.d_sae),
        "sae_hook": sae.cfg.metadata.hook_name,
        "sae_l0_on_random_tokens": round(l0_of(model, sae, batch), 1),
        "unsteered_tokens_per_s": rate["normal"],
        "steered_tokens_per_s": rate["steered"],
        "steering_overhead": round(s["steered"] / s["normal"] - 1, 4),
        "steering_overhead_goal": "<= 0.05",
        "hook_seconds_per_step": round(hook_s_per_step, 7),
        "hook_share_of_unsteered_step": round(hook_s_per_step * t / s["normal"], 4),
        "sequential_tokens_per_s": rate["sequential"],
        "batched_speedup_over_sequential": round(s["sequential"] / s["normal"], 2),
        "batched_speedup_goal": ">= 3 on GPU",
        "transformerlens_tokens_per_s": rate["transformerlens"],
        "engine_over_transformerlens": round(s["transformerlens"] / s["normal"], 3),
        "engine_over_transformerlens_no_penalty": round(s["transformerlens_no_penalty"] / s["normal_no_penalty"], 3),
        "engine_over_transformerlens_goal": ">= 1.3 on 2 CPU cores",
        "hf_generate_tokens_per_s": rate["hf"],
        "engine_over_hf_generate": round(s["hf"] / s["normal"], 3),
        "engine_no_penalty_over_hf_generate": round(s["hf"] / s["normal_no_penalty"], 3),
        "engine_over_hf_generate_goal": ">= 0.95",
    }
    if device == "cuda":
        weight_bytes = sum(p.numel() * p.element_size() for p in engine.hf.parameters())
        bound = n * cfg.bandwidth_gbs * 1e9 / weight_bytes  # every step reads every weight once
        out.update(
            weight_gb=round(weight_bytes / 1e9, 2),
            bandwidth_bound_tokens_per_s=round(bound, 1),
            unsteered_fraction_of_bound=round(new / s["normal"] / bound, 3),
        )
    return out


HELP = {
    "preset": "demo: the embedded model + SAE (built); demo-shape: random weights of its shape; "
              "qwen3-8b: random weights of the Qwen3-8B shape in bfloat16 (GPU).",
    "samples": "Samples per generation, run as one batch.",
    "new_tokens": "Tokens generated per sample (no early stop, so every run does the same work).",
    "prompt_tokens": "Prompt length in tokens (random token ids).",
    "repeats": "Timed repeats per figure; the fastest is reported, after one untimed warm-up.",
    "d_sae": "SAE width for the random presets (0: 8 x d_model for demo-shape, 65536 for qwen3-8b).",
    "bandwidth_gbs": "GPU memory bandwidth in GB/s for the bound (H100 SXM 3350, H200 4800).",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(BenchConfig):
        kind = str if f.name == "preset" else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default,
                            choices=["demo", "demo-shape", "qwen3-8b"] if f.name == "preset" else None,
                            help=f"{HELP[f.name]} (default: {f.default})")
    args = parser.parse_args(argv)
    print(json.dumps(run(BenchConfig(**vars(args))), indent=2))


if __name__ == "__main__":
    main()
