"""What the app says a latent is: its LM explanation when one exists, else its statistical label; and search.

Built once per loaded index (labels for 65,536 latents take well under a second) and shared by every
visitor; never mutated after construction. Search treats the visitor's text literally (no regex,
no wildcards), case-insensitively, and refuses text longer than :data:`MAX_SEARCH_CHARS`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from sae_lib.errors import InputError
from sae_lib.labels import all_labels, lift_matrix

MAX_SEARCH_CHARS = 200
"""Longest search text accepted: explanations are one line, tokens are short."""


class Description(NamedTuple):
    text: str
    """The explanation, or the label when there is none; "" for a dead latent."""
    source: str
    """``"explanation"``, ``"label"`` or ``""``."""
    explainer: str
    """Which model wrote the explanation ("" for a label)."""
    scores: dict[str, float]
    """detection, fuzzing and their shuffled baselines (empty for a label)."""


def check_search(query: str) -> str:
    """The query stripped; InputError when it is too long."""
    if len(query) > MAX_SEARCH_CHARS:
        raise InputError(f"The search text is {len(query):,} characters long; at most {MAX_SEARCH_CHARS} are searched. Shorten it.")
    return query.strip()


class Descriptions:
    """Labels of every latent plus the explanations table (``latent_explanations.parquet``)."""

    def __init__(self, index, explanations: pd.DataFrame | None = None):
        self.index = index
        self.labels = all_labels(index)
        self.explanations = explanations if explanations is not None else pd.DataFrame(columns=["latent", "explanation"])
        self._by_latent = {int(r.latent): r for r in self.explanations.itertuples(index=False) if str(r.explanation)}
        self._labels_lower = np.array([s.lower() for s in self.labels], dtype=object)

    def describe(self, latent: int) -> Description:
        row = self._by_latent.get(int(latent))
        if row is not None:
            scores = {k: float(getattr(row, k)) for k in ("detection", "fuzzing", "detection_shuffled", "fuzzing_shuffled")
                      if hasattr(row, k) and not math.isnan(float(getattr(row, k)))}  # fmt: skip
            return Description(str(row.explanation), "explanation", str(getattr(row, "explainer", "")), scores)
        label = self.labels[int(latent)]
        return Description(label, "label" if label else "", "", {})

    def texts(self, latents) -> list[str]:
        """The shown text of each latent in ``latents`` (for a table column)."""
        return [self.describe(int(i)).text for i in latents]

    def search_text(self, query: str) -> np.ndarray:
        """Latents whose explanation or label contains ``query`` literally (case-insensitive), by latent id."""
        q = check_search(query).lower()
        if not q:
            return np.arange(len(self.labels))
        hits = np.array([q in s for s in self._labels_lower], dtype=bool)
        for latent, row in self._by_latent.items():
            hits[latent] |= q in str(row.explanation).lower()
        return np.nonzero(hits)[0]

    def search_token(self, query: str) -> np.ndarray:
        """Latents with a token containing ``query`` (literal, case-insensitive) among their lift tokens,
        top-context peaks or top logit-lens tokens."""
        q = check_search(query).lower()
        if not q:
            return np.arange(len(self.labels))
        vocab = self.index.meta.vocab or []
        match = np.array([q in s.lower() for s in vocab] + [False], dtype=bool)  # last: stands for id -1
        n = len(vocab)

        def hit(ids: np.ndarray) -> np.ndarray:  # (d_sae, k) token ids -> (d_sae,) any match
            return match[np.where((ids >= 0) & (ids < n), ids, n)].any(axis=1)

        ctx = self.index.top  # the token at each top context's max
        at = (ctx.pos - ctx.start).clamp(min=0, max=ctx.tokens.shape[-1] - 1)
        peaks = ctx.tokens.gather(2, at[..., None]).squeeze(2).masked_fill(ctx.row < 0, -1)
        keep = hit(peaks.numpy()) | hit(self.index.logit_top_ids.numpy())
        if self.index.counts is not None:
            lifted = np.where(lift_matrix(self.index.counts).numpy() > 0, self.index.counts.token_ids.numpy(), -1)
            keep |= hit(lifted)
        return np.nonzero(keep)[0]
