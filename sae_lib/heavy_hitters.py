"""Per-row heavy hitters over a stream: a fixed-size Misra-Gries table for every row at once.

The latent index needs, for every latent, *which tokens* it fires on and *which latents* fire with
it. Exact counts would be a ``d_sae x vocab`` (65,536 x 151,936: 10^10 cells) and a ``d_sae x d_sae``
(4.3 x 10^9 cells) table, neither of which fits. A Misra-Gries summary keeps ``k`` counters per row
and guarantees, for a row that has seen ``n`` items, that every stored count is at most ``n / (k + 1)``
below the true count (never above it), and that every item occurring more than ``n / (k + 1)`` times
is stored. Memory is ``n_rows x k`` whatever the stream's length or the number of distinct items.

Batches are merged as mergeable summaries (Agarwal et al., 2012): add the batch's exact counts to
the table, then in each row subtract the ``(k + 1)``-th largest count from all and keep the ``k`` that
stay positive. Everything is vectorised over rows (one ``torch.unique`` and one sort per merge), so
it runs on the device the SAE activations are on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TopItems(NamedTuple):
    """A row's stored items, largest count first; ``ids == -1`` marks an empty slot."""

    ids: torch.Tensor
    """(n_rows, k) int64: item ids, -1 where empty."""
    counts: torch.Tensor
    """(n_rows, k) int64: lower bounds of their counts (exact when nothing was ever evicted)."""


COUNT_LIMIT = 1 << 40
"""Counts per row stay below this (a trillion items); with it the sort key of :meth:`HeavyHitters.update` fits int64."""


