"""Prompts, parsing, scoring arithmetic, the store, and the whole explain/score path with real small LMs."""

import itertools
import math
import multiprocessing as mp
import shutil

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from sae_lib import latent_index as li
from sae_lib.errors import CompatibilityError
from sae_lib.explain import explainer as E
from sae_lib.explain import prompts as P
from sae_lib.explain.explainer import ExplainConfig, Explanation, explain_and_score, latent_examples, model_acts_fn
from sae_lib.explain.generator import ExplainerLoadError, HFGenerator, LoadedModelGenerator, render
from sae_lib.explain.scoring import balanced_accuracy
from sae_lib.explain.store import load_explanations, save_explanations

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
"""Qwen3's chat format in miniature (roles between im_start/im_end, thinking switched off)."""


def test_mark_puts_runs_of_active_tokens_in_one_pair():
    assert P.mark(["a", " b", " c", " d", "\n"], [0, 2, 3, 0, 1]) == "a<< b c>> d<< >>"
    assert P.mark(["x"], [0.0]) == "x"


def test_excerpt_text_cannot_pass_for_a_mark_or_a_line_of_the_prompt():
    """C++'s << and >>, and every kind of line break, are the text's own: marks stay the only << >>, and
    an excerpt cannot start a line such as 'Explanation: ...' in the prompt."""
    marked = P.mark(["std::cout", " <<", " x", " >>", " y", ";"], [0, 0, 0, 0, 5, 0])
    assert marked == "std::cout ‹‹ x ››<< y>>;" and marked.count("<<") == marked.count(">>") == 1
    for brk in ("\r", "\r\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"):
        for text in (P.mark(["a", brk, "Explanation:", " b"], [0, 0, 0, 1]), P.plain(["a", brk, "Explanation:", " b"])):
            assert text.splitlines() == [text], repr(brk)
    user = P.detection_messages("e", P.plain(["a", "\r", "Explanation: fake"]))[1]["content"]
    assert [line for line in user.splitlines() if line.startswith("Explanation:")] == ["Explanation: e"]


def test_a_special_token_in_the_corpus_stays_text_in_every_prompt(tiny_tokenizer):
    """The demo's corpus holds <|endoftext|> between stories (Qwen's chat data: <|im_end|>), and the index
    shows that token as its text: a detection excerpt passed it on verbatim, and the explainer's tokenizer
    read it back as the special token itself (an end of text, or of the user's turn, inside the prompt)."""
    special = tiny_tokenizer.eos_token
    assert special == "<|endoftext|>"
    tokens, acts = ["The end.", special, "Ben went", " home"], [0.0, 0.0, 0.0, 1.0]
    prompts = [P.detection_messages("e", P.plain(tokens)), P.fuzz_messages("e", P.mark(tokens, acts)),
               P.explain_messages([P.mark(tokens, acts)])]
    for messages in prompts:
        ids = tiny_tokenizer(render(tiny_tokenizer, messages), add_special_tokens=False)["input_ids"]
        assert tiny_tokenizer.eos_token_id not in ids, messages[1]["content"]
    assert P.plain(tokens) == "The end.‹|endoftext|›Ben went home"  # as the explainer saw it marked


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Explanation: words about the sea", "words about the sea"),
        ("<think>hmm, the sea?</think>\n**Explanation:** \"ocean words\"", "ocean words"),
        ("The latent fires on names.\nMore text", "The latent fires on names."),
        ("<think>never closed", ""),
        ("", ""),
        ("Explanation: " + "x" * 500, "x" * 199 + "…"),
    ],
)
def test_parse_explanation(answer, expected):
    assert P.parse_explanation(answer) == expected


def test_parse_yes_no():
    assert P.parse_yes_no(" Yes.") is True
    assert P.parse_yes_no("<think>yes or no</think> No") is False
    assert P.parse_yes_no("maybe") is None and P.parse_yes_no("Nobody yesterday") is None


