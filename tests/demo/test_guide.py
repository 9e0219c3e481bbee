"""The guided demo's goals, on the built demo: labels name their topic, steering writes it, scores mean something.

The shared demo's index may predate the co-occurrence counts, so the index is rebuilt here (same
corpus, same settings as the demo build) into memory; nothing is written into the shared demo.
"""

import re
from collections import Counter

import pytest

from sae_lib import latent_index as li
from sae_lib.demo.build import load_corpus_split
from sae_lib.demo.corpus import FEELINGS, NAMES, TIMES, TOPICS, topic_share, topic_words, words_of
from sae_lib.demo.guide import STORY_PROMPTS, build_guide
from sae_lib.explain import prompts as P
from sae_lib.explain.explainer import ExplainConfig, explain_and_score, model_acts_fn
from sae_lib.explain.generator import FunctionGenerator
from sae_lib.labels import all_labels
from sae_lib.generation import GenerationSettings, generate
from sae_lib.steering import SteeringSpec
from tests.test_steering import assert_clean



@pytest.fixture(scope="module")
def stories(demo_paths):
    return [(s["text"], s["topic"]) for s in load_corpus_split(demo_paths.root, "heldout")]


@pytest.fixture(scope="module")
def index(demo_workspace, stories):
    packed = li.pack_texts([t for t, _ in stories], demo_workspace.model.tokenizer, 128, n_seq=10**6)
    return li.build_index(demo_workspace.model, demo_workspace.sae, packed.tokens, li.IndexConfig(top_k=20))


@pytest.fixture(scope="module")
def guide(demo_workspace, stories):
    return build_guide(demo_workspace.model, demo_workspace.sae, stories)


def test_guide_labels_name_their_topic(guide, index):
    assert sorted(g.topic for g in guide) == sorted(TOPICS)
    labels = all_labels(index)
    named = {g.topic: labels[g.latent] for g in guide if topic_words(g.topic) & set(words_of(labels[g.latent].replace(",", " ")))}
    assert len(named) >= 9, {g.topic: (g.latent, labels[g.latent]) for g in guide}


def test_steering_with_the_guide_latent_writes_its_topic(guide, index, demo_workspace):
    ws = demo_workspace
    shares = {}
    for g in guide:
        spec = SteeringSpec(g.latent, max_act=float(index.max_act[g.latent]))  # the page's defaults
        normal, steered = [], []
        for prompt in STORY_PROMPTS:
            result = generate(ws.model, ws.sae, prompt, [spec], GenerationSettings())
            normal += result.normal
            steered += result.steered
        before = sum(topic_share(t, g.topic) for t in normal) / len(normal)
        after = sum(topic_share(t, g.topic) for t in steered) / len(steered)
        shares[g.topic] = (g.latent, round(before, 3), round(after, 3))
    # 3x over the normal output, and a real share of the words (3 x 0 would be no claim at all).
    working = [t for t, (_, before, after) in shares.items() if after >= 3 * before and after >= 0.1]
    assert len(working) >= 9, shares
    assert_clean(ws.model)


SHARED = {w.lower() for w in NAMES + FEELINGS} | set(words_of(" ".join(TIMES))) | {
    "the", "a", "an", "and", "to", "of", "at", "by", "with", "near", "under", "was", "were", "went", "visited",
    "walked", "one", "day", "there", "saw", "felt", "watched", "it", "everyone", "smiled", "found", "then",
    "again", "end", "left", "would", "never", "forget", "that", "night", "dreamed",
}  # fmt: skip
"""Words every topic's stories share: the stand-in explainer ignores them, as a person would."""


def _runs(text):
    """(words inside, the word right after) for each marked run of ``text``, line by line."""
    out = []
    for line in text.split("\n"):
        for m in re.finditer(r"<<(.*?)>>", line):
            after = words_of(line[m.end() :].replace("<<", " ").replace(">>", " "))
            out.append((words_of(m.group(1)), after[0] if after else ""))
    return out


def scripted(prompts, max_new_tokens):
    """A stand-in explainer answering from keywords, as a person skimming the marks would.

    It explains with the most frequent content words of the marked tokens, reading a mark that holds
    only shared words ("<<the>> knight") by the word it introduces; says Yes to detection when an
    explanation word is in the excerpt, and to fuzzing when one is marked or directly follows a mark.
    """
    answers = []
    for messages in prompts:
        system, user = messages[0]["content"], messages[1]["content"]
        if system == P.EXPLAIN_SYSTEM:
            words = []
            for inside, after in _runs(user):
                content = [w for w in inside if w not in SHARED and "|" not in w]
                words += content or ([after] if after and after not in SHARED and "|" not in after else [])
            answers.append("Explanation: " + ", ".join(w for w, _ in Counter(words).most_common(8)))
            continue
        explanation, excerpt = re.match(r"Explanation: (.*)\nExcerpt: (.*)\n", user).groups()
        keywords = set(words_of(explanation.replace(",", " ")))
        if system == P.DETECT_SYSTEM:
            hit = keywords & set(words_of(excerpt.replace("<<", " ").replace(">>", " ")))
        else:
            hit = any(keywords & {*inside, after} for inside, after in _runs(excerpt))
        answers.append("Yes" if hit else "No")
    return answers


@pytest.fixture(scope="module")
def scored(guide, index, demo_workspace):
    gen = FunctionGenerator(scripted, "scripted stand-in")
    rows = explain_and_score(gen, index, [g.latent for g in guide], ExplainConfig(),
                             acts_fn=model_acts_fn(demo_workspace.model, demo_workspace.sae))  # fmt: skip
    return {g.topic: (r.explanation, round(r.detection, 2), round(r.fuzzing, 2), round(r.detection_shuffled, 2),
                      round(r.fuzzing_shuffled, 2)) for g, r in zip(guide, rows)}  # fmt: skip


def test_scores_separate_matching_from_shuffled_explanations(scored):
    # Every shuffled explanation scores at chance or below, and every matching one detects better than it.
    assert all(max(det_s, fuzz_s) <= 0.6 for _, _, _, det_s, fuzz_s in scored.values()), scored
    assert all(det > det_s for _, det, _, det_s, _ in scored.values()), scored
    assert sum(det for _, det, _, _, _ in scored.values()) / len(scored) >= 0.8, scored


def test_matching_explanations_reach_0_8_on_nine_topics(scored):
    # Measured: all but sports. Its guide latent fires on sports stories (~3.5) but most on story endings
    # in every topic ("At the <<end>> of the day", ~4.7), so its top excerpts are other topics' endings,
    # which the stand-in, ignoring shared words, cannot describe.
    good = [t for t, (_, det, fuzz, det_s, fuzz_s) in scored.items() if min(det, fuzz) >= 0.8 and max(det_s, fuzz_s) <= 0.6]
    assert len(good) >= 9, scored


def test_a_guide_computed_in_the_app_holds_the_models_queue_slot(demo_workspace, monkeypatch):
    """Without a guide file for this index the Home page computes one: a forward on the shared model,
    which must wait its turn like any other (a visitor's steering hooks would otherwise reach it)."""
    from sae_lib.demo import guide as guide_mod
    from sae_lib.model_queue import queue_for

    held = []
    monkeypatch.setattr(guide_mod, "load_guide", lambda path, build_id: None)
    monkeypatch.setattr(guide_mod, "build_guide", lambda model, sae, stories: held.append(queue_for(model)._busy) or [])
    assert guide_mod.demo_guide(demo_workspace) == [] and held == [True]
    assert queue_for(demo_workspace.model).ahead_of_new_arrival() == 0  # and gives it back
