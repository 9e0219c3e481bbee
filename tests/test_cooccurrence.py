"""Token and co-firing counts of the index pass against naive counting; labels and neighbours from them."""

from collections import Counter

import pytest
import torch

from sae_lib import latent_index as li
from sae_lib.labels import all_labels, lift_matrix, lift_tokens
from sae_lib.neighbours import cofiring_neighbours, decoder_neighbours
from tests.conftest import TINY_HOOK

N_SEQ, CTX, SKIP = 21, 12, 1


@pytest.fixture(scope="module")
def tokens(tiny_model):
    g = torch.Generator().manual_seed(2)
    return torch.randint(1, tiny_model.cfg.d_vocab, (N_SEQ, CTX), generator=g)


@pytest.fixture(scope="module")
def acts(tiny_model, tiny_sae, tokens):
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens, names_filter=[TINY_HOOK])
        return tiny_sae.encode(cache[TINY_HOOK])[:, SKIP:]  # (n_seq, ctx - skip, d_sae)


def _cfg(**kw):
    return li.IndexConfig(top_k=3, n_lower_examples=1, window=4, window_before=2, batch_size=5,
                          skip_positions=SKIP, **kw)


@pytest.fixture(scope="module")
def exact_index(tiny_model, tiny_sae, tokens):
    # Slots for every token and every latent: nothing is evicted, so counts must be exact.
    return li.build_index(tiny_model, tiny_sae, tokens, _cfg(k_tokens=tiny_model.cfg.d_vocab, k_cofire=96))


def test_token_counts_are_exact_with_enough_slots(exact_index, tokens, acts):
    counts = exact_index.counts
    toks = tokens[:, SKIP:]
    assert counts.token_base.tolist() == torch.bincount(toks.flatten(), minlength=len(counts.token_base)).tolist()
    for i in range(acts.shape[-1]):
        fired = acts[..., i] > 0
        ref = Counter(toks[fired].tolist())
        got = {int(t): int(c) for t, c in zip(counts.token_ids[i], counts.token_counts[i]) if t >= 0}
        assert got == dict(ref), i
        assert int(counts.token_seen[i]) == int(fired.sum()) == int(exact_index.count[i])


def test_cofire_counts_are_exact_with_enough_slots_and_budget(exact_index, acts):
    counts = exact_index.counts
    fired = (acts > 0).reshape(-1, acts.shape[-1]).long()  # (tokens, d_sae)
    co = fired.T @ fired  # naive d_sae x d_sae co-occurrence
    assert int(counts.cofire_positions) == fired.shape[0]
    assert counts.cofire_fired.tolist() == fired.sum(0).tolist()
    for i in range(co.shape[0]):
        ref = {j: int(co[i, j]) for j in range(co.shape[0]) if j != i and co[i, j] > 0}
        got = {int(j): int(c) for j, c in zip(counts.cofire_ids[i], counts.cofire_counts[i]) if j >= 0}
        assert got == ref, i
    # Neighbours by Jaccard, against the naive matrix.
    i = int(fired.sum(0).argmax())
    f = fired.sum(0).double()
    jac = co[i].double() / (f[i] + f - co[i].double()).clamp(min=1)
    jac[i] = -1
    nb = cofiring_neighbours(counts, i, n=5)
    torch.testing.assert_close(torch.tensor(nb.scores, dtype=torch.float64), jac.topk(5).values)


