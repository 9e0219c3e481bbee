"""A latent's neighbours: the latents whose decoder directions point the same way, and those that fire with it.

* **Decoder neighbours** are computed from the SAE's weights on request: one ``(d_sae,)`` row of
  cosines, ``W_dec[i] @ W_dec.T`` over the row norms, on the SAE's device (a few ms at 65,536 x 4,096).
* **Co-firing neighbours** come from the latent index's co-firing table
  (:mod:`sae_lib.cooccurrence`), ranked by Jaccard similarity of the positions they fire on,
  ``c_ij / (f_i + f_j - c_ij)``, so that dense latents, which co-fire with everything, do not win by
  count alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from sae_lens import SAE

from sae_lib.cooccurrence import LatentCounts


class Neighbours(NamedTuple):
    latents: list[int]
    """Neighbouring latents, most similar first."""
    scores: list[float]
    """Cosine of the decoder directions, or Jaccard of the firing positions."""


@torch.no_grad()
def decoder_neighbours(sae: SAE, latent: int, n: int = 10) -> Neighbours:
    """The ``n`` latents whose decoder directions have the highest cosine with ``latent``'s."""
    W = sae.W_dec.detach()
    w = W[latent].float()
    cos = (W.float() @ w) / (W.float().norm(dim=1) * w.norm()).clamp(min=1e-12)  # (d_sae,)
    cos[latent] = -float("inf")
    vals, ids = cos.topk(min(n, cos.numel() - 1))
    return Neighbours(ids.tolist(), vals.tolist())


def cofiring_neighbours(counts: LatentCounts, latent: int, n: int = 10) -> Neighbours:
    """Up to ``n`` latents firing with ``latent`` on the same tokens, by Jaccard similarity."""
    ids = counts.cofire_ids[latent]
    c = counts.cofire_counts[latent].double()
    ok = (ids >= 0) & (c > 0)
    ids, c = ids[ok], c[ok]
    f_i = float(counts.cofire_fired[latent])
    f_j = counts.cofire_fired[ids].double()
    jaccard = c / (f_i + f_j - c).clamp(min=1)
    order = jaccard.argsort(descending=True, stable=True)[:n]
    return Neighbours(ids[order].tolist(), jaccard[order].tolist())
