"""Misra-Gries tables against exact counts."""

from collections import Counter

import pytest
import torch

from sae_lib.heavy_hitters import HeavyHitters


def _stream(n_rows, n_items, n, seed):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, n_rows, (n,), generator=g)
    # Skewed items: a few heavy ones per row, a long tail.
    heavy = (rows * 7) % n_items
    tail = torch.randint(0, n_items, (n,), generator=g)
    items = torch.where(torch.rand(n, generator=g) < 0.5, heavy, tail)
    return rows, items


def _exact(rows, items):
    out = {}
    for r, t in zip(rows.tolist(), items.tolist()):
        out.setdefault(r, Counter())[t] += 1
    return out


# merge_at: every batch merges (the table's size, 30 or 12, is below a batch), every fourth batch, or
# only when the table is read: the counts and the guarantees are the same.
MERGE_AT = [None, 1000, 10**9]


@pytest.mark.parametrize("merge_at", MERGE_AT)
def test_exact_when_every_item_fits(merge_at):
    rows, items = _stream(5, 6, 2000, 0)
    hh = HeavyHitters(5, 6, k=6, merge_at=merge_at)
    for chunk in range(0, 2000, 300):  # batches of several sizes (the last is short)
        hh.update(rows[chunk : chunk + 300], items[chunk : chunk + 300])
    top = hh.top()
    exact = _exact(rows, items)
    for r in range(5):
        got = {int(i): int(c) for i, c in zip(top.ids[r], top.counts[r]) if i >= 0}
        assert got == dict(exact[r])
        assert top.counts[r].tolist() == sorted(top.counts[r].tolist(), reverse=True)
    assert hh.seen.tolist() == [sum(exact[r].values()) for r in range(5)]
    assert hh.error_bound().tolist() == [0.0] * 5


@pytest.mark.parametrize("merge_at", MERGE_AT)
def test_misra_gries_guarantees_with_few_slots(merge_at):
    n_rows, n_items, k = 4, 50, 3
    rows, items = _stream(n_rows, n_items, 5000, 1)
    hh = HeavyHitters(n_rows, n_items, k, merge_at=merge_at)
    for chunk in range(0, 5000, 250):
        hh.update(rows[chunk : chunk + 250], items[chunk : chunk + 250])
    top, bound = hh.top(), hh.error_bound()
    exact = _exact(rows, items)
    for r in range(n_rows):
        n = sum(exact[r].values())
        assert bound[r] <= n / (k + 1) + 1e-9
        stored = {int(i): int(c) for i, c in zip(top.ids[r], top.counts[r]) if i >= 0}
        for item, c in stored.items():  # never above the truth, at most the bound below it
            assert exact[r][item] - bound[r] <= c <= exact[r][item]
        for item, c in exact[r].items():  # everything frequent enough is kept
            if c > n / (k + 1):
                assert item in stored
        assert (r * 7) % n_items == top.ids[r, 0]  # the planted heavy item ranks first


def test_exact_counts_and_the_choice_between_them():
    from sae_lib.heavy_hitters import DENSE_MAX_CELLS, ExactCounts, counter

    rows, items = _stream(5, 50, 3000, 2)
    exact = _exact(rows, items)
    ec = ExactCounts(5, 50, k=4)
    ec.update(rows[:1000], items[:1000])
    ec.update(rows[1000:], items[1000:])
    top = ec.top()
    for r in range(5):
        want = sorted(exact[r].values(), reverse=True)[:4]
        assert top.counts[r].tolist() == want
        assert all(exact[r][int(i)] == int(c) for i, c in zip(top.ids[r], top.counts[r]))
    assert isinstance(counter(1024, 1024, 32), ExactCounts)
    assert isinstance(counter(65_536, 151_936, 32), HeavyHitters)  # 10^10 cells: bounded instead
    assert 1024 * 2048 <= DENSE_MAX_CELLS < 65_536 * 65_536


def test_cooccurring_pairs_by_product_equal_the_pairs_counted_one_by_one():
    from sae_lib.heavy_hitters import ExactCounts

    g = torch.Generator().manual_seed(3)
    n_groups, n = 40, 30
    groups = torch.randint(0, n_groups, (400,), generator=g)
    items = torch.randint(0, n, (400,), generator=g)
    key = torch.unique(groups * n + items)  # distinct (group, item) entries, as nonzero() gives them
    groups, items = key // n, key % n
    rows, partners = [], []  # naive: every ordered pair of distinct items in each group
    for grp in range(n_groups):
        members = items[groups == grp].tolist()
        for a in members:
            for b in members:
                if a != b:
                    rows.append(a)
                    partners.append(b)
    by_pairs, by_product = ExactCounts(n, n, k=n), ExactCounts(n, n, k=n)
    by_pairs.update(torch.tensor(rows), torch.tensor(partners))
    by_product.update_cooccurring(groups, items, n_groups)
    assert len(rows) > 500 and torch.equal(by_product.table, by_pairs.table)
    assert torch.equal(by_product.seen, by_pairs.seen)
    # The bounded table lists the pairs itself; with a slot per item nothing is evicted: the same counts.
    listed = HeavyHitters(n, n, k=n)
    listed.update_cooccurring(groups, items, n_groups)
    assert torch.equal(listed.top().counts, by_pairs.top().counts) and torch.equal(listed.seen, by_pairs.seen)
    with pytest.raises(ValueError, match="square"):
        ExactCounts(n, n + 1, k=2).update_cooccurring(groups, items, n_groups)


def test_one_sort_orders_entries_as_two_stable_sorts_do():
    # Entries as a merge sees them (sorted by row, then item), with many tied counts.
    g = torch.Generator().manual_seed(5)
    row = torch.randint(0, 50, (5000,), generator=g).sort().values
    summed = torch.randint(1, 6, (5000,), generator=g)
    reference = summed.argsort(descending=True, stable=True)  # by count, then stably by row
    reference = reference[row[reference].argsort(stable=True)]
    assert torch.equal(HeavyHitters._by_row_then_count(row, summed), reference)
