"""Explain and score an SAE's latents with a local LM; writes latent_explanations.parquet next to the index
(for an index published with a Hub SAE, into the app's index cache instead: never into the Hub snapshot).

Examples:
    python scripts/explain_latents.py                                   # the embedded demo, every alive latent
    python scripts/explain_latents.py --most_frequent 200               # the 200 most frequent latents
    python scripts/explain_latents.py --min_density 1e-4 --max_density 1e-2 --limit 1000
    python scripts/explain_latents.py --preset qwen3-8b --sae user/repo:sae_id   # Qwen3-8B explains itself
    python scripts/explain_latents.py --explainer path/to/hf-chat-model          # another local explainer

Killed at any point, the same command continues where it stopped: the file is rewritten atomically
after every chunk and latents already in it are skipped. The index must exist (build_latent_index.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import simple_parsing

from sae_lib.errors import CompatibilityError, InputError, LatentLabError
from sae_lib.explain.explainer import ExplainConfig, explain_and_score, model_acts_fn
from sae_lib.explain.store import explanations_path, load_explanations, save_explanations, set_aside_stale
from sae_lib.workspace import PairSource


@dataclass
class ExplainLatentsConfig:
    """Which SAE's latents to explain, with which explainer, and how many at a time."""

    pair: PairSource = field(default_factory=PairSource)
    """The model and SAE (--model, --sae, --device, --dtype)."""
    explainer: str = ""
    """A local Hugging Face chat/base model folder (or a cached Hub name) to explain with; empty: the model itself."""
    min_density: float = 0.0
    """Only latents firing on at least this share of tokens."""
    max_density: float = 1.0
    """Only latents firing on at most this share of tokens."""
    most_frequent: int = 0
    """If > 0, only the N most frequent latents in the density range."""
    limit: int = 0
    """If > 0, stop after explaining this many latents in this run."""
    chunk: int = 16
    """Latents per chunk: one batch of explanation prompts, one of scoring prompts, then a save."""
    batch_size: int = 16
    """Prompts per generation batch."""
    out: str = ""
    """Folder of the index (the parquet goes beside it); empty: the SAE's folder when it holds an index, else
    the app's index cache (where build_latent_index.py writes for a Hub or registry SAE). An index published
    with a Hub SAE gets its parquet in the app's index cache, not in the Hugging Face snapshot."""
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    """Excerpts shown and held out, marks, answer length, seed."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_density <= self.max_density <= 1.0):
            raise InputError(f"Need 0 <= min_density <= max_density <= 1, got {self.min_density} and {self.max_density}.")
        if self.most_frequent < 0 or self.limit < 0 or self.chunk < 2 or self.batch_size < 1:
            raise InputError("most_frequent and limit must be >= 0, chunk >= 2 (the shuffled baseline needs a partner), batch_size >= 1.")


PRESETS: dict[str, ExplainLatentsConfig] = {
    "demo": ExplainLatentsConfig(),
    "qwen3-8b": ExplainLatentsConfig(pair=PairSource(model="Qwen/Qwen3-8B", dtype="bfloat16"), chunk=64, batch_size=64),
}


def parse_args(argv: list[str] | None = None) -> ExplainLatentsConfig:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    known, _ = pre.parse_known_args(argv)
    parser = simple_parsing.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        add_option_string_dash_variants=simple_parsing.DashVariant.UNDERSCORE_AND_DASH,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                        help="Named defaults: 'demo' (the embedded model) or 'qwen3-8b' (bf16, big batches; give --sae).")
    parser.add_arguments(ExplainLatentsConfig, dest="config", default=PRESETS[known.preset])
    return parser.parse_args(argv).config


def select_latents(index, cfg: ExplainLatentsConfig, done: set[int]) -> list[int]:
    """Alive latents in the density range (the N most frequent if asked), most frequent first, minus ``done``."""
    density = index.density
    ok = (~index.dead) & (density >= cfg.min_density) & (density <= cfg.max_density)
    picked = ok.nonzero().squeeze(1)
    picked = picked[density[picked].argsort(descending=True, stable=True)].tolist()
    if cfg.most_frequent:
        picked = picked[: cfg.most_frequent]
    todo = [i for i in picked if i not in done]
    return todo[: cfg.limit] if cfg.limit else todo


def _other_explanation(table, latent: int) -> str:
    """A non-empty explanation of another latent in ``table`` (picked by ``latent``, so reruns agree), or ""."""
    others = [e for e in table[table["latent"] != latent]["explanation"].astype(str).tolist() if e.strip()]
    return others[latent % len(others)] if others else ""


def finished_latents(table, explainer: str, cfg: ExplainConfig = ExplainConfig()) -> set[int]:
    """Latents a rerun skips: those whose stored row this run would write again, i.e. by the current
    method (``METHOD``) with the same settings (``cfg``) and the same explainer. Rows by an older method
    (explainer-v1 saw fewer excerpts and was scored on fewer), with other settings (a quick run's
    ``--n_score 2``) or by another explainer are explained again; the newest row wins."""
    from sae_lib.explain.explainer import method_name

    same = (table["method"] == method_name(cfg)) & (table["explainer"] == explainer)
    return set(table.loc[same, "latent"].tolist())


def run(cfg: ExplainLatentsConfig, log: Callable[[str], None] = print, gen=None) -> Path:
    """Explain the selected latents chunk by chunk, saving after each; returns the parquet's path."""
    from sae_lib.explain.generator import HFGenerator, LoadedModelGenerator
    from sae_lib.index_builds import explanation_dirs, index_location
    from sae_lib.latent_index import load_index
    # The same checked load as the app's (a registry SAE's own model included).
    model, loaded, model_src, sae_src, device = cfg.pair.load()
    index_dir = index_location(loaded, cfg.out)  # where the app reads it: beside the SAE, else its cache
    index = load_index(index_dir, loaded.sae)
    if index is None:
        raise InputError(f"No latent index in {index_dir}: build it first with scripts/build_latent_index.py.")
    if gen is None:
        gen = HFGenerator(cfg.explainer, device=device, dtype=cfg.pair.dtype or None, batch_size=cfg.batch_size) if cfg.explainer \
            else LoadedModelGenerator(model, name=model_src, batch_size=cfg.batch_size)
    home, *published = explanation_dirs(index_dir, loaded.sae)  # beside the index; a Hub snapshot's: the app cache
    home.mkdir(parents=True, exist_ok=True)
    path = explanations_path(home)
    aside = set_aside_stale(path, index.meta.build_id)
    if aside is not None:
        log(f"{path.name} was written for another build of this index: kept as {aside.name}, and this run "
            "explains for the current build.")
    table = load_explanations(path, index.meta.build_id)
    for folder in published:  # explanations published with the index: this run starts from them
        if not path.exists() and explanations_path(folder).exists():
            try:
                table = load_explanations(explanations_path(folder), index.meta.build_id)
            except CompatibilityError as err:
                log(f"Not starting from the published explanations: {err}")
    finished = finished_latents(table, gen.name, cfg.explain)
    todo = select_latents(index, cfg, finished)
    redo = f" ({len(table) - len(finished):,} more by an older method, other settings or another explainer are redone if selected)" \
        if len(table) > len(finished) else ""
    log(f"{len(finished):,} latents already explained in {path.name}{redo}; {len(todo):,} to go with {gen.name} on {device}.")
    acts_fn = model_acts_fn(model, loaded.sae)
    t0, done = time.perf_counter(), 0
    for start in range(0, len(todo), cfg.chunk):
        chunk = todo[start : start + cfg.chunk]
        # A lone last latent's shuffled baseline: another latent's explanation already written (not a
        # second explanation of a latent already done).
        rows = explain_and_score(gen, index, chunk, cfg.explain, acts_fn=acts_fn,
                                 fallback_shuffled=lambda latent: _other_explanation(table, latent))
        table = save_explanations(path, index.meta.build_id, rows, table)
        done += len(chunk)
        rate = done / max(time.perf_counter() - t0, 1e-9) * 60
        log(f"{done:,}/{len(todo):,} latents ({done / len(todo):.0%}), {rate:,.1f} latents/minute; "
            f"latent {rows[0].latent}: {rows[0].explanation!r}")
    if getattr(gen, "truncated", 0):
        log(f"Note: {gen.truncated:,} prompts were longer than the explainer's context ({model.cfg.n_ctx} tokens) "
            "and kept only their end; use an explainer with a longer context (--explainer) for real explanations.")
    log(f"Done: {len(table):,} latents explained in {path}.")
    return path


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except LatentLabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
