"""Latent index queries: what the Latent browser reads from an index (tables, histograms, contexts)."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from sae_lib.errors import InputError, quoted
from sae_lib.latent_index.model import KIND_TOP, LatentIndex


def parse_latent(value: object, d_sae: int) -> int:
    """A latent id from a URL or a text box; :class:`InputError` when it is not a number in range."""
    text = str(value).strip()
    try:
        latent = int(text)
    except ValueError:
        raise InputError(f"Latent {quoted(text, 100)} is not a number: give a whole number from 0 to {d_sae - 1}.") from None
    if not 0 <= latent < d_sae:
        shown = latent if len(text) <= 100 else quoted(text, 100)  # a URL can hold thousands of digits
        raise InputError(f"Latent {shown} is out of range: this SAE has latents 0 to {d_sae - 1}.")
    return latent


class Histogram(NamedTuple):
    edges: np.ndarray
    """(n + 1,) bin edges, from 0 up to the first edge above the max."""
    counts: np.ndarray
    """(n,) positive activations per bin."""


def latent_histogram(index: LatentIndex, latent: int) -> Histogram:
    """Latent's histogram of positive activations, trimmed after the bin holding its max."""
    n_bins = index.hist.shape[1]
    counts = index.hist[latent].numpy()
    if index.count[latent] == 0:
        return Histogram(np.zeros(1), np.zeros(0, dtype=np.int64))
    upper = math.ldexp(1.0, int(index.hist_exp[latent]))
    last = int(np.nonzero(counts)[0].max()) + 1
    return Histogram(np.linspace(0.0, upper, n_bins + 1)[: last + 1], counts[:last])


def density_text(density: float, decimals: int = 3) -> str:
    """A density as a percentage with ``decimals`` places (the write-up's ``:.3%``), but never 0 for a
    latent that fires: below what those places show, two significant digits (one firing in 10M
    tokens: ``0.000010%``, where ``:.3%`` shows a dead-looking ``0.000%``)."""
    pct = 100.0 * float(density)
    text = f"{pct:.{decimals}f}%"
    if pct > 0.0 and float(text[:-1]) == 0.0:
        text = f"{pct:.{1 - math.floor(math.log10(pct))}f}%"
    return text


def histogram_title(index: LatentIndex, latent: int) -> str:
    """The write-up's title: ``Latent i Activations Density x%, Max Activation y``."""
    return (
        f"Latent {latent} Activations Density {density_text(float(index.density[latent]))}, "
        f"Max Activation {float(index.max_act[latent]):.2f}"
    )


def sample_title(index: LatentIndex, latent: int) -> str:
    """A short title for one latent of the random sample's grid: ``i: density, max m`` or ``i: dead``."""
    if bool(index.dead[latent]):
        return f"{latent}: dead"
    return f"{latent}: {density_text(float(index.density[latent]), 2)}, max {float(index.max_act[latent]):.1f}"


def _log10_density(index: LatentIndex) -> np.ndarray:
    d = index.density.numpy()
    with np.errstate(divide="ignore"):
        return np.where(d > 0, np.log10(np.where(d > 0, d, 1.0)), -np.inf)


def log10_densities(index: LatentIndex) -> np.ndarray:
    """log10 density of every latent that fired (dead latents have none)."""
    ld = _log10_density(index)
    return ld[np.isfinite(ld)]


def density_histogram(index: LatentIndex, bins: int = 50) -> Histogram | None:
    """The latents that fire, counted by log10 density in ``bins`` equal bins from the lowest to the
    highest; None when none fires. Binned here, so a page sends ``bins`` bars, not d_sae points (at
    65,536 latents, 0.8 MB of figure on every rerun)."""
    ld = log10_densities(index)
    if not len(ld):
        return None
    counts, edges = np.histogram(ld, bins=bins)
    return Histogram(edges=edges, counts=counts)


def _peak_tokens(index: LatentIndex) -> torch.Tensor:
    """(d_sae, k) token id at each top context's max (-1 for empty slots)."""
    ctx = index.top
    at = (ctx.pos - ctx.start).clamp(min=0, max=ctx.tokens.shape[-1] - 1)
    return ctx.tokens.gather(2, at[..., None]).squeeze(2).masked_fill(ctx.row < 0, -1)


def latent_mask(
    index: LatentIndex,
    log10_density_range: tuple[float, float] | None = None,
    hide_dead: bool = False,
    query: str = "",
    n_tokens_shown: int = 5,
) -> np.ndarray:
    """(d_sae,) bool: the latents the filters keep (see :func:`latent_table`). Array work only, so the
    Latent browser refilters 65,536 latents on every slider move in milliseconds."""
    ld = _log10_density(index)
    keep = np.ones(index.d_sae, dtype=bool)
    if hide_dead:
        keep &= ~index.dead.numpy()
    if log10_density_range is not None:
        low, high = log10_density_range
        keep &= index.dead.numpy() | ((ld >= low) & (ld <= high))
    if query.strip():
        q = query.strip().lower()
        vocab = index.meta.vocab or []
        hits = np.array([q in s.lower() for s in vocab] + [False], dtype=bool)  # last entry: id -1
        lookup = lambda ids: hits[np.where((ids >= 0) & (ids < len(vocab)), ids, len(vocab))]  # noqa: E731
        peaks, logit_ids = _peak_tokens(index).numpy(), index.logit_top_ids[:, :n_tokens_shown].numpy()
        keep &= lookup(peaks).any(axis=1) | lookup(logit_ids).any(axis=1)
    return keep


