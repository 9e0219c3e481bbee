"""The one-pass latent index against the write-up's per-latent loop, and its files, checks and readers."""

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sae_lens import JumpReLUSAE

from sae_lib import latent_index as li
from sae_lib.latent_index.build import _Accumulator
from sae_lib.latent_index.query import _peak_tokens
from sae_lib.latent_index.store import _STAT_FIELDS
from sae_lib.packing import pack_texts
from sae_lib.constants import INDEX_CONTEXTS_FILENAME, INDEX_COUNTS_FILENAME, INDEX_META_FILENAME, INDEX_STATS_FILENAME
from sae_lib.errors import CompatibilityError, InputError
from tests.conftest import TINY_HOOK

N_SEQ, CTX = 37, 16  # 37 rows: the last batch is partial
CFG = li.IndexConfig(n_bins=16, top_k=5, n_lower_examples=3, window=6, window_before=4, batch_size=8, n_logit_tokens=4)


@pytest.fixture(scope="module")
def tokens(tiny_model):
    # Random tokens: no two rows alike, so top-k sets have no ties.
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, tiny_model.cfg.d_vocab, (N_SEQ, CTX), generator=g)


@pytest.fixture(scope="module")
def index(tiny_model, tiny_sae, tokens):
    return li.build_index(tiny_model, tiny_sae, tokens, CFG)


@pytest.fixture(scope="module")
def batch_acts(tiny_model, tiny_sae, tokens):
    """The write-up's forward per batch (to the hook's layer, then the SAE), kept whole: (n_seq, ctx, d_sae)."""
    out = []
    with torch.no_grad():
        for b in range(0, N_SEQ, CFG.batch_size):
            _, cache = tiny_model.run_with_cache(tokens[b : b + CFG.batch_size], stop_at_layer=2, names_filter=[TINY_HOOK])
            out.append(tiny_sae.encode(cache[TINY_HOOK]))
    return torch.cat(out)


def naive_latent(batch_acts, latent, skip=0):
    """The write-up's ``show_activation_histogram`` loop body for one latent: its column, its positive values."""
    acts = batch_acts[..., latent]  # (n_seq, ctx)
    kept = acts[:, skip:]
    return kept[kept > 0].numpy().astype(np.float32), acts  # (n_pos,), (n_seq, ctx)


def test_one_pass_matches_naive_per_latent_loop(tiny_sae, tokens, index, batch_acts):
    n_tokens = N_SEQ * CTX
    assert index.meta.n_tokens == n_tokens
    n_alive = 0
    for i in range(tiny_sae.cfg.d_sae):
        pos, acts = naive_latent(batch_acts, i)
        assert int(index.count[i]) == len(pos)
        assert float(index.density[i]) == len(pos) / n_tokens
        if len(pos) == 0:
            assert index.dead[i] and float(index.max_act[i]) == 0.0
            assert int(index.hist[i].sum()) == 0 and int((index.top.row[i] >= 0).sum()) == 0
            continue
        n_alive += 1
        assert float(index.max_act[i]) == pos.max()
        torch.testing.assert_close(index.mean_act[i].item(), float(pos.astype(np.float64).mean()), rtol=1e-6, atol=0)
        # Histogram: exact counts on the index's own edges [0, 2**exp), which must contain the max.
        upper = 2.0 ** int(index.hist_exp[i])
        assert upper / 2 <= pos.max() < upper
        ref, _ = np.histogram(pos, bins=CFG.n_bins, range=(0.0, upper))
        np.testing.assert_array_equal(index.hist[i].numpy(), ref)
        # Top-k contexts: the k rows with the largest per-row max, same set, same values, windows right.
        row_max, row_arg = acts.max(dim=1)
        firing = (row_max > 0).nonzero().squeeze(1)
        k = min(CFG.top_k, len(firing))
        ref_val, ref_rows = row_max.topk(k)
        got = index.top.row[i] >= 0
        assert int(got.sum()) == k
        torch.testing.assert_close(index.top.value[i][got], ref_val, rtol=0, atol=0)
        # Same set; rows tied with the k-th value (rows that start alike) may be swapped for each other.
        kth = ref_val[-1]
        above = set(ref_rows[ref_val > kth].tolist())
        got_rows = index.top.row[i][got]
        assert set(got_rows[index.top.value[i][got] > kth].tolist()) == above
        assert set(got_rows.tolist()) - above <= set((row_max == kth).nonzero().squeeze(1).tolist())
        for s in range(k):
            r, start = int(index.top.row[i, s]), int(index.top.start[i, s])
            assert int(index.top.pos[i, s]) == int(row_arg[r])
            assert start <= int(index.top.pos[i, s]) < start + CFG.window and 0 <= start <= CTX - CFG.window
            torch.testing.assert_close(index.top.acts[i, s], acts[r, start : start + CFG.window], rtol=0, atol=0)
            assert index.top.tokens[i, s].tolist() == tokens[r, start : start + CFG.window].tolist()
        # Lower-range examples: distinct firing rows, each shown at one of its firings (its value there).
        srow = index.samples.row[i][index.samples.row[i] >= 0]
        assert len(srow) == min(CFG.n_lower_examples, len(firing))
        assert len(set(srow.tolist())) == len(srow) and set(srow.tolist()) <= set(firing.tolist())
        spos = index.samples.pos[i][: len(srow)]
        shown = acts[srow, spos]
        assert bool((shown > 0).all())
        torch.testing.assert_close(index.samples.value[i][: len(srow)], shown, rtol=0, atol=0)
    assert 10 < n_alive  # the comparison covered many live latents, not just dead ones


