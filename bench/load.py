"""Peak memory of loading a model, relative to the size of its weights: our loader vs TransformerLens.

For each model folder (the demo model, and a random-weight Qwen3 of roughly 0.5-1 GB written to a
temporary folder), two fresh subprocesses load it, one with ``sae_lib.model.load_model`` and one with
TransformerLens's plain path (``from_pretrained_no_processing``'s steps, spelled out because it refuses
local folders). Each reports its peak resident memory (``ru_maxrss``) above its resident memory just
before loading, divided by the bytes of the loaded weights. Goal: ours <= 1.5; the plain path holds
the Hugging Face model and a converted copy together (about 2).

Each subprocess first loads a tiny throwaway model through the same path, so that lazy imports and
one-off allocations are not counted against the model being measured.

Prints one JSON object. Run: ``python bench/load.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sae_lib.random_models import write_random_qwen3


@dataclass
class Measurement:
    loader: str
    """``ours`` (sae_lib.model.load_model) or ``transformerlens`` (the plain path)."""
    weight_bytes: int
    """Bytes of the loaded model's parameters (tied tensors counted once)."""
    peak_rss_delta_bytes: int
    """Peak resident memory during the load minus resident memory just before it."""
    ratio: float
    """peak_rss_delta_bytes / weight_bytes."""
    load_s: float
    """Wall-clock seconds of the load."""


SMALL_DEMO_LIKE = dict(
    vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
)
"""Stand-in with the demo's announced shape, used when no built demo is present."""
LARGE = dict(
    vocab_size=32000, hidden_size=1024, intermediate_size=3072, num_hidden_layers=8,
    num_attention_heads=16, num_key_value_heads=8, head_dim=64,
)
"""About 166M parameters: ~0.66 GB in float32."""
WARMUP = dict(
    vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    num_attention_heads=2, num_key_value_heads=1, head_dim=16,
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load(loader: str, folder: str, dtype: str):
    import torch

    if loader == "ours":
        from sae_lib.model import load_model

        return load_model(folder, device="cpu", dtype=dtype)
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as tl_loading
    from transformers import AutoTokenizer

    dt = getattr(torch, dtype)
    cfg = tl_loading.get_pretrained_model_config(folder, device="cpu", dtype=dt)
    cfg.trust_remote_code = False
    state_dict = tl_loading.get_pretrained_state_dict(folder, cfg, dtype=dt)
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(folder), move_to_device=False)
    model.load_and_process_state_dict(
        state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )
    return model


def measure_in_this_process(loader: str, folder: str, warmup_folder: str, dtype: str) -> Measurement:
    """Load ``folder`` with ``loader`` once (after a warm-up load) and report peak memory."""
    import warnings

    warnings.filterwarnings("ignore")
    _load(loader, warmup_folder, dtype)
    gc.collect()
    before = _rss_bytes()
    start = time.perf_counter()
    model = _load(loader, folder, dtype)
    load_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    seen, weight_bytes = set(), 0
    for p in model.parameters():
        key = (p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape))
        if key not in seen:
            seen.add(key)
            weight_bytes += p.numel() * p.element_size()
    delta = peak - before
    return Measurement(loader, weight_bytes, delta, round(delta / weight_bytes, 3), round(load_s, 2))


def measure(loader: str, folder: Path, warmup_folder: Path, dtype: str) -> Measurement:
    """Run :func:`measure_in_this_process` in a fresh interpreter so peaks of runs don't mix."""
    out = subprocess.run(
        [sys.executable, __file__, "--_measure", loader, str(folder), str(warmup_folder), "--dtype", dtype],
        check=True, capture_output=True, text=True,
    )
    return Measurement(**json.loads(out.stdout.strip().splitlines()[-1]))


def compare(name: str, folder: Path, warmup_folder: Path, dtype: str) -> dict:
    ours = measure("ours", folder, warmup_folder, dtype)
    plain = measure("transformerlens", folder, warmup_folder, dtype)
    return {
        "model": name,
        "folder": folder.name,  # its name only: the JSON is committed, a local path is not
        "dtype": dtype,
        "weight_bytes": ours.weight_bytes,
        "ours": asdict(ours),
        "transformerlens_plain": asdict(plain),
        "ratio_ours_over_plain": round(ours.peak_rss_delta_bytes / plain.peak_rss_delta_bytes, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--demo-model", type=Path, default=None,
        help="Demo model folder (default: $LATENT_LAB_DEMO_DIR/model, else <repo>/data/demo/model; when "
        "absent, a random Qwen3 of the demo's shape is written to a temp folder instead).",
    )
    parser.add_argument("--dtype", default="float32", help="dtype to load in (default float32, the CPU default).")
    parser.add_argument(
        "--file-dtype", default="float32",
        help="dtype the random models are saved in (default float32; bfloat16 mimics Hub checkpoints).",
    )
    parser.add_argument("--skip-large", action="store_true", help="Skip the ~0.66 GB random Qwen3 (default: run it).")
    parser.add_argument("--_measure", nargs=3, metavar=("LOADER", "FOLDER", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._measure:
        loader, folder, warmup = args._measure
        print(json.dumps(asdict(measure_in_this_process(loader, folder, warmup, args.dtype))))
        return

    from sae_lib import constants

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        tmp_path = Path(tmp)
        warmup = write_random_qwen3(tmp_path / "warmup", args.file_dtype, **WARMUP)
        demo = args.demo_model or constants.demo_dir() / constants.DEMO_MODEL_SUBDIR
        if (demo / "config.json").is_file():
            results.append(compare("demo", demo, warmup, args.dtype))
        else:
            stand_in = write_random_qwen3(tmp_path / "demo_like", args.file_dtype, **SMALL_DEMO_LIKE)
            results.append(compare("demo-shaped random Qwen3 (no demo built)", stand_in, warmup, args.dtype))
        if not args.skip_large:
            large = write_random_qwen3(tmp_path / "large", args.file_dtype, **LARGE)
            results.append(compare("random Qwen3 ~166M params", large, warmup, args.dtype))
    print(json.dumps({"goal": "ours.ratio <= 1.5", "results": results}, indent=2))


if __name__ == "__main__":
    main()
