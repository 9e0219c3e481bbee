"""Benchmark of steered generation; prints one JSON object.

Figures, each a ratio against a baseline measured in the same run:
- tokens/s of steered vs unsteered TransformerLens generation (goal: steering costs at most 5%);
- 5 samples as one batch vs 5 sequential runs (goal: at least 3x faster on a GPU);
- TransformerLens generation vs Hugging Face ``generate`` on the same weights;
- on a GPU, tokens/s against the memory-bandwidth bound (weight bytes / bandwidth per step).

Presets: ``demo`` (the embedded model + SAE, must be built), ``demo-shape`` (random weights of the
demo's shape, runs anywhere in seconds), ``qwen3-8b`` (random weights of the exact Qwen3-8B shape in
bfloat16; needs a GPU with ~40 GB).

    python bench/steering.py --preset demo-shape
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Literal

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as lp
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

from sae_lib import constants
from sae_lib.limits import LIMITS
from sae_lib.steering import GenerationSettings, SteeringHook, SteeringSpec, sample_tokens

Preset = Literal["demo", "demo-shape", "qwen3-8b"]

QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
DEMO_SHAPE = dict(
    vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, max_position_embeddings=512, tie_word_embeddings=True,
)


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
    repeats: int = 5
    """Timed repeats per figure; the median is reported (one untimed warm-up first)."""
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


def _hf_to_tl(hf: Qwen3ForCausalLM, dtype: torch.dtype, device: str) -> HookedTransformer:
    """TransformerLens model holding the same weights as ``hf`` (config read from a saved config.json)."""
    with tempfile.TemporaryDirectory() as tmp:
        hf.config.save_pretrained(tmp)
        cfg = lp.get_pretrained_model_config(tmp, device=device, dtype=dtype)
        state = lp.get_pretrained_state_dict(tmp, cfg, hf_model=hf, dtype=dtype)
    cfg.tokenizer_name = None  # random weights, token-id prompts: no tokenizer to load
    model = HookedTransformer(cfg, move_to_device=False)
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )
    return model.to(device).eval()


def _random_sae(d_in: int, d_sae: int, hook: str, device: str) -> JumpReLUSAE:
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_dec.normal_().div_(sae.W_dec.norm(dim=1, keepdim=True))
    return sae.to(device).eval()


def load(cfg: BenchConfig):
    """(TransformerLens model, SAE, Hugging Face model with the same weights, device)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.preset == "demo":
        from sae_lib.workspace import load_workspace

        root = constants.demo_dir()
        if not (root / constants.DEMO_BUILD_MANIFEST).exists():
            raise SystemExit(f"No built demo in {root}: build it first (scripts/build_demo.py) or set {constants.ENV_DEMO_DIR}.")
        ws = load_workspace(str(root / constants.DEMO_MODEL_SUBDIR), str(root / constants.DEMO_SAE_SUBDIR),
                            device=device, dtype="float32", fallback=False)
        hf = AutoModelForCausalLM.from_pretrained(root / constants.DEMO_MODEL_SUBDIR, dtype=torch.float32).to(device)
        return ws.model, ws.sae, hf.eval(), device
    shape, dtype = (QWEN3_8B, torch.bfloat16) if cfg.preset == "qwen3-8b" else (DEMO_SHAPE, torch.float32)
    torch.manual_seed(0)
    with torch.device(device):
        hf = Qwen3ForCausalLM(Qwen3Config(**shape, architectures=["Qwen3ForCausalLM"])).to(dtype).eval()
    model = _hf_to_tl(hf, dtype, device)
    layer = shape["num_hidden_layers"] * 3 // 4  # the write-up reads block 28 of 36
    d_sae = cfg.d_sae or (65536 if cfg.preset == "qwen3-8b" else 8 * shape["hidden_size"])
    sae = _random_sae(shape["hidden_size"], d_sae, f"blocks.{layer}.hook_mlp_out", device)
    return model, sae, hf, device


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin so that load from
    other processes hits every figure alike (ratios stay fair on a shared machine)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: allocator, kernels, caches
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run(cfg: BenchConfig) -> dict:
    model, sae, hf, device = load(cfg)
    n, t = cfg.samples, cfg.new_tokens
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.cfg.d_vocab, (1, cfg.prompt_tokens), generator=g).to(device)
    batch = prompt.expand(n, -1)
    settings = GenerationSettings(max_new_tokens=t, n_samples=1, stop_at_eos=False)  # write-up defaults
    spec = [SteeringSpec(0, "write-up clamp", max_act=1.0)]
    plain = lambda toks, specs=(): sample_tokens(model, sae, toks, list(specs), settings)  # noqa: E731

    no_penalty = dataclasses.replace(settings, freq_penalty=0.0)

    def hf_generate():
        with torch.inference_mode():
            hf.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=t, min_new_tokens=t,
                        do_sample=True, temperature=settings.temperature, top_k=None, top_p=None,
                        use_cache=True, pad_token_id=0)

    s = _timed(
        {
            "normal": lambda: plain(batch),
            "steered": lambda: plain(batch, spec),
            "sequential": lambda: [plain(prompt) for _ in range(n)],
            "tl_no_penalty": lambda: sample_tokens(model, sae, batch, [], no_penalty),
            "hf": hf_generate,
        },
        cfg.repeats,
        device,
    )
    s_normal, s_steered, s_sequential, s_tl, s_hf = (
        s[k] for k in ("normal", "steered", "sequential", "tl_no_penalty", "hf")
    )
    # The hook's own cost, isolated from machine noise: one decode step's activation, many calls.
    hook = SteeringHook(sae, spec, "all", cfg.prompt_tokens)
    act = torch.randn(n, 1, int(sae.cfg.d_in), device=device, dtype=next(model.parameters()).dtype)
    calls = 200
    with torch.inference_mode():
        hook(act)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            hook(act)
        _sync(device)
    hook_s_per_step = (time.perf_counter() - t0) / calls
    new = n * t
    out = {
        "preset": cfg.preset,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "samples": n,
        "new_tokens": t,
        "d_sae": int(sae.cfg.d_sae),
        "unsteered_tokens_per_s": round(new / s_normal, 1),
        "steered_tokens_per_s": round(new / s_steered, 1),
        "steering_overhead": round(s_steered / s_normal - 1, 4),
        "steering_overhead_goal": "<= 0.05",
        "hook_seconds_per_step": round(hook_s_per_step, 7),
        "hook_share_of_unsteered_step": round(hook_s_per_step * t / s_normal, 4),
        "batched_tokens_per_s": round(new / s_normal, 1),
        "sequential_tokens_per_s": round(new / s_sequential, 1),
        "batched_speedup_over_sequential": round(s_sequential / s_normal, 2),
        "batched_speedup_goal": ">= 3 on GPU",
        "tl_tokens_per_s_no_penalty": round(new / s_tl, 1),
        "hf_tokens_per_s": round(new / s_hf, 1),
        "tl_over_hf_speed": round(s_hf / s_tl, 3),
    }
    if device == "cuda":
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        bound = n * cfg.bandwidth_gbs * 1e9 / weight_bytes  # every step reads every weight once
        out.update(
            weight_gb=round(weight_bytes / 1e9, 2),
            bandwidth_bound_tokens_per_s=round(bound, 1),
            unsteered_fraction_of_bound=round(new / s_normal / bound, 3),
        )
    return out


HELP = {
    "preset": "demo: the embedded model + SAE (built); demo-shape: random weights of its shape; "
              "qwen3-8b: random weights of the Qwen3-8B shape in bfloat16 (GPU).",
    "samples": "Samples per generation, run as one batch.",
    "new_tokens": "Tokens generated per sample (no early stop, so every run does the same work).",
    "prompt_tokens": "Prompt length in tokens (random token ids).",
    "repeats": "Timed repeats per figure; the median is reported, after one untimed warm-up.",
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
