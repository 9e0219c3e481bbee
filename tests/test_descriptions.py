"""Descriptions (explanation else label) and literal, bounded search."""

import numpy as np
import pandas as pd
import pytest
import torch

from sae_lib import latent_index as li
from sae_lib.descriptions import MAX_SEARCH_CHARS, Descriptions
from sae_lib.errors import InputError
from sae_lib.labels import all_labels
from tests.conftest import TINY_TEXTS


@pytest.fixture(scope="module")
def index(tiny_model, tiny_sae):
    tokens = li.pack_texts(TINY_TEXTS, tiny_model.tokenizer, context_size=16, n_seq=40).tokens
    return li.build_index(tiny_model, tiny_sae, tokens, li.IndexConfig(top_k=4, n_lower_examples=2, window=6, window_before=3))


def _explained(latent, text):
    return pd.DataFrame([{"latent": latent, "explanation": text, "method": "m", "explainer": "e", "detection": 0.9,
                          "fuzzing": float("nan"), "detection_shuffled": 0.5, "fuzzing_shuffled": 0.4, "created": ""}])


def test_explanation_wins_over_label(index):
    alive = (~index.dead).nonzero().squeeze(1).tolist()
    d = Descriptions(index, _explained(alive[0], "**bold** <b>x</b>"))
    got = d.describe(alive[0])
    assert got.source == "explanation" and got.text == "**bold** <b>x</b>"  # kept verbatim; pages show it as text
    assert got.scores == {"detection": 0.9, "detection_shuffled": 0.5, "fuzzing_shuffled": 0.4}
    assert d.describe(alive[1]) == (all_labels(index)[alive[1]], "label", "", {})
    dead = index.dead.nonzero().squeeze(1).tolist()
    if dead:
        assert d.describe(dead[0]).source == ""


def test_search_is_literal_case_insensitive_and_bounded(index):
    alive = (~index.dead).nonzero().squeeze(1).tolist()
    d = Descriptions(index, _explained(alive[0], "Ships at SEA (a.k.a. [ocean])"))
    assert alive[0] in d.search_text("sea (a.k.a. [ocean")  # regex characters are just characters
    assert len(d.search_text(".*")) == 0  # not a wildcard
    assert len(d.search_text("")) == index.d_sae
    with pytest.raises(InputError, match="at most 200"):
        d.search_text("x" * (1 << 20))
    with pytest.raises(InputError, match="at most"):
        d.search_token("a" * (MAX_SEARCH_CHARS + 1))
    labels = all_labels(index)
    word = labels[alive[1]].split(": ")[1].split(",")[0].split(" ·")[0]
    assert alive[1] in d.search_text(word.upper())


def test_token_search_against_naive(index):
    d = Descriptions(index)
    vocab = index.meta.vocab
    q = "sh"
    want = set()
    for i in range(index.d_sae):
        ids = set(index.logit_top_ids[i].tolist())
        for s in range(index.top.row.shape[1]):
            if index.top.row[i, s] >= 0:
                ids.add(int(index.top.tokens[i, s, index.top.pos[i, s] - index.top.start[i, s]]))
        from sae_lib.labels import lift_matrix

        lift = lift_matrix(index.counts)[i]
        ids |= {int(t) for t, v in zip(index.counts.token_ids[i], lift) if v > 0}
        if any(q in vocab[t].lower() for t in ids if t >= 0):
            want.add(i)
    got = set(d.search_token("SH").tolist())
    assert got == want and want
    assert len(d.search_token("(")) <= index.d_sae  # a regex character: no error
