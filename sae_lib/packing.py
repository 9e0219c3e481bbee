"""Token packing: texts tokenized one by one, joined with an end-of-text separator, cut into full rows.

The one packer for every corpus the project tokenizes (the latent index pass, the demo's LM and SAE
training data). TransformerLens's ``tokenize_and_concatenate`` is not used because it packs each
1000-document map batch separately (dropping every batch's remainder), pads a short batch with EOS
tokens that would then count as text, adds a pad token to the tokenizer it is given, and keeps no
record of which document a token came from.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch

from sae_lib.errors import InputError


class PackedTokens(NamedTuple):
    """Packed rows and, per token, the text it came from."""

    tokens: torch.Tensor
    """(n_seq, ctx) int64: texts tokenized and concatenated with a separator, cut into rows."""
    doc_ids: torch.Tensor
    """(n_seq, ctx) int64: which input text each token came from; -1 for separators."""


def pack_texts(
    texts: Iterable[str], tokenizer: Any, context_size: int, n_seq: int | None = None, chunk_size: int = 256
) -> PackedTokens:
    """Tokenize ``texts`` one by one, join them with the end-of-text token, and cut ``n_seq`` full rows.

    Special tokens are not added per text (a tokenizer that prepends BOS would scatter it through the
    rows); the end-of-text token (BOS when there is none) goes *between* texts only. Empty texts are
    skipped. Stops reading ``texts`` at the first ``chunk_size`` texts that fill ``n_seq`` rows (a
    streamed Hub dataset is never read to the end); ``n_seq=None`` packs every text. Returns fewer rows when the texts run out; a
    partial last row is dropped.
    """
    if context_size < 1 or (n_seq is not None and n_seq < 1):
        raise InputError(f"context_size and n_seq must be at least 1, got {context_size} and {n_seq}.")
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    need = None if n_seq is None else context_size * n_seq
    ids: list[int] = []
    docs: list[int] = []
    numbered = ((j, t) for j, t in enumerate(texts) if t)  # empty texts would leave double separators
    # Tokenized a chunk at a time (a fast tokenizer batches); a chunk past the rows needed costs little.
    while chunk := list(itertools.islice(numbered, chunk_size)):
        encoded = tokenizer([t for _, t in chunk], add_special_tokens=False)["input_ids"]
        for (j, _), new in zip(chunk, encoded):
            if ids and sep is not None:
                ids.append(sep)
                docs.append(-1)
            ids.extend(new)
            docs.extend([j] * len(new))
        if need is not None and len(ids) >= need:
            break
    rows = len(ids) // context_size if n_seq is None else min(len(ids) // context_size, n_seq)
    if rows == 0:
        raise InputError(
            f"The texts hold {len(ids)} tokens, fewer than one {context_size}-token row: give more text "
            "or a shorter context."
        )
    cut = rows * context_size
    return PackedTokens(
        torch.tensor(ids[:cut]).view(rows, context_size),
        torch.tensor(docs[:cut]).view(rows, context_size),
    )