def test_lower_range_examples_are_a_uniform_sample_of_firings_not_row_maxima():
    """Each row fires at 10 positions with activations 1..10 (10 is every row's max): a uniform sample
    of firings averages 5.5; the rows' maxima would all be 10."""
    from sae_lib.latent_index.build import _Accumulator

    d_sae, rows, ctx = 300, 12, 16
    cfg = li.IndexConfig(n_bins=16, top_k=2, n_lower_examples=3, window=4, window_before=2, batch_size=4)
    acc = _Accumulator(d_sae, cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for row0 in range(0, rows, 4):
        feats = torch.zeros(4, ctx, d_sae)
        for b in range(4):
            for lat in range(d_sae):
                feats[b, torch.randperm(ctx, generator=gen)[:10], lat] = torch.arange(1.0, 11.0)
        acc.update(feats, row0)
    assert bool((acc.samples.row >= 0).all())  # 3 distinct rows each
    values = acc.samples.value  # (300, 3)
    assert abs(values.mean().item() - 5.5) < 0.3  # sd of the mean of 900 draws from 1..10: 0.1
    assert (values == 10).float().mean().item() < 0.15  # about 1 in 10, not every one
    torch.testing.assert_close(acc.top.value, torch.full((d_sae, 2), 10.0))  # the top contexts keep the maxima


def test_dense_and_dead_classification(index):
    # The random tiny SAE fires a lot: put the threshold at the median density to get both kinds.
    thr = float(index.density.median())
    idx = dataclasses.replace(index, meta=dataclasses.replace(index.meta, config={**index.meta.config, "dense_threshold": thr}))
    assert torch.equal(idx.dense, idx.density > thr)
    assert 0 < int(idx.dense.sum()) < idx.d_sae
    assert torch.equal(idx.dead, idx.count == 0)
    # A latent that never fires is dead, with an empty histogram and no contexts.
    dead_row = torch.zeros(1, CTX, 2)
    dead_row[0, 3, 1] = 0.5
    acc = _Accumulator(2, CFG, torch.device("cpu"))
    acc.update(dead_row, 0)
    assert acc.count.tolist() == [0, 1] and int(acc.hist[0].sum()) == 0 and int(acc.top.row[0, 0]) == -1


def test_skip_positions_leaves_leading_tokens_out(tiny_model, tiny_sae, tokens, batch_acts):
    cfg = dataclasses.replace(CFG, skip_positions=3)
    idx = li.build_index(tiny_model, tiny_sae, tokens, cfg)
    assert idx.meta.n_tokens == N_SEQ * (CTX - 3)
    for i in (0, 7, 50):
        pos, acts = naive_latent(batch_acts, i, skip=3)
        assert int(idx.count[i]) == len(pos)
        got = idx.top.row[i] >= 0
        assert (idx.top.pos[i][got] >= 3).all()
        torch.testing.assert_close(idx.top.value[i][got], acts[:, 3:].max(dim=1).values.topk(int(got.sum())).values)


def test_histogram_range_doubling_merges_bins_exactly():
    # Values arriving smallest first force the range to double several times mid-stream.
    cfg = li.IndexConfig(n_bins=8, top_k=2, n_lower_examples=0, window=2, window_before=0)
    acc = _Accumulator(3, cfg, torch.device("cpu"))
    stream = [torch.tensor([0.1, 0.0, 0.3]), torch.tensor([0.7, 0.0, 0.2]), torch.tensor([5.0, 0.0, 0.26])]
    for r, vals in enumerate(stream):
        acc.update(vals.view(1, 1, 3).expand(1, 2, 3).contiguous(), r)
    for lat, upper in ((0, 8.0), (2, 0.5)):
        assert 2.0 ** int(acc.hist_exp[lat]) == upper
        ref, _ = np.histogram(np.repeat([v[lat].item() for v in stream], 2), bins=8, range=(0, upper))
        np.testing.assert_array_equal(acc.hist[lat].numpy(), ref)
    assert int(acc.hist[1].sum()) == 0


def test_logit_lens_goes_through_final_norm_weight(tiny_model, tiny_sae):
    model = copy.deepcopy(tiny_model)  # the session model is shared: never mutate it
    with torch.no_grad():
        model.ln_final.w.copy_(torch.rand(model.cfg.d_model) * 3)
    lens = li.logit_lens(model, tiny_sae, n=4)
    assert "ln_final.w" in lens.how
    for i in (0, 5, 95):
        ref = (tiny_sae.W_dec[i] * model.ln_final.w) @ model.W_U  # (d_vocab,)
        assert lens.top_ids[i].tolist() == ref.topk(4).indices.tolist()
        assert lens.bottom_ids[i].tolist() == ref.topk(4, largest=False).indices.tolist()
        torch.testing.assert_close(lens.top_vals[i], ref.topk(4).values.detach())
    # Without the norm weight the ranking differs for some latent: the weight matters.
    plain = (tiny_sae.W_dec @ model.W_U).topk(4).indices
    assert not torch.equal(plain, lens.top_ids)


def test_save_load_round_trip(tmp_path, index, tiny_sae):
    li.save_index(index, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [INDEX_STATS_FILENAME, INDEX_CONTEXTS_FILENAME, INDEX_META_FILENAME, INDEX_COUNTS_FILENAME]
    )  # no temporary files left behind
    loaded = li.load_index(tmp_path, tiny_sae)
    assert loaded.meta == index.meta
    for name in _STAT_FIELDS:
        assert torch.equal(getattr(loaded, name), getattr(index, name)), name
    for kind in ("top", "samples"):
        for a, b in zip(getattr(loaded, kind), getattr(index, kind)):
            assert torch.equal(a, b), kind
    assert loaded.counts is not None
    for name, t in index.counts.tensors().items():
        assert torch.equal(getattr(loaded.counts, name), t), name


def test_a_save_killed_while_writing_keeps_the_older_index_whole(tmp_path, index, tiny_sae, monkeypatch):
    """Rebuilding an index in an SAE folder: a kill while the contexts are written (seconds at 65,536
    latents) must leave the older index loadable, not its statistics beside the new build's."""
    li.save_index(index, tmp_path)
    newer = dataclasses.replace(index, meta=dataclasses.replace(index.meta, build_id="newer"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    import sae_lib.latent_index.store as store

    monkeypatch.setattr(store.pq, "write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        li.save_index(newer, tmp_path)
    assert li.load_index(tmp_path, tiny_sae).meta.build_id == index.meta.build_id
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [INDEX_STATS_FILENAME, INDEX_CONTEXTS_FILENAME, INDEX_META_FILENAME, INDEX_COUNTS_FILENAME]
    )  # no temporary file left either
    monkeypatch.undo()
    li.save_index(newer, tmp_path)
    assert li.load_index(tmp_path, tiny_sae).meta.build_id == "newer"


@pytest.mark.parametrize("name", [INDEX_STATS_FILENAME, INDEX_CONTEXTS_FILENAME, INDEX_COUNTS_FILENAME])
def test_a_truncated_index_file_is_damaged_not_a_traceback(tmp_path, index, tiny_sae, name):
    li.save_index(index, tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:100])  # a copy cut short, a disk that filled up
    with pytest.raises(CompatibilityError, match=f"incomplete or damaged \\(unreadable {name}: .*Rebuild it"):
        li.load_index(tmp_path, tiny_sae)


def test_load_refuses_index_of_another_sae(tmp_path, index, tiny_sae):
    li.save_index(index, tmp_path)
    other = copy.deepcopy(tiny_sae)
    with torch.no_grad():
        other.b_enc[3] += 1e-3
    with pytest.raises(CompatibilityError, match="different SAE weights"):
        li.load_index(tmp_path, other)
    wider = JumpReLUSAE(dataclasses.replace(tiny_sae.cfg, d_sae=128))
    with pytest.raises(CompatibilityError, match="d_sae 96"):
        li.load_index(tmp_path, wider)


def test_load_accepts_same_sae_in_bfloat16_but_not_another(tmp_path, index, tiny_sae):
    li.save_index(index, tmp_path)
    assert li.load_index(tmp_path, copy.deepcopy(tiny_sae).to(torch.bfloat16)) is not None
    other = copy.deepcopy(tiny_sae)
    with torch.no_grad():
        other.W_dec.mul_(1.5)
    with pytest.raises(CompatibilityError):
        li.load_index(tmp_path, other.to(torch.bfloat16))


def test_load_missing_and_mixed_builds(tmp_path, index, tiny_sae):
    assert li.load_index(tmp_path, tiny_sae) is None
    li.save_index(index, tmp_path)
    meta = json.loads((tmp_path / INDEX_META_FILENAME).read_text())
    meta["build_id"] = "someone-else"
    (tmp_path / INDEX_META_FILENAME).write_text(json.dumps(meta))
    with pytest.raises(CompatibilityError, match="different builds"):
        li.load_index(tmp_path, tiny_sae)
    (tmp_path / INDEX_CONTEXTS_FILENAME).unlink()
    with pytest.raises(CompatibilityError, match="missing"):
        li.load_index(tmp_path, tiny_sae)


def test_config_rejects_bad_values():
    with pytest.raises(InputError, match="power of two"):
        li.IndexConfig(n_bins=50)
    with pytest.raises(InputError, match="window_before"):
        li.IndexConfig(window=8, window_before=8)
    with pytest.raises(InputError, match="dense_threshold"):
        li.IndexConfig(dense_threshold=0)


def test_parse_latent_rejects_bad_input():
    assert li.parse_latent(" 7 ", 96) == 7
    for bad, msg in (("abc", "not a number"), ("96", "out of range"), ("-1", "out of range"), ("1.5", "not a number")):
        with pytest.raises(InputError, match=msg):
            li.parse_latent(bad, 96)
    # A crafted URL is quoted short, whether it is no number or a huge one (a 50,000-character message before)
    for bad, msg in (("[x](https://evil.example) " + "9" * 50_000, "not a number"), ("9" * 4000, "out of range")):
        with pytest.raises(InputError, match=msg) as err:
            li.parse_latent(bad, 96)
        assert len(str(err.value)) < 250 and f"({len(bad):,} characters)" in str(err.value)


def test_histogram_and_title(index):
    i = int(index.count.argmax())
    h = li.latent_histogram(index, i)
    assert h.counts.sum() == int(index.count[i]) and len(h.edges) == len(h.counts) + 1
    assert h.edges[-2] <= float(index.max_act[i]) < h.edges[-1] and h.counts[-1] > 0
    title = li.histogram_title(index, i)
    assert title.startswith(f"Latent {i} Activations Density {float(index.density[i]):.3%}, Max Activation ")


def test_titles_never_round_a_firing_latents_density_to_zero(index):
    """One firing in 10M tokens (the qwen3-8b preset's index): the write-up's ``:.3%`` says 0.000%, which
    reads as dead; the titles give it two significant digits and keep the write-up's format otherwise.
    (The demo model over 307,200 tokens: 29 firing latents' titles said "Density 0.000%".)"""
    count = torch.zeros_like(index.count)
    count[3], count[4] = 1, 2_500_000
    max_act = index.max_act.clone()
    max_act[3], max_act[4], max_act[5] = 0.64, 2.5, 0.0
    rare = dataclasses.replace(index, count=count, max_act=max_act, meta=dataclasses.replace(index.meta, n_tokens=10_000_000))
    assert li.histogram_title(rare, 3) == "Latent 3 Activations Density 0.000010%, Max Activation 0.64"
    assert li.histogram_title(rare, 4) == "Latent 4 Activations Density 25.000%, Max Activation 2.50"
    assert li.sample_title(rare, 3) == "3: 0.000010%, max 0.6"
    assert li.sample_title(rare, 4) == "4: 25.00%, max 2.5"
    assert li.sample_title(rare, 5) == "5: dead"
    # Just below what the places show, and just at it.
    for d in (0.4e-5, 0.49999e-5, 0.5e-5, 0.50001e-5, 1e-9):
        assert float(li.density_text(d)[:-1]) > 0, d
    assert li.density_text(0.0) == "0.000%" and li.density_text(1e-7, 4) == "0.000010%" and li.density_text(1.0) == "100.000%"


def test_latent_table_filters(index):
    full = li.latent_table(index)
    assert len(full) == index.d_sae
    assert set(li.latent_table(index, hide_dead=True)["latent"]) == set((~index.dead).nonzero().squeeze(1).tolist())
    ld = full["log10 density"]
    band = li.latent_table(index, log10_density_range=(-1.5, -0.5), hide_dead=True)
    assert set(band["latent"]) == set(full["latent"][(ld >= -1.5) & (ld <= -0.5)])
    # Search by a token a latent peaks on: that latent is among the hits, and every hit has the token.
    i = int(index.count.argmax())
    tok = index.token_str(int(_peak_tokens(index)[i, 0]))
    hits = li.latent_table(index, query=tok)
    assert i in set(hits["latent"]) and 0 < len(hits) <= len(full)
    assert len(li.latent_table(index, query="no-such-token-xyz")) == 0


def test_a_table_built_once_filters_to_the_same_rows(index):
    # What the Latent browser does on every rerun: filter the once-per-index table by an array mask.
    full = li.all_latents_table(index)
    assert full["latent"].tolist() == list(range(index.d_sae))
    i = int(index.count.argmax())
    tok = index.token_str(int(_peak_tokens(index)[i, 0]))
    for band, hide_dead, query in [(None, False, ""), ((-1.5, -0.5), True, ""), ((-3.0, 0.0), False, tok), (None, True, "zz-none")]:
        once = li.latent_table(index, log10_density_range=band, hide_dead=hide_dead, query=query, table=full)
        pd.testing.assert_frame_equal(once, li.latent_table(index, log10_density_range=band, hide_dead=hide_dead, query=query))
        assert once["latent"].tolist() == np.flatnonzero(li.latent_mask(index, band, hide_dead, query)).tolist()
    li.latent_table(index, hide_dead=True, table=full)["max"] *= 0  # a caller's edits never reach the shared table
    assert full["max"].tolist() == index.max_act.tolist()


def test_contexts_views(index):
    i = int(index.count.argmax())
    views = li.latent_contexts(index, i)
    assert [v.activation for v in views] == sorted((v.activation for v in views), reverse=True)
    assert views[0].acts[views[0].peak] == pytest.approx(views[0].activation)


def test_sample_latents_seeded_and_steering_query(index):
    a = li.sample_latents(96, 20, seed=3)
    assert a == li.sample_latents(96, 20, seed=3) and len(set(a)) == 20 and a != li.sample_latents(96, 20, seed=4)
    q = li.steering_query(index, 5)
    assert q["latent"] == "5" and float(q["max_act"]) == pytest.approx(float(index.max_act[5]), rel=1e-5)


# --- the real embedded demo -------------------------------------------------------------------


def test_demo_ships_an_index_and_latents_find_planted_topics(demo_workspace, demo_paths):
    """For >= 6 planted topics some latent's top-20 contexts come >= 90% from that topic's stories."""
    from collections import Counter

    from sae_lib.demo.build import load_corpus_split

    assert demo_workspace.index is not None and demo_workspace.index.meta.n_tokens > 0  # the build ships one
    stories = load_corpus_split(demo_paths.root, "heldout")
    packed = pack_texts([s["text"] for s in stories], demo_workspace.model.tokenizer, 128, n_seq=10**6)
    index = li.build_index(demo_workspace.model, demo_workspace.sae, packed.tokens, li.IndexConfig(top_k=20))
    best: dict[str, float] = {}
    for i in range(index.d_sae):
        rows = index.top.row[i]
        if int((rows >= 0).sum()) < 20:
            continue
        # A context's topic: the story holding its max token (separators have none).
        docs = packed.doc_ids[rows, index.top.pos[i]].tolist()
        topic, n = Counter(stories[d]["topic"] if d >= 0 else None for d in docs).most_common(1)[0]
        if topic is not None:
            best[topic] = max(best.get(topic, 0.0), n / 20)
    found = sorted(t for t, share in best.items() if share >= 0.9)
    assert len(found) >= 6, best
