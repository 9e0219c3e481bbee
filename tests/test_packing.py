"""Token packing: texts joined with the end-of-text token and cut into full rows."""

import pytest
import torch

from sae_lib.errors import InputError
from sae_lib.packing import pack_texts
from tests.conftest import TINY_TEXTS


def test_pack_texts_rows_and_doc_ids(tiny_tokenizer):
    texts = TINY_TEXTS[:4]
    packed = pack_texts(texts, tiny_tokenizer, context_size=8, n_seq=100)
    ids = []
    for j, t in enumerate(texts):
        ids += ([tiny_tokenizer.eos_token_id] if j else []) + tiny_tokenizer(t)["input_ids"]
    rows = len(ids) // 8
    assert packed.tokens.shape == (rows, 8)
    assert packed.tokens.flatten().tolist() == ids[: rows * 8]
    first = len(tiny_tokenizer(texts[0])["input_ids"])
    assert packed.doc_ids.flatten()[:first].eq(0).all() and packed.doc_ids.flatten()[first] == -1
    assert pack_texts(iter(texts), tiny_tokenizer, 8, 2).tokens.shape == (2, 8)
    for chunk_size in (1, 3):  # tokenizing in chunks changes nothing but speed
        again = pack_texts(texts, tiny_tokenizer, 8, n_seq=100, chunk_size=chunk_size)
        assert torch.equal(again.tokens, packed.tokens) and torch.equal(again.doc_ids, packed.doc_ids)
    with pytest.raises(InputError, match="fewer than one"):
        pack_texts(["ship"], tiny_tokenizer, 64, 1)


def test_pack_texts_without_n_seq_packs_everything(tiny_tokenizer):
    texts = ["", *TINY_TEXTS[:6]]  # an empty text is skipped: no double separator
    ids = []
    for t in texts[1:]:
        ids += ([tiny_tokenizer.eos_token_id] if ids else []) + tiny_tokenizer(t)["input_ids"]
    packed = pack_texts(texts, tiny_tokenizer, context_size=8)
    assert packed.tokens.flatten().tolist() == ids[: len(ids) // 8 * 8]
    assert packed.doc_ids[0, 0] == 1  # ids count the texts as given
    with pytest.raises(InputError, match="at least 1"):
        pack_texts(texts, tiny_tokenizer, context_size=8, n_seq=0)
