"""Build an SAE's latent index: one pass over a corpus, written next to the SAE (see sae_lib.latent_index).

Examples:
    python scripts/build_latent_index.py                                  # the embedded demo
    python scripts/build_latent_index.py --preset qwen3-8b --sae user/repo:sae_id --out my_sae/
    python scripts/build_latent_index.py --preset qwen3-8b --model Qwen/Qwen3-8B-Base \
        --sae sae-lens:qwen-scope-3-8b-base-w64k-l50/layer20     # into the app's index cache (no --out, not a local SAE)
    python scripts/build_latent_index.py --help                           # every knob and its default

The app finds the index when it sits in the SAE's folder (push that folder with push_to_hub.py to share
it), or in its index cache under HF_HUB_CACHE, where the Latent browser's own builds go and where this
script writes for a Hub or registry SAE (a Hub SAE's folder is a snapshot inside the Hugging Face cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import simple_parsing
import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from sae_lib import corpora, index_builds
from sae_lib.errors import InputError, LatentLabError
from sae_lib.folders import check_writable
from sae_lib.corpora import CorpusSource
from sae_lib.explain.store import explanations_path, set_aside_stale
from sae_lib.latent_index import IndexConfig, LatentIndex, save_index
from sae_lib.workspace import PairSource

DEMO = "demo"


@dataclass
class BuildIndexConfig:
    """Which model, SAE and corpus to index, and where the index goes."""

    pair: PairSource = field(default_factory=PairSource)
    """The model and SAE (--model, --sae, --device, --dtype)."""
    dataset: str = DEMO
    """'demo' (the demo corpus's held-out stories) or a Hugging Face dataset name, streamed."""
    dataset_split: str = "train"
    """Split of a Hub dataset."""
    text_column: str = ""
    """Column of a Hub dataset holding the text; empty: detected ('text', 'content', ..., else the first string column)."""
    corpus_seed: int = 0
    """Seed of the demo corpus (the demo build's seed, so the held-out stories are the model's)."""
    n_tokens: int = 100_000
    """Tokens to index, rounded down to whole rows; fewer when the corpus runs out."""
    context_size: int = 128
    """Tokens per row; texts are joined with the end-of-text token and cut into rows of this length."""
    out: str = ""
    """Folder to write the index into; empty: a local SAE's own folder, else (a Hub or registry SAE) the app's
    index cache under HF_HUB_CACHE. The app finds the index in either place."""
    index: IndexConfig = field(default_factory=IndexConfig)
    """What the pass computes (bins, top-k, windows, batch size, ...)."""

    def __post_init__(self) -> None:
        if self.n_tokens < self.context_size:
            raise InputError(f"n_tokens ({self.n_tokens}) must be at least one row of context_size ({self.context_size}).")


PRESETS: dict[str, BuildIndexConfig] = {
    "demo": BuildIndexConfig(),
    # The write-up's setting: Qwen3-8B's layer-28 MLP output, FineWeb text. The first position of Qwen
    # rows is an attention sink with huge activations, so it is left out of the statistics.
    "qwen3-8b": BuildIndexConfig(
        pair=PairSource(model="Qwen/Qwen3-8B", dtype="bfloat16"),
        dataset="HuggingFaceFW/fineweb",
        n_tokens=10_000_000,
        context_size=1024,
        index=IndexConfig(batch_size=8, skip_positions=1),
    ),
}


def parse_args(argv: list[str] | None = None) -> BuildIndexConfig:
    """``--preset NAME`` picks the defaults; every other flag overrides one field (see --help)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    known, _ = pre.parse_known_args(argv)
    parser = simple_parsing.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        add_option_string_dash_variants=simple_parsing.DashVariant.UNDERSCORE_AND_DASH,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="demo",
        help="Named defaults: 'demo' (the embedded model, its corpus) or 'qwen3-8b' (the write-up's model on "
        "FineWeb, 10M tokens, bf16; give --sae). Other flags override them.",
    )
    parser.add_arguments(BuildIndexConfig, dest="config", default=PRESETS[known.preset])
    return parser.parse_args(argv).config


def corpus_source(cfg: BuildIndexConfig) -> CorpusSource:
    """The configured corpus, as the app names one (the app and this script read corpora the same way)."""
    if cfg.dataset == DEMO:
        return CorpusSource("demo", seed=cfg.corpus_seed)
    return CorpusSource("hub", name=cfg.dataset, split=cfg.dataset_split, text_column=cfg.text_column)


def corpus_tokens(cfg: BuildIndexConfig, tokenizer) -> torch.Tensor:
    """(n_seq, context_size) tokens of the configured corpus."""
    return corpora.corpus_tokens(corpus_source(cfg), tokenizer, cfg.n_tokens, cfg.context_size)


def progress_printer(log: Callable[[str], None] = print, every_s: float = 2.0):
    """A progress callback that logs tokens done and tokens/s at most every ``every_s`` seconds."""
    last = [-every_s]

    def report(done: int, total: int, elapsed: float) -> None:
        if elapsed - last[0] >= every_s or done == total:
            last[0] = elapsed
            log(f"{done:,}/{total:,} tokens ({done / total:.0%}), {done / max(elapsed, 1e-9):,.0f} tokens/s")

    return report


def build_and_save(
    model: HookedTransformer,
    sae: SAE,
    tokens: torch.Tensor,
    out: Path,
    cfg: IndexConfig,
    description: str = "",
    log: Callable[[str], None] = print,
) -> LatentIndex:
    """Build the index over ``tokens`` and write it into ``out``; logs a summary."""
    t0 = time.perf_counter()
    index = index_builds.run_build(model, sae, tokens, cfg, description, progress=progress_printer(log))
    save_index(index, out)
    log(
        f"Indexed {index.meta.n_tokens:,} tokens in {time.perf_counter() - t0:.1f}s: "
        f"{int(index.dead.sum()):,} dead, {int(index.dense.sum()):,} dense of {index.d_sae:,} latents. Written to {out}."
    )
    return index


def run(cfg: BuildIndexConfig, log: Callable[[str], None] = print) -> Path:
    """Load the model and SAE, tokenize the corpus, build and save the index; returns the folder written."""
    if cfg.dataset != DEMO and not (cfg.pair.sae and cfg.pair.model):
        raise InputError("Indexing a Hub dataset needs --model and --sae: the demo pair is indexed on the demo corpus.")
    if cfg.out:  # before anything loads: the pass can take hours, and its result must have somewhere to go
        check_writable(Path(cfg.out), "the latent index", "--out")
    model, loaded, model_src, sae_src, device = cfg.pair.load()
    out = index_builds.index_home(loaded, cfg.out)
    check_writable(out, "the latent index", "--out")  # a read-only SAE folder or cache, before the pass
    tokens = corpus_tokens(cfg, model.tokenizer)
    corpus = corpus_source(cfg).describe()  # as the app names it, and recorded in the index
    log(f"{model_src} + {sae_src}: indexing {tokens.numel():,} tokens of {corpus} on {device}.")
    if out == index_builds.cache_dir(loaded.sae):
        # A registry or Hub SAE (no folder of its own to write into): where the app's own builds go.
        index = index_builds.run_build(model, loaded.sae, tokens, cfg.index, corpus, progress=progress_printer(log))
        index_builds.write_atomic_folder(index, out)
        log(f"Written to the app's index cache: {out}.")
        if index_builds.index_location(loaded) != out:  # the app reads the index published with the SAE first
            log("Note: this SAE ships with a latent index of its own, which the app and explain_latents.py read before this one.")
        return out
    index = build_and_save(model, loaded.sae, tokens, out, cfg.index, description=corpus, log=log)
    aside = set_aside_stale(explanations_path(out), index.meta.build_id)
    if aside is not None:
        log(f"The explanations there were for the previous index: kept as {aside.name} (not read, not pushed); "
            "run scripts/explain_latents.py to explain this one.")
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except LatentLabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
