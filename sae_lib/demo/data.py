"""The demo corpus as token rows: the generated stories tokenized and packed for SAE training and evals."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from sae_lib.demo.corpus import generate_corpus
from sae_lib.packing import pack_texts
from sae_lib.errors import InputError


class DemoRows(NamedTuple):
    train: torch.Tensor
    """Training stories packed into rows: (n_train_rows, context) token ids."""
    heldout: torch.Tensor
    """Held-out stories packed the same way, for the evals: (n_heldout_rows, context)."""


def demo_corpus_rows(tokenizer: Any, context: int, seed: int = 0, n_train: int = 6000, n_heldout: int = 600) -> DemoRows:
    """The demo's generated stories tokenized with ``tokenizer`` and packed into ``context`` rows.

    Each story is followed by one end-of-text token (the demo tokenizer's BOS = EOS = pad), exactly as
    the demo LM was trained; rows are cut from that stream, so a row may start mid-story. The
    tokenizer's own special tokens are not added: TransformerLens sets ``add_bos_token`` on a model's
    tokenizer, which would put a second ``<|endoftext|>`` before every story (a token pattern the LM
    never saw, and extra hard-to-predict positions in every loss computed on these rows).
    """
    corpus = generate_corpus(seed, n_train, n_heldout)
    rows = []
    for name, split in (("training", corpus.train), ("held-out", corpus.heldout)):
        try:
            rows.append(pack_texts([s.text for s in split], tokenizer, context).tokens)
        except InputError:
            raise InputError(f"The demo corpus's {name} stories make no full row of {context} tokens; "
                             "use more stories or a smaller --context_size.") from None
    return DemoRows(*rows)


def as_dataset(rows: torch.Tensor) -> Any:
    """Token rows as a ``datasets.Dataset`` with an ``input_ids`` column (SAELens reads it as pre-tokenized)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": rows.tolist()})
