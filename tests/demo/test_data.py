"""sae_lib.demo.data: the demo corpus as token rows, separated exactly as the demo LM was trained."""

import torch

from sae_lib.demo.corpus import generate_corpus
from sae_lib.demo.data import as_dataset, demo_corpus_rows


def test_rows_hold_one_separator_per_story_even_with_a_transformer_lens_tokenizer(tiny_model, tiny_tokenizer):
    # TransformerLens sets add_bos_token on a model's tokenizer: without add_special_tokens=False every
    # story would start with a second <|endoftext|> (the demo SAE was trained and evaluated on such
    # rows, and their CE losses scored those extra positions).
    tl_tok = tiny_model.tokenizer
    eos = tl_tok.eos_token_id
    rows = demo_corpus_rows(tl_tok, 16, seed=3, n_train=40, n_heldout=20)
    corpus = generate_corpus(3, 40, 20)
    stream = []  # naive: each story's own tokens, then one separator
    for story in corpus.heldout:
        stream += [*tiny_tokenizer.encode(story.text, add_special_tokens=False), eos]
    n = len(stream) // 16
    torch.testing.assert_close(rows.heldout, torch.tensor(stream[: n * 16]).view(n, 16))
    flat = rows.train.flatten()
    assert not ((flat[1:] == eos) & (flat[:-1] == eos)).any()  # never two separators in a row
    assert as_dataset(rows.heldout)[0]["input_ids"] == rows.heldout[0].tolist()
