"""Statistical labels: a short description of every alive latent from the index alone, no LM needed.

A label has two parts:

* **lift tokens**: the tokens the latent fires on far more than the text's base rate. For latent
  ``i`` and token ``t``, ``lift = (c_it / n_i) / (b_t / N)``: ``c_it`` firings of ``i`` on ``t`` (the
  index's heavy-hitter table), ``n_i`` all firings of ``i``, ``b_t`` occurrences of ``t`` and ``N``
  all counted tokens. A token must make up at least ``min_share`` of the latent's firings (and
  occur ``min_count`` times) to count, so one chance firing on a rare token does not win.
* **logit-lens tokens**: what the latent's decoder direction promotes (the index's logit lens).

Shown wherever no LM-written explanation exists (:mod:`sae_lib.explain`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sae_lib.cooccurrence import LatentCounts


class LiftTokens(NamedTuple):
    """A latent's lift tokens, highest lift first."""

    ids: list[int]
    lifts: list[float]
    """Share among the latent's firings over share of the text."""
    shares: list[float]
    """Share among the latent's firings (a lower bound: heavy-hitter counts never overestimate)."""


def lift_matrix(counts: LatentCounts, min_share: float = 0.02, min_count: int = 2) -> torch.Tensor:
    """(d_sae, k) float64 lift of each stored (latent, token) slot; 0 where the slot does not qualify."""
    c = counts.token_counts.double()  # (d_sae, k)
    n = counts.token_seen.double().clamp(min=1)[:, None]
    base = counts.token_base.double()
    total = base.sum().clamp(min=1)
    ids = counts.token_ids
    b = base[ids.clamp(min=0)].clamp(min=1)  # (d_sae, k)
    share = c / n
    lift = share / (b / total)
    ok = (ids >= 0) & (c >= min_count) & (share >= min_share)
    return torch.where(ok, lift, torch.zeros_like(lift))


def lift_tokens(counts: LatentCounts, latent: int, n: int = 5, **kw) -> LiftTokens:
    """Latent's top-``n`` tokens by lift (fewer when fewer qualify)."""
    lift = lift_matrix(counts, **kw)[latent]
    order = lift.argsort(descending=True)[:n]
    order = order[lift[order] > 0]
    ids = counts.token_ids[latent, order]
    share = counts.token_counts[latent, order].double() / max(int(counts.token_seen[latent]), 1)
    return LiftTokens(ids.tolist(), lift[order].tolist(), share.tolist())


def _show(token: str) -> str:
    """A token as a label shows it: its text trimmed, or quoted when it is only spaces or punctuation."""
    text = token.strip()
    return text if text and any(ch.isalnum() for ch in text) else repr(token)


def all_labels(index, n_lift: int = 3, n_logit: int = 3) -> list[str]:
    """One label per latent (``""`` for dead latents): ``fires on: a, b, c · promotes: x, y, z``.

    ``index`` is a :class:`sae_lib.latent_index.LatentIndex`; without its counts (an index built before
    they existed) the label has the logit-lens part only.
    """
    dead = index.dead.tolist()
    lift_ids: list[list[int]] = [[] for _ in dead]
    if index.counts is not None:
        lift = lift_matrix(index.counts)
        vals, order = lift.topk(min(n_lift, lift.shape[1]), dim=1)
        ids = index.counts.token_ids.gather(1, order).masked_fill(vals <= 0, -1)
        lift_ids = [[t for t in row if t >= 0] for row in ids.tolist()]
    logit = index.logit_top_ids[:, :n_logit].tolist()
    labels = []
    for i, is_dead in enumerate(dead):
        if is_dead:
            labels.append("")
            continue
        parts = []
        if lift_ids[i]:
            parts.append("fires on: " + ", ".join(_show(index.token_str(t)) for t in lift_ids[i]))
        if logit[i]:
            parts.append("promotes: " + ", ".join(_show(index.token_str(t)) for t in logit[i]))
        labels.append(" · ".join(parts))
    return labels
