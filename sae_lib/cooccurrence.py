"""What each latent co-occurs with, counted in the latent index pass: tokens, and other latents.

Two bounded tables, filled batch by batch beside the index's other statistics:

* **tokens**: for each latent, the token ids it fires on most often (a Misra-Gries table of ``k``
  slots per latent, :mod:`sae_lib.heavy_hitters`), plus every token's count over the indexed text
  (``vocab`` counters). Together they give a token's *lift* for a latent, its share among the
  latent's firings over its share of the text, which the statistical labels (:mod:`sae_lib.labels`)
  rank by.
* **co-firing latents**: for each latent, the latents that fire on the same token most often (the
  same kind of table, ``k`` slots; when counted exactly, the ``k`` with the highest Jaccard similarity
  instead, which is what the neighbours rank by). All pairs of one token's firing latents are ``L0^2`` per token
  (about 10^4 for a Qwen3-8B SAE), so a batch counts pairs on a random subset of its positions,
  at most ``cofire_pairs_per_batch`` pairs, and counts how often each latent fired on those same
  positions so that pairs can be normalised (Jaccard) without bias from the subsampling.

Memory: ``d_sae x k x 2`` int64 per table and ``vocab`` counters, independent of the tokens streamed;
at 65,536 latents and k = 32 that is 34 MB per table. A table whose full ``d_sae x items`` size is
small (the demo's 1,024 latents) is counted exactly instead (:func:`sae_lib.heavy_hitters.counter`),
which is also faster than merging summaries; its co-firing pairs are then counted by one sparse product
(:meth:`~sae_lib.heavy_hitters.ExactCounts.update_cooccurring`) instead of being listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_lib.heavy_hitters import ExactCounts, TopItems, counter

COUNT_FIELDS = (
    "token_ids", "token_counts", "token_seen", "token_base",
    "cofire_ids", "cofire_counts", "cofire_fired", "cofire_positions",
)  # fmt: skip
"""Tensor names in the index's counts file (see :class:`LatentCounts`)."""


@dataclass
class LatentCounts:
    """The two tables, on CPU. Rows are latents."""

    token_ids: torch.Tensor
    """(d_sae, k) int64: tokens the latent fires on most, by count (-1: empty slot)."""
    token_counts: torch.Tensor
    """(d_sae, k) int64: lower bounds of those counts (exact unless the latent fired on > k distinct tokens)."""
    token_seen: torch.Tensor
    """(d_sae,) int64: firings counted per latent (its total over all tokens)."""
    token_base: torch.Tensor
    """(vocab,) int64: each token's count over all counted positions (the base rate's numerator)."""
    cofire_ids: torch.Tensor
    """(d_sae, k) int64: latents firing on the same tokens most often (-1: empty slot)."""
    cofire_counts: torch.Tensor
    """(d_sae, k) int64: lower bounds of those co-firing counts, on the sampled positions."""
    cofire_fired: torch.Tensor
    """(d_sae,) int64: how often each latent fired on the sampled positions."""
    cofire_positions: torch.Tensor
    """() int64: positions sampled for co-firing."""

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).contiguous() for name in COUNT_FIELDS}


class CountsAccumulator:
    """Fills :class:`LatentCounts` from batches of tokens and their SAE activations."""

    def __init__(
        self,
        d_sae: int,
        vocab: int,
        k_tokens: int = 32,
        k_cofire: int = 32,
        cofire_pairs_per_batch: int = 1 << 22,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        self.d_sae, self.vocab, self.device = d_sae, vocab, torch.device(device)
        self.tokens = counter(d_sae, vocab, k_tokens, device)
        self.cofire = counter(d_sae, d_sae, k_cofire, device)
        self.base = torch.zeros(vocab, dtype=torch.long, device=device)
        self.fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.positions = 0
        self.budget = cofire_pairs_per_batch
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def update(self, tokens: torch.Tensor, firing: tuple[torch.Tensor, torch.Tensor], n_pos: int) -> None:
        """Fold in ``tokens`` (B, P), the positions that count, and their firing entries ``firing`` =
        (position, latent), positions flat over (B, P) and sorted (``nonzero`` of the (B * P, d_sae)
        activations, as the index pass's statistics find them)."""
        pos, lat = firing  # (nnz,)
        toks = tokens.to(self.device).reshape(n_pos).long()
        self.base += torch.bincount(toks.clamp(0, self.vocab - 1), minlength=self.vocab)
        self.tokens.update(lat, toks[pos])
        self._cofire(pos, lat, n_pos)

    def _cofire(self, pos: torch.Tensor, lat: torch.Tensor, n_pos: int) -> None:
        per_pos = torch.bincount(pos, minlength=n_pos)  # (n_pos,) latents firing at each position
        # Random positions, taken while their pairs fit the budget: an unbiased subsample of positions.
        order = torch.randperm(n_pos, generator=self.gen, device=self.device)
        cost = (per_pos[order] ** 2).cumsum(0)
        chosen = torch.zeros(n_pos, dtype=torch.bool, device=self.device)
        chosen[order[cost <= self.budget]] = True
        self.positions += int(chosen.sum())
        take = chosen[pos]
        pos, lat = pos[take], lat[take]  # still sorted by position
        if pos.numel() == 0:
            return
        self.fired += torch.bincount(lat, minlength=self.d_sae)
        self.cofire.update_cooccurring(pos, lat, n_pos)  # every pair of latents firing at a sampled position

    def _cofire_top(self) -> TopItems:
        """Each latent's kept co-firing partners. Counted exactly, the best ``k`` by Jaccard (what the
        neighbours rank by): the most frequent partners are the dense latents, which fire with everything.
        A bounded table can only keep its most frequent ones; the neighbours re-rank those."""
        if not isinstance(self.cofire, ExactCounts):
            return self.cofire.top()
        # On the CPU: float64 (MPS has none), and at most DENSE_MAX_CELLS cells (64 MB).
        c = self.cofire.table.view(self.d_sae, self.d_sae).cpu().double()  # (d_sae, d_sae), zero diagonal
        f = self.fired.cpu().double()
        jaccard = c / (f[:, None] + f[None, :] - c).clamp(min=1)
        ids = jaccard.topk(self.cofire.k, dim=1).indices
        counts = c.gather(1, ids).long()
        return TopItems(ids.masked_fill(counts == 0, -1).cpu(), counts.cpu())

    def finish(self) -> LatentCounts:
        tokens, cofire = self.tokens.top(), self._cofire_top()
        return LatentCounts(
            token_ids=tokens.ids,
            token_counts=tokens.counts,
            token_seen=self.tokens.seen.cpu(),
            token_base=self.base.cpu(),
            cofire_ids=cofire.ids,
            cofire_counts=cofire.counts,
            cofire_fired=self.fired.cpu(),
            cofire_positions=torch.tensor(self.positions, dtype=torch.long),
        )