def all_latents_table(index: LatentIndex, n_tokens_shown: int = 5) -> pd.DataFrame:
    """One row per latent, in latent order: density, max, mean, status, top logit tokens, tokens it peaks
    on. The text columns are a Python loop over every latent (about 0.9 s at 65,536 latents on 2 CPU
    cores, ``docs/bench_latent_browser_cpu.json``), so the app builds this once per index and filters it
    with :func:`latent_mask`."""
    peaks = _peak_tokens(index).numpy()
    logit_ids = index.logit_top_ids[:, :n_tokens_shown].numpy()
    status = np.where(index.dead.numpy(), "dead", np.where(index.dense.numpy(), "dense", ""))

    def peak_summary(i: int) -> str:
        counts = Counter(int(t) for t in peaks[i] if t >= 0)
        return " · ".join(f"{index.token_str(t)!r}×{c}" for t, c in counts.most_common(n_tokens_shown))

    return pd.DataFrame(
        {
            "latent": np.arange(index.d_sae),
            "density": index.density.numpy(),
            "log10 density": _log10_density(index),
            "max": index.max_act.numpy(),
            "mean": index.mean_act.numpy(),
            "status": status,
            "top logit tokens": [" ".join(repr(index.token_str(int(t))) for t in logit_ids[i]) for i in range(index.d_sae)],
            "peaks on (top contexts)": [peak_summary(i) for i in range(index.d_sae)],
        }
    )


def latent_table(
    index: LatentIndex,
    log10_density_range: tuple[float, float] | None = None,
    hide_dead: bool = False,
    query: str = "",
    n_tokens_shown: int = 5,
    table: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per latent (filtered): density, max, mean, status, top logit tokens, tokens it peaks on.

    ``query`` keeps latents where a token containing it (case-insensitive) is among the tokens the
    latent peaks on in its top contexts or among its top logit-lens tokens. ``table``: this index's
    :func:`all_latents_table`, built before (the app keeps one per index); built here when None.
    """
    full = table if table is not None else all_latents_table(index, n_tokens_shown)
    keep = latent_mask(index, log10_density_range, hide_dead, query, n_tokens_shown)
    return full[keep].reset_index(drop=True)


class ContextView(NamedTuple):
    tokens: list[str]
    """The window's token texts."""
    acts: list[float]
    """The latent's activation on each."""
    activation: float
    """The context's max activation."""
    row: int
    """Row of the indexed token tensor."""
    peak: int
    """Index of the max token within the window."""


def latent_contexts(index: LatentIndex, latent: int, kind: str = KIND_TOP) -> list[ContextView]:
    """The latent's stored contexts, top ones by activation, samples sorted by activation too."""
    ctx = index.top if kind == KIND_TOP else index.samples
    out = []
    for s in range(ctx.value.shape[1]):
        if int(ctx.row[latent, s]) < 0:
            continue
        ids = [int(t) for t in ctx.tokens[latent, s] if t >= 0]
        out.append(
            ContextView(
                tokens=[index.token_str(t) for t in ids],
                acts=ctx.acts[latent, s, : len(ids)].tolist(),
                activation=float(ctx.value[latent, s]),
                row=int(ctx.row[latent, s]),
                peak=int(ctx.pos[latent, s] - ctx.start[latent, s]),
            )
        )
    return sorted(out, key=lambda c: -c.activation)


def logit_lens_table(index: LatentIndex, latent: int) -> pd.DataFrame:
    """Promoted and suppressed tokens side by side."""
    return pd.DataFrame(
        {
            "promoted": [index.token_str(int(t)) for t in index.logit_top_ids[latent]],
            "logit": index.logit_top_vals[latent].numpy(),
            "suppressed": [index.token_str(int(t)) for t in index.logit_bottom_ids[latent]],
            "logit ": index.logit_bottom_vals[latent].numpy(),
        }
    )


def sample_latents(d_sae: int, n: int = 20, seed: int = 0) -> list[int]:
    """The write-up's random sample: ``n`` distinct latents, seeded."""
    return sorted(random.Random(seed).sample(range(d_sae), min(n, d_sae)))


def steering_query(index: LatentIndex, latent: int) -> dict[str, str]:
    """Query parameters the Steering page reads: the latent and its max activation."""
    return {"latent": str(latent), "max_act": f"{float(index.max_act[latent]):.6g}"}