class HeavyHitters:
    """``k`` Misra-Gries counters for each of ``n_rows`` rows, items in ``[0, n_items)``."""

    def __init__(self, n_rows: int, n_items: int, k: int, device: torch.device | str = "cpu",
                 merge_at: int | None = None):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if n_rows >= (1 << 63) // COUNT_LIMIT:
            raise ValueError(f"at most {(1 << 63) // COUNT_LIMIT - 1:,} rows, got {n_rows:,}")
        self.n_rows, self.n_items, self.k = n_rows, n_items, k
        self.ids = torch.full((n_rows, k), -1, dtype=torch.long, device=device)
        self.counts = torch.zeros(n_rows, k, dtype=torch.long, device=device)
        self.seen = torch.zeros(n_rows, dtype=torch.long, device=device)
        """(n_rows,) items seen per row (the ``n`` of the error bound)."""
        self.merge_at = n_rows * k if merge_at is None else merge_at
        """Occurrences held back before a merge. Each merge sorts the whole table with them, so merging a
        batch far smaller than the table mostly re-sorts the table: batches wait until they add up to
        this many (default: the table's size, so a merge sorts at most about twice the new items; the
        flagship's co-firing pairs, ~4M a batch, merge every batch, its ~600k token firings every fourth).
        Memory: ``merge_at`` plus one batch of int64 keys."""
        self._pending: list[torch.Tensor] = []
        self._n_pending = 0

    def update(self, rows: torch.Tensor, items: torch.Tensor) -> None:
        """Count one occurrence of ``items[j]`` in row ``rows[j]`` (both (n,) int64, same device)."""
        if rows.numel() == 0:
            return
        dev = self.ids.device
        rows, items = rows.to(dev).long(), items.to(dev).long()
        self.seen += torch.bincount(rows, minlength=self.n_rows)
        self._pending.append(rows * self.n_items + items)
        self._n_pending += rows.numel()
        if self._n_pending >= self.merge_at:
            self._merge()

    def update_cooccurring(self, groups: torch.Tensor, items: torch.Tensor, n_groups: int) -> None:
        """Count every ordered pair of distinct items that share a group, ``(row a, item b)`` (rows and
        items one id space), by listing the pairs: a group of ``s`` items gives ``s^2 - s``.
        ``groups`` sorted, ``(groups[j], items[j])`` distinct (``nonzero``'s order gives both)."""
        if items.numel() == 0:
            return
        dev = self.ids.device
        groups, items = groups.to(dev).long(), items.to(dev).long()
        sizes = torch.bincount(groups, minlength=n_groups)[groups]  # (E,) items in each entry's group
        starts = torch.searchsorted(groups, groups)  # (E,) first entry of that group
        entry = torch.repeat_interleave(torch.arange(len(groups), device=dev), sizes)  # (pairs,)
        offset = torch.arange(len(entry), device=dev) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
        partner = starts[entry] + offset
        distinct = entry != partner
        self.update(items[entry[distinct]], items[partner[distinct]])

    def _merge(self) -> None:
        """Fold the held-back occurrences into the table: add their exact counts to the stored ones, then
        in each row subtract the (k + 1)-th largest count and keep the k that stay positive. Merging
        several batches at once is one larger batch, with the same guarantee."""
        if not self._pending:
            return
        dev = self.ids.device
        new = torch.cat(self._pending)
        self._pending, self._n_pending = [], 0
        held = self.ids >= 0
        held_rows = held.nonzero()[:, 0]
        keys = torch.cat([held_rows * self.n_items + self.ids[held], new])
        weights = torch.cat([self.counts[held], torch.ones_like(new)])
        uniq, inverse = torch.unique(keys, return_inverse=True)
        summed = torch.zeros(len(uniq), dtype=torch.long, device=dev).scatter_add_(0, inverse, weights)
        row = uniq // self.n_items
        order = self._by_row_then_count(row, summed)
        uniq, row, summed = uniq[order], row[order], summed[order]
        item = uniq % self.n_items
        first = torch.searchsorted(row, row)  # index of each row's first entry
        rank = torch.arange(len(row), device=dev) - first
        kth = torch.zeros(self.n_rows, dtype=torch.long, device=dev)
        over = rank == self.k
        kth[row[over]] = summed[over]  # the (k + 1)-th largest count; 0 when the row has <= k items
        reduced = summed - kth[row]
        keep = (rank < self.k) & (reduced > 0)
        self.ids.fill_(-1)
        self.counts.zero_()
        self.ids[row[keep], rank[keep]] = item[keep]
        self.counts[row[keep], rank[keep]] = reduced[keep]

    @staticmethod
    def _by_row_then_count(row: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
        """The order of entries by row, then by count descending; ties keep their order (item ascending).
        One sort of a composite key (a sort is most of a merge's time on a GPU): counts stay below
        COUNT_LIMIT (2^40), so the key fits int64 for up to 2^23 rows."""
        return (row * COUNT_LIMIT + (COUNT_LIMIT - 1 - summed)).argsort(stable=True)

    def top(self) -> TopItems:
        """The table on CPU, each row's items by descending count (as stored)."""
        self._merge()
        return TopItems(self.ids.cpu(), self.counts.cpu())

    def error_bound(self) -> torch.Tensor:
        """(n_rows,) float64: the most any stored count can be below the true count, ``(n - stored) / (k + 1)``."""
        self._merge()
        return (self.seen - self.counts.sum(1)).double().cpu() / (self.k + 1)


DENSE_MAX_CELLS = 1 << 23
"""Largest ``n_rows x n_items`` table counted exactly (64 MB of int64): small SAEs get exact counts, cheaply."""


class ExactCounts:
    """The same interface as :class:`HeavyHitters`, counting every (row, item) exactly in a dense table.

    Used when the table is small (``n_rows * n_items <= DENSE_MAX_CELLS``): one ``bincount`` per batch
    instead of a sort, and no approximation. ``top()`` keeps the ``k`` largest per row.
    """

    def __init__(self, n_rows: int, n_items: int, k: int, device: torch.device | str = "cpu"):
        self.n_rows, self.n_items, self.k = n_rows, n_items, min(k, n_items)
        self.table = torch.zeros(n_rows * n_items, dtype=torch.long, device=device)
        self.seen = torch.zeros(n_rows, dtype=torch.long, device=device)

    def update(self, rows: torch.Tensor, items: torch.Tensor) -> None:
        if rows.numel() == 0:
            return
        dev = self.table.device
        rows, items = rows.to(dev).long(), items.to(dev).long()
        self.seen += torch.bincount(rows, minlength=self.n_rows)
        self.table += torch.bincount(rows * self.n_items + items, minlength=self.table.numel())

    def update_cooccurring(self, groups: torch.Tensor, items: torch.Tensor, n_groups: int) -> None:
        """Count every ordered pair of distinct items that share a group, ``(row a, item b)``, as
        ``update`` would from the pairs themselves (rows and items one id space: a square table).
        ``(groups[j], items[j])`` must be distinct.

        Why not the pairs: a group of ``s`` items has ``s^2`` pairs, and building them costs several index
        passes each; here it is one sparse x dense product, (rows x groups) @ (groups x items), whose cost
        is (entries x n_items) multiply-adds, a third of the pair route's time (:meth:`HeavyHitters.update_cooccurring`)
        on the demo's index pass.
        """
        if self.n_rows != self.n_items:
            raise ValueError("co-occurrence needs a square table (rows and items one id space)")
        if n_groups >= 1 << 24:
            raise ValueError("at most 2^24 groups per call: the product's float32 counts are exact below that")
        if items.numel() == 0:
            return
        dev = self.table.device
        groups, items = groups.to(dev).long(), items.to(dev).long()
        ones = torch.ones(len(items), device=dev)
        by_row = torch.sparse_coo_tensor(torch.stack([items, groups]), ones, (self.n_rows, n_groups), check_invariants=False)
        dense = torch.zeros(n_groups, self.n_items, device=dev)
        dense[groups, items] = 1.0
        pairs = torch.sparse.mm(by_row, dense)  # (n_rows, n_items): groups shared; exact, each <= n_groups < 2^24
        pairs.fill_diagonal_(0)  # an item is not its own partner
        pairs = pairs.round().long()
        self.seen += pairs.sum(1)
        self.table += pairs.view(-1)

    def top(self) -> TopItems:
        counts, ids = self.table.view(self.n_rows, self.n_items).topk(self.k, dim=1)
        ids = ids.masked_fill(counts == 0, -1)
        return TopItems(ids.cpu(), counts.cpu())

    def error_bound(self) -> torch.Tensor:
        """(n_rows,) float64: the most a reported count is below the truth (0: counts are exact)."""
        return torch.zeros(self.n_rows, dtype=torch.float64)


def counter(n_rows: int, n_items: int, k: int, device: torch.device | str = "cpu") -> HeavyHitters | ExactCounts:
    """Exact counts when the full table is small, else a ``k``-slot Misra-Gries table per row."""
    if n_rows * n_items <= DENSE_MAX_CELLS:
        return ExactCounts(n_rows, n_items, k, device)
    return HeavyHitters(n_rows, n_items, k, device)
