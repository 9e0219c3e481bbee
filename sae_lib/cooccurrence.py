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

from sae_lib import heavy_hitters
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
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.tokens = counter(d_sae, vocab, k_tokens, device)
        # Too wide for the dense table (65,536 latents), a bounded Misra-Gries table cannot rank partners
        # (a firing has ~L0 = 100+ partners, so its error bound exceeds any true count and the best
        # partner was dropped silently): the sampled positions are kept and counted exactly at the end.
        self.cofire: ExactCounts | SampledPositions = (
            ExactCounts(d_sae, d_sae, k_cofire, device) if d_sae * d_sae <= heavy_hitters.DENSE_MAX_CELLS
            else SampledPositions(d_sae, k_cofire, device=device, generator=self.gen))
        self.base = torch.zeros(vocab, dtype=torch.long, device=device)
        self.fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.positions = 0
        self.budget = cofire_pairs_per_batch

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
        if isinstance(self.cofire, SampledPositions):
            self.cofire.add(pos, lat, chosen, per_pos)
            return
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
        if isinstance(self.cofire, SampledPositions):
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
        if isinstance(self.cofire, SampledPositions):  # what the kept sample holds, after any thinning
            self.fired, self.positions = self.cofire.fired(), self.cofire.n_positions
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


class SampledPositions:
    """Co-firing for SAEs too wide for a dense ``d_sae x d_sae`` table: the firing latents of the sampled
    positions, kept whole, and at the end each latent's ``k`` best partners by Jaccard over them, counted
    exactly (:meth:`top`), as the dense table does for narrow SAEs.

    Memory is bounded by thinning: past ``max_entries`` kept (position, latent) entries (or ``2^23``
    positions), half of the kept positions are dropped at random and later ones are kept with half the
    probability, so the sample stays uniform over the pass. On CUDA 2^24 entries (64 MB of latent ids):
    about 134,000 positions of a Qwen3-8B SAE's ~125 firing latents, whose ~P x L0^2 = 2 x 10^9 pairs
    the end sorts a block of latents at a time. Elsewhere 2^22: on 2 CPU cores the end takes about
    0.3-0.6 us per pair (24.6M pairs, 6,000 positions of 64 latents at d_sae 16,384: 8 to 16 s, other jobs running).
    """

    MAX_POSITIONS = 1 << 23

    def __init__(self, d_sae: int, k: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                 max_entries: int | None = None, max_pairs_per_chunk: int = 1 << 25):
        self.d_sae, self.k, self.device = d_sae, min(k, d_sae), torch.device(device)
        self.gen = generator if generator is not None else torch.Generator(device=self.device).manual_seed(0)
        if max_entries is None:  # the end's count costs ~0.5 us per pair on 2 CPU cores, far less on a GPU
            max_entries = 1 << 24 if self.device.type == "cuda" else 1 << 22
        self.max_entries, self.max_pairs = max_entries, max_pairs_per_chunk
        self.lats: list[torch.Tensor] = []  # int32 latent ids, grouped by position in order
        self.sizes: list[torch.Tensor] = []  # int64 latents firing at each kept position (0 included)
        self.entries = self.n_positions = 0
        self.keep = 1.0  # the probability a newly chosen position is kept (halved at each thinning)

    def add(self, pos: torch.Tensor, lat: torch.Tensor, chosen: torch.Tensor, per_pos: torch.Tensor) -> None:
        """Keep the positions ``chosen`` (bool, (n_pos,)) of a batch whose firing entries are
        ``(pos, lat)`` (sorted by position) and ``per_pos`` latents fire at each position."""
        if self.keep < 1.0:
            chosen = chosen & (torch.rand(chosen.shape, generator=self.gen, device=self.device) < self.keep)
        idx = chosen.nonzero().squeeze(1)
        take = chosen[pos]
        self.lats.append(lat[take].to(torch.int32))
        self.sizes.append(per_pos[idx].long())
        self.entries += int(self.lats[-1].numel())
        self.n_positions += int(idx.numel())
        while self.entries > self.max_entries or self.n_positions > self.MAX_POSITIONS:
            self._thin()

    def _thin(self) -> None:
        lat, sizes = self._flat()
        kept = torch.rand(sizes.shape, generator=self.gen, device=self.device) < 0.5
        self.lats = [lat[kept.repeat_interleave(sizes)].to(torch.int32)]
        self.sizes = [sizes[kept]]
        self.entries, self.n_positions = int(self.lats[0].numel()), int(self.sizes[0].numel())
        self.keep /= 2

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every kept entry's latent (int64) and each kept position's entry count; the per-batch pieces
        are joined once and kept joined (``fired`` and ``top`` both read them at the pass's end)."""
        if len(self.lats) != 1:
            self.lats = [torch.cat(self.lats) if self.lats else torch.zeros(0, dtype=torch.int32, device=self.device)]
            self.sizes = [torch.cat(self.sizes) if self.sizes else torch.zeros(0, dtype=torch.long, device=self.device)]
        return self.lats[0].long(), self.sizes[0]

    def fired(self) -> torch.Tensor:
        """(d_sae,) how often each latent fired at the kept positions (the Jaccard's denominators)."""
        return torch.bincount(self._flat()[0], minlength=self.d_sae).cpu()

    def top(self, block: int = 512) -> TopItems:
        """Each latent's ``k`` partners with the highest Jaccard similarity over the kept positions, and
        their exact co-firing counts there (a latent is not its own partner; -1: no partner)."""
        lat, sizes = self._flat()
        d, dev = self.d_sae, self.device
        ids = torch.full((d, self.k), -1, dtype=torch.long)
        counts = torch.zeros((d, self.k), dtype=torch.long)
        if lat.numel() == 0:
            return TopItems(ids, counts)
        fired = torch.bincount(lat, minlength=d)
        starts = sizes.cumsum(0) - sizes  # each position's first entry
        entry_pos = torch.repeat_interleave(torch.arange(len(sizes), device=dev), sizes)
        for r0 in range(0, d, block):
            r1 = min(r0 + block, d)
            sel = ((lat >= r0) & (lat < r1)).nonzero().squeeze(1)  # this block's entries
            reps = sizes[entry_pos[sel]]  # partners of each: every entry at its position (itself included)
            ends = reps.cumsum(0)
            cells, lo = [], 0
            while lo < len(sel):  # chunks of at most max_pairs pairs (one entry's partners never split)
                hi = max(lo + 1, int(torch.searchsorted(ends, (ends[lo - 1] if lo else 0) + self.max_pairs, right=True)))
                rep = reps[lo:hi]
                owner = torch.repeat_interleave(torch.arange(lo, hi, device=dev), rep)
                offset = torch.arange(len(owner), device=dev) - torch.repeat_interleave(rep.cumsum(0) - rep, rep)
                partner = lat[starts[entry_pos[sel[owner]]] + offset]
                # Counted per chunk, so what is held is the block's distinct (latent, partner) pairs (at
                # most block x d_sae), not every pair: a block holding dense latents has billions.
                cells.append(torch.unique((lat[sel[owner]] - r0) * d + partner, return_counts=True))
                lo = hi
            if not cells:
                continue
            cell, count = cells[0]
            if len(cells) > 1:
                cell, where = torch.unique(torch.cat([u for u, _ in cells]), return_inverse=True)
                count = torch.zeros(len(cell), dtype=torch.long, device=dev).scatter_add_(
                    0, where, torch.cat([c for _, c in cells]))
            row, col = cell // d, cell % d
            other = col != row + r0  # not its own partner
            row, col, count = row[other], col[other], count[other]
            jaccard = count / (fired[row + r0] + fired[col] - count).clamp(min=1)
            # By row, best Jaccard first within each, in one sort: Jaccard is in [0, 1], so row + (1 - J)
            # orders both (float64: ties in J are exact; MPS has no float64).
            key_dtype = torch.float32 if dev.type == "mps" else torch.float64
            order = (2 * row.to(key_dtype) + (1 - jaccard.to(key_dtype))).argsort(stable=True)
            row, col, count = row[order], col[order], count[order]
            first = torch.searchsorted(row, torch.arange(r1 - r0, device=dev))  # each row's first pair
            rank = torch.arange(len(row), device=dev) - first[row]
            best = rank < self.k
            ids[row[best].cpu() + r0, rank[best].cpu()] = col[best].cpu()
            counts[row[best].cpu() + r0, rank[best].cpu()] = count[best].cpu()
        return TopItems(ids, counts)