def test_cofire_budget_subsamples_whole_positions(tiny_model, tiny_sae, tokens, acts):
    per_pos = (acts > 0).sum(-1)  # (n_seq, P) latents firing at each position
    budget = 4 * int(per_pos.max()) ** 2  # a few positions per batch
    index = li.build_index(tiny_model, tiny_sae, tokens, _cfg(k_cofire=96, cofire_pairs_per_batch=budget))
    counts = index.counts
    n_batches = -(-N_SEQ // 5)
    assert n_batches * 4 <= int(counts.cofire_positions) < per_pos.numel()
    # Positions are taken whole: every latent firing at a sampled position pairs with all the others there,
    # so the pair total is sum(size^2 - size) and the firing total is sum(size) over the sampled positions.
    total_pairs, total_fired = int(counts.cofire_counts.sum()), int(counts.cofire_fired.sum())
    assert total_pairs <= budget * n_batches
    sizes = per_pos.flatten()
    assert total_fired <= int(sizes.sum())
    # The same positions count for both latents of a pair: the table (exact, k = d_sae) is symmetric.
    co = torch.zeros(96, 96, dtype=torch.long)
    for i in range(96):
        held = counts.cofire_ids[i] >= 0
        co[i, counts.cofire_ids[i][held]] = counts.cofire_counts[i][held]
    assert torch.equal(co, co.T) and int(co.sum()) > 0
    # Token counts are not subsampled.
    assert int(counts.token_seen.sum()) == int((acts > 0).sum())


def test_lift_against_definition(exact_index, tokens, acts):
    counts = exact_index.counts
    toks = tokens[:, SKIP:].flatten()
    base = torch.bincount(toks, minlength=len(counts.token_base)).double()
    i = int(exact_index.count.argmax())
    fired = (acts[..., i] > 0).flatten()
    ref = {}
    for t, c in Counter(toks[fired].tolist()).items():
        share = c / int(fired.sum())
        if c >= 2 and share >= 0.02:
            ref[t] = share / (base[t] / len(toks)).item()
    got = lift_tokens(counts, i, n=100)
    assert dict(zip(got.ids, got.lifts)) == pytest.approx(ref)
    assert got.lifts == sorted(got.lifts, reverse=True)
    assert (lift_matrix(counts) >= 0).all()


def test_labels_cover_every_alive_latent(exact_index):
    labels = all_labels(exact_index)
    assert len(labels) == exact_index.d_sae
    for i, label in enumerate(labels):
        assert (label == "") == bool(exact_index.dead[i])
        if label:
            assert "promotes: " in label
    # Without counts (an older index): the logit-lens part only.
    old = li.LatentIndex(**{**exact_index.__dict__, "counts": None})
    assert all("fires on" not in lab for lab in all_labels(old))


def test_decoder_neighbours_against_naive(tiny_sae):
    W = tiny_sae.W_dec.detach()
    cos = torch.nn.functional.cosine_similarity(W[7][None], W, dim=1)
    cos[7] = -2
    nb = decoder_neighbours(tiny_sae, 7, n=10)
    assert nb.latents == cos.topk(10).indices.tolist() and 7 not in nb.latents
    torch.testing.assert_close(torch.tensor(nb.scores), cos.topk(10).values)


def test_bounded_tables_give_the_exact_answer_when_nothing_is_evicted(tiny_model, tiny_sae, tokens, exact_index, monkeypatch):
    """The Misra-Gries path (what a 65,536-latent SAE uses) against the dense exact path, through the pass."""
    import sae_lib.heavy_hitters as hh

    monkeypatch.setattr(hh, "DENSE_MAX_CELLS", 0)
    bounded = li.build_index(tiny_model, tiny_sae, tokens, _cfg(k_tokens=tiny_model.cfg.d_vocab, k_cofire=96)).counts
    exact = exact_index.counts
    for ids, counts in (("token_ids", "token_counts"), ("cofire_ids", "cofire_counts")):
        for i in range(exact.token_seen.shape[0]):
            a = {int(t): int(c) for t, c in zip(getattr(bounded, ids)[i], getattr(bounded, counts)[i]) if t >= 0}
            b = {int(t): int(c) for t, c in zip(getattr(exact, ids)[i], getattr(exact, counts)[i]) if t >= 0}
            assert a == b, (ids, i)


def test_exact_counts_keep_the_best_partners_by_jaccard_not_by_count():
    """Latent 0 fires at 50 positions; dense latent 1 fires everywhere (50 shared, Jaccard 0.05); rare
    latent 2 fires at 40 of latent 0's positions and nowhere else (Jaccard 0.8). With one slot, the
    exact path must keep latent 2: the neighbours rank by Jaccard, and count alone picks the dense one."""
    from sae_lib.cooccurrence import CountsAccumulator

    n_pos, d_sae = 1000, 3
    acc = CountsAccumulator(d_sae, vocab=5, k_tokens=1, k_cofire=1, cofire_pairs_per_batch=10**6)
    fired = torch.zeros(n_pos, d_sae, dtype=torch.bool)
    fired[:50, 0] = True
    fired[:, 1] = True
    fired[:40, 2] = True
    pos, lat = fired.nonzero(as_tuple=True)
    acc.update(torch.zeros(1, n_pos, dtype=torch.long), (pos, lat), n_pos)
    counts = acc.finish()
    assert counts.cofire_ids[0].tolist() == [2] and counts.cofire_counts[0].tolist() == [40]
    nb = cofiring_neighbours(counts, 0)
    assert nb.latents == [2] and nb.scores == pytest.approx([40 / (50 + 40 - 40)])
    assert counts.cofire_ids[1].tolist() == [0]  # the dense latent's best: 50 / 1000, above 40 / 1000


def _brute_jaccard(F: torch.Tensor, a: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent ``a``'s co-firing counts and Jaccard with every latent over the firing matrix ``F``
    (positions, d_sae), itself excluded (-1)."""
    F = F.double()
    f, co = F.sum(0), F[:, a] @ F
    jac = co / (f[a] + f - co).clamp(min=1)
    jac[a] = -1
    return co, jac


def test_wide_saes_rank_partners_by_exact_jaccard_despite_dense_latents():
    """Wider than the dense table (3,000 latents here; the flagship's 65,536), a bounded Misra-Gries table
    kept a latent's most frequent partners, and with ~L0 partners per firing its error bound exceeded any
    true count: 40 dense latents crowded out latent B, which fires only with A (Jaccard 0.29), and the
    Jaccards shown were ~0.004. The sampled positions are counted exactly: the neighbours are the truth."""
    from sae_lib.cooccurrence import CountsAccumulator, SampledPositions

    g = torch.Generator().manual_seed(0)
    d_sae, n_pos, a, b = 3000, 2048, 100, 200
    acc = CountsAccumulator(d_sae, vocab=50, k_tokens=4, k_cofire=8, cofire_pairs_per_batch=1 << 30)
    assert isinstance(acc.cofire, SampledPositions)
    batches = []
    for _ in range(3):
        F = torch.zeros(n_pos, d_sae, dtype=torch.bool)
        F[:, 1000:1040] = torch.rand(n_pos, 40, generator=g) < 0.5  # dense: half of all tokens
        F[:, 2000:2100] = torch.rand(n_pos, 100, generator=g) < 0.02  # sparse background
        F[:, a] = torch.rand(n_pos, generator=g) < 0.1
        F[:, b] = F[:, a] & (torch.rand(n_pos, generator=g) < 0.3)  # only with A
        pos, lat = F.nonzero(as_tuple=True)
        acc.update(torch.randint(0, 50, (1, n_pos), generator=g), (pos, lat), n_pos)
        batches.append(F)
    F = torch.cat(batches)
    counts = acc.finish()
    assert int(counts.cofire_positions) == F.shape[0]
    assert torch.equal(counts.cofire_fired, F.sum(0).long())
    for latent in (a, b, 1005, 2050, 2999):
        co, jac = _brute_jaccard(F, latent)
        nb = cofiring_neighbours(counts, latent, n=8)
        want = jac.topk(8)
        assert nb.scores == pytest.approx(want.values[: len(nb.scores)].tolist(), abs=1e-12), latent
        assert all(co[i] == c for i, c in zip(counts.cofire_ids[latent].tolist(), counts.cofire_counts[latent].tolist())
                   if i >= 0), latent
    assert cofiring_neighbours(counts, a, n=1).latents == [b]
    assert cofiring_neighbours(counts, a, n=1).scores[0] > 0.25


def test_wide_co_firing_sample_is_thinned_uniformly_and_counted_over_what_it_kept():
    """Past its memory bound the sample halves (at random) and keeps later positions at half the rate, so
    early and late text stay equally represented; the counts are exact over the positions kept."""
    from sae_lib.cooccurrence import SampledPositions

    g = torch.Generator().manual_seed(1)
    d_sae, n_pos = 64, 500
    sp = SampledPositions(d_sae, k=4, generator=torch.Generator().manual_seed(2), max_entries=3000)
    marker = 63  # fires at every position of the first half of the batches only
    for i in range(8):
        F = torch.rand(n_pos, d_sae, generator=g) < 0.05
        F[:, marker] = i < 4
        pos, lat = F.nonzero(as_tuple=True)
        sp.add(pos, lat, torch.ones(n_pos, dtype=torch.bool), torch.bincount(pos, minlength=n_pos))
    assert sp.keep < 1 and sp.entries <= 3000
    lat, sizes = sp._flat()
    kept = torch.zeros(len(sizes), d_sae, dtype=torch.bool)
    kept[torch.repeat_interleave(torch.arange(len(sizes)), sizes), lat] = True
    share_early = float(kept[:, marker].float().mean())
    assert 0.35 < share_early < 0.65  # half of the text carries the marker; a biased sample would not
    top = sp.top()
    assert torch.equal(sp.fired(), kept.sum(0).long())
    for latent in (0, 17, marker):
        co, jac = _brute_jaccard(kept, latent)
        got = [i for i in top.ids[latent].tolist() if i >= 0]
        assert sorted(jac[got].tolist(), reverse=True) == pytest.approx(jac.topk(len(got)).values.tolist())
        assert [int(co[i]) for i in got] == top.counts[latent][: len(got)].tolist()


def test_wide_co_firing_counts_the_same_in_small_chunks():
    """The end's pair counting in chunks (bounded memory when a block holds dense latents) adds up to
    the same counts as in one go."""
    from sae_lib.cooccurrence import SampledPositions

    g = torch.Generator().manual_seed(4)
    F = torch.rand(300, 40, generator=g) < 0.3
    pos, lat = F.nonzero(as_tuple=True)
    tops = []
    for max_pairs in (1 << 25, 7):
        sp = SampledPositions(40, k=40, max_pairs_per_chunk=max_pairs)
        sp.add(pos, lat, torch.ones(300, dtype=torch.bool), torch.bincount(pos, minlength=300))
        tops.append(sp.top(block=16))
    assert torch.equal(tops[0].ids, tops[1].ids) and torch.equal(tops[0].counts, tops[1].counts)
    co = F.double().T @ F.double()
    for a in range(40):
        got = {int(i): int(c) for i, c in zip(tops[0].ids[a], tops[0].counts[a]) if i >= 0}
        assert got == {b: int(co[a, b]) for b in range(40) if b != a and co[a, b] > 0}