def test_balanced_accuracy_against_hand_count():
    truth = [True, True, True, False, False]
    assert balanced_accuracy(truth, [True, True, False, False, True]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert balanced_accuracy(truth, [None] * 5) == 0.0  # unanswered is wrong
    assert math.isnan(balanced_accuracy([], []))
    assert balanced_accuracy(truth, [True] * 5) == 0.5  # always yes is chance
    # One class only: always Yes (or No) would score 1.0 on it, and its shuffled baseline too: not scored.
    assert math.isnan(balanced_accuracy([True, True], [True, True]))
    assert math.isnan(balanced_accuracy([False, False], [False, False]))


def _row(latent, text="x", created="t"):
    return Explanation(latent, text, "m", "e", 0.9, 0.8, 0.5, 0.4, created)


def test_store_merges_newest_and_refuses_another_index(tmp_path):
    path = tmp_path / "latent_explanations.parquet"
    assert len(load_explanations(path, "b1")) == 0
    table = save_explanations(path, "b1", [_row(3), _row(1)])
    table = save_explanations(path, "b1", [_row(3, "newer")], table)
    loaded = load_explanations(path, "b1")
    assert loaded["latent"].tolist() == [1, 3] and loaded["explanation"].tolist() == ["x", "newer"]
    assert loaded["detection"].tolist() == pytest.approx([0.9, 0.9])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    with pytest.raises(CompatibilityError, match="another build"):
        load_explanations(path, "b2")
    path.write_bytes(b"not parquet")
    with pytest.raises(CompatibilityError, match="unreadable"):
        load_explanations(path, "b1")


def test_explanations_of_an_earlier_index_build_are_kept_aside_not_in_the_way(tmp_path):
    """A rebuilt index has a new build: its old explanations (hours of explainer work) are moved aside,
    neither read nor pushed under the live name, and a new run starts clean instead of failing."""
    from sae_lib.explain.store import set_aside_stale
    from sae_lib.push import UPLOAD_FILENAMES

    path = tmp_path / "latent_explanations.parquet"
    assert set_aside_stale(path, "b2") is None  # nothing there
    save_explanations(path, "b1-0123456789abcdef", [_row(3)])
    assert set_aside_stale(path, "b1-0123456789abcdef") is None and path.exists()  # this build's: stays
    aside = set_aside_stale(path, "b2")
    assert aside == tmp_path / "latent_explanations.for-build-b1-012345678.parquet" and not path.exists()
    assert aside.name not in UPLOAD_FILENAMES
    assert load_explanations(aside, "b1-0123456789abcdef")["latent"].tolist() == [3]  # kept whole
    assert len(load_explanations(path, "b2")) == 0
    path.write_bytes(b"not parquet")  # unreadable: aside too
    assert set_aside_stale(path, "b2").name == "latent_explanations.for-build-unreadable.parquet"
    path.write_bytes(b"not parquet either")  # a second one under the same name: the first is kept
    assert set_aside_stale(path, "b2").name == "latent_explanations.for-build-unreadable-2.parquet"
    assert (tmp_path / "latent_explanations.for-build-unreadable.parquet").read_bytes() == b"not parquet"


def _write_half_then_hang(path, writing):
    """A save of 20,000 rows whose file write stops halfway (the first half of the real parquet bytes on
    disk, where the store writes), then waits to be killed: a kill mid-write, every time. (Killing a
    process that saves in a loop mostly landed before its first write reached the disk.)"""
    import io
    import time

    import pyarrow.parquet as pq

    real = pq.write_table

    def half_written(table, where, **kwargs):
        buf = io.BytesIO()
        real(table, buf, **kwargs)
        data = buf.getvalue()
        with open(where, "wb") as f:
            f.write(data[: len(data) // 2])
        writing.set()
        time.sleep(600)

    pq.write_table = half_written  # in this forked child only
    save_explanations(path, "b1", [_row(i, "y" * 1000) for i in range(20_000)])


def test_store_killed_mid_write_keeps_the_last_complete_file(tmp_path):
    path = tmp_path / "latent_explanations.parquet"
    save_explanations(path, "b1", [_row(0, "complete")])
    ctx = mp.get_context("fork")
    writing = ctx.Event()
    proc = ctx.Process(target=_write_half_then_hang, args=(path, writing))
    proc.start()
    assert writing.wait(60), "the child never started writing"
    proc.kill()  # SIGKILL with half of the new file written
    proc.join()
    loaded = load_explanations(path, "b1")  # the first file, whole: the half-written one never replaced it
    assert loaded["latent"].tolist() == [0] and loaded["explanation"].tolist() == ["complete"]


# --- the whole path with real (random-weight) models -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_index(tiny_model, tiny_sae):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, tiny_model.cfg.d_vocab, (24, 16), generator=g)
    cfg = li.IndexConfig(top_k=8, n_lower_examples=3, window=8, window_before=4, batch_size=8)
    return li.build_index(tiny_model, tiny_sae, tokens, cfg)


@pytest.fixture(scope="module")
def chat_model_dir(tiny_hf_qwen3_dir, tmp_path_factory):
    """The tiny HF Qwen3 with a Qwen-style chat template: a chat model whose answers are junk."""
    path = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(tiny_hf_qwen3_dir, path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(path)
    return path


def _check_rows(rows, latents):
    assert [r.latent for r in rows] == latents
    for r in rows:
        assert isinstance(r.explanation, str) and "\n" not in r.explanation and len(r.explanation) <= 200
        for s in (r.detection, r.fuzzing, r.detection_shuffled, r.fuzzing_shuffled):
            assert math.isnan(s) or 0.0 <= s <= 1.0


def test_end_to_end_with_a_tiny_hf_chat_model(chat_model_dir, tiny_index, tiny_model, tiny_sae, tmp_path):
    gen = HFGenerator(str(chat_model_dir), device="cpu", batch_size=7)
    rendered = render(gen.tokenizer, P.detection_messages("e", "x"))
    assert rendered.startswith("<|im_start|>system") and rendered.endswith("<think>\n\n</think>\n\n")
    latents = (~tiny_index.dead).nonzero().squeeze(1)[:3].tolist()
    cfg = ExplainConfig(n_explain_top=3, n_score=2, n_non_activating=2, max_new_tokens=6)
    rows = explain_and_score(gen, tiny_index, latents, cfg, acts_fn=model_acts_fn(tiny_model, tiny_sae))
    _check_rows(rows, latents)
    path = tmp_path / "e.parquet"
    save_explanations(path, tiny_index.meta.build_id, rows)
    back = load_explanations(path, tiny_index.meta.build_id)
    assert back["latent"].tolist() == latents and back["explainer"].tolist() == [chat_model_dir.name] * 3
    assert str(chat_model_dir.parent) not in path.read_bytes().decode("latin-1")  # the parquet names no local path


def test_end_to_end_with_the_loaded_model(tiny_model, tiny_index):
    gen = LoadedModelGenerator(tiny_model, batch_size=2)
    latents = (~tiny_index.dead).nonzero().squeeze(1)[:2].tolist()
    cfg = ExplainConfig(n_explain_top=2, n_score=2, n_non_activating=2, max_new_tokens=5)
    rows = explain_and_score(gen, tiny_index, latents, cfg, fallback_shuffled=lambda lat: "anything")
    _check_rows(rows, latents)
    assert gen.truncated > 0  # the tiny model's 128-token context: long prompts keep their end
    one = explain_and_score(gen, tiny_index, latents[:1], cfg, fallback_shuffled=lambda lat: "anything")
    assert not math.isnan(one[0].detection_shuffled)  # a chunk of one still gets a baseline


def test_examples_split_and_negatives_are_checked(tiny_index, tiny_model, tiny_sae):
    alive = (~tiny_index.dead).nonzero().squeeze(1)
    latent = int(alive[tiny_index.count[alive].argmin()])  # a sparse latent: quiet excerpts exist
    acts = model_acts_fn(tiny_model, tiny_sae)
    ex = latent_examples(tiny_index, latent, ExplainConfig(n_non_activating=4), acts)
    shown = {tuple(e.ids) for e in ex.explain}
    assert ex.held_out and not shown & {tuple(e.ids) for e in ex.held_out}  # held out means not shown
    assert 1 <= len(ex.non_activating) <= 4
    for e in ex.non_activating:  # read afresh, the latent really is 0 on every token
        assert float(acts(torch.tensor([e.ids]), latent).max()) <= 0.0
    unchecked = latent_examples(tiny_index, int(tiny_index.count.argmax()), ExplainConfig(n_non_activating=4), acts)
    for e in unchecked.non_activating:
        assert float(acts(torch.tensor([e.ids]), int(tiny_index.count.argmax())).max()) <= 0.0


def test_held_out_excerpts_share_no_text_with_shown_ones_or_each_other(tiny_index):
    """Top and sampled contexts are windows of the same passages: a held-out window overlapping a shown
    one (same row, overlapping positions) leaks what the explainer saw into its score; a repeated one
    counts twice. Against a naive check over every latent of the index."""
    cfg = ExplainConfig()
    overlapping_pairs = 0
    for latent in (~tiny_index.dead).nonzero().squeeze(1).tolist():
        ex = latent_examples(tiny_index, latent, cfg)
        spans = lambda es: [(e.row, e.start, e.start + len(e.ids)) for e in es]  # noqa: E731
        for group in (spans(ex.explain + ex.held_out),):
            for i, (r1, a1, b1) in enumerate(group):
                for r2, a2, b2 in group[i + 1 :]:
                    assert not (r1 == r2 and a1 < b2 and a2 < b1), (latent, (r1, a1, b1), (r2, a2, b2))
        assert len({tuple(e.ids) for e in ex.non_activating}) == len(ex.non_activating)
        # What the old split (exact token match only) would have held out against what was shown:
        top, samples = E._excerpts(tiny_index, latent, "top"), E._excerpts(tiny_index, latent, "sample")
        for h in top[1::2] + samples[cfg.n_explain_samples :]:
            overlapping_pairs += any(h.overlaps(s) and h.ids != s.ids for s in top[0::2][: cfg.n_explain_top])
    assert overlapping_pairs > 0  # the tiny index does hold such windows: the check above was exercised


def test_an_unexplained_neighbour_in_the_chunk_is_not_the_baseline(monkeypatch):
    """Latent j's shuffled baseline is the next *usable* explanation in the chunk: an empty one (the
    explainer failed on that latent) would leave j without a baseline."""

    def gen(prompts, max_new_tokens):  # explanations for three latents, the second unusable
        return ["Explanation: first", "", "Explanation: third"] if max_new_tokens > 4 else ["Yes"] * len(prompts)

    gen.name = "stand-in"
    seen = []
    monkeypatch.setattr(E, "latent_examples", lambda index, lat, cfg, acts_fn=None: E.LatentExamples(lat, [], [], []))
    monkeypatch.setattr(E, "score_explanations", lambda g, examples, texts, shuffled, cfg: seen.append((texts, shuffled))
                        or [dict.fromkeys(("detection", "fuzzing", "detection_shuffled", "fuzzing_shuffled"), 0.5)] * 3)
    E.explain_and_score(gen, None, [0, 1, 2], ExplainConfig())
    texts, shuffled = seen[0]
    assert texts == ["first", "", "third"]
    assert shuffled == ["third", "third", "first"]  # latent 0 skips its empty neighbour


def test_a_model_already_in_memory_explains(chat_model_dir, tiny_index):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(chat_model_dir)
    gen = HFGenerator.from_loaded(model, AutoTokenizer.from_pretrained(chat_model_dir), "in memory", batch_size=3)
    answers = gen([P.detection_messages("e", f"excerpt {i}") for i in range(5)], 3)
    assert len(answers) == 5 and all(isinstance(a, str) for a in answers)
    # Batched with left padding = one prompt at a time (greedy): padding does not change an answer.
    single = HFGenerator.from_loaded(model, gen.tokenizer, "in memory", batch_size=1)
    assert single([P.detection_messages("e", f"excerpt {i}") for i in range(5)], 3) == answers


def test_unloadable_explainer_says_what_to_do(tmp_path):
    with pytest.raises(ExplainerLoadError, match="could not be loaded.*statistical labels"):
        HFGenerator(str(tmp_path / "no-such-model"))


def test_loaded_model_batches_like_one_at_a_time(tiny_model):
    prompts = [[{"role": "user", "content": "the ship " * n}] for n in (1, 4, 9)]  # different lengths: padding
    batched = LoadedModelGenerator(tiny_model, batch_size=3)(prompts, 5)
    single = LoadedModelGenerator(tiny_model, batch_size=1)(prompts, 5)
    assert batched == single and len(batched) == 3


def test_fuzzing_marks_held_out_excerpts_right_and_non_activating_ones_at_random(tiny_index, tiny_model, tiny_sae):
    """delphi's default fuzzing: right marks on the held-out excerpts, as many random marks as they have on
    average (ceiling) on the non-activating ones; the explainer never sees an excerpt twice."""
    alive = (~tiny_index.dead).nonzero().squeeze(1)
    latent = int(alive[tiny_index.count[alive].argmin()])
    cfg = ExplainConfig(n_non_activating=4)
    ex = latent_examples(tiny_index, latent, cfg, model_acts_fn(tiny_model, tiny_sae))
    assert len({tuple(e.ids) for e in ex.explain}) == len(ex.explain)
    q = E._questions([ex], ["x"], [""], cfg)
    fuzz = [(m[1]["content"].split("\nExcerpt: ")[1].rsplit("\n", 1)[0], t) for m, t, k in zip(q.messages, q.truth, q.key)
            if k == (0, "fuzzing")]  # fmt: skip
    right = [text for text, t in fuzz if t]
    assert right == [E._marked(e, cfg.mark_fraction) for e in ex.held_out]
    marked = [sum(a >= cfg.mark_fraction * max(e.acts) for a in e.acts) for e in ex.held_out]  # naive count
    n_wrong = -(-sum(marked) // len(marked))
    wrong = [text for text, t in fuzz if not t]
    plain = [P.mark(e.tokens, [0.0] * len(e.tokens)) for e in ex.non_activating]
    assert len(wrong) == len(plain) and wrong
    for text, unmarked, excerpt in zip(wrong, plain, ex.non_activating):
        assert text.replace("<<", "").replace(">>", "") == unmarked
        # Which tokens are marked: rebuild the string from each candidate mask until one matches.
        hits = [m for m in itertools.combinations(range(len(excerpt.tokens)), n_wrong)
                if P.mark(excerpt.tokens, [1.0 if i in m else 0.0 for i in range(len(excerpt.tokens))]) == text]
        assert hits  # exactly n_wrong tokens of the non-activating excerpt are marked


def test_dense_latents_get_their_negatives_from_more_candidates(demo_workspace, monkeypatch):
    """A dense latent fires somewhere in most 24-token windows: one round of candidates left many of the
    demo's densest latents with no negative at all (so no score). Later rounds find more."""
    ws, cfg = demo_workspace, ExplainConfig()
    acts = model_acts_fn(ws.model, ws.sae)
    alive = (~ws.index.dead).nonzero().squeeze(1)
    dense = alive[ws.index.count[alive].argsort(descending=True)][:30].tolist()

    def negatives(rounds: int) -> list[int]:
        monkeypatch.setattr(E, "NEGATIVE_ROUNDS", rounds)
        return [len(latent_examples(ws.index, lat, cfg, acts).non_activating) for lat in dense]

    rounds = E.NEGATIVE_ROUNDS
    one, more = negatives(1), negatives(rounds)
    assert all(m >= o for m, o in zip(more, one)) and sum(more) >= 2 * sum(one)
    assert sum(m == cfg.n_non_activating for m in more) > sum(o == cfg.n_non_activating for o in one)
    for lat in dense[:3]:  # still checked: the latent is 0 on every token of every negative
        for e in latent_examples(ws.index, lat, cfg, acts).non_activating:
            assert float(acts(torch.tensor([e.ids]), lat).max()) <= 0.0
