"""Corpora of a latent index: the demo corpus, a Hub dataset (streamed) or an uploaded file, as texts.

:class:`CorpusSource` says where the texts come from; :func:`source_texts` reads them (lazily where
they stream) and :func:`corpus_tokens` packs them into rows for the index pass
(:mod:`sae_lib.index_builds`, ``scripts/build_latent_index.py``).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from sae_lib.errors import InputError
from sae_lib.packing import pack_texts
from sae_lib.published import public_name

TEXT_COLUMNS = ("text", "content", "document", "story", "body")
"""Column names tried first when detecting a dataset's text column; else the first string column."""

SourceKind = Literal["demo", "hub", "upload"]

HEAD_ROWS = 16
"""Rows of a streamed dataset read before its text column is detected."""


@dataclass(frozen=True)
class CorpusSource:
    """Where the texts of an index come from."""

    kind: SourceKind
    """``demo``: the demo corpus's held-out stories; ``hub``: a Hub dataset, streamed; ``upload``: a file."""
    name: str = ""
    """The Hub dataset's name, or the uploaded file's name (its suffix picks the format)."""
    split: str = "train"
    """Split of a Hub dataset."""
    text_column: str = ""
    """Column holding the text (Hub dataset, jsonl, parquet); empty: detected."""
    data: bytes = field(default=b"", repr=False)
    """The uploaded file's bytes."""
    seed: int = 0
    """Seed of the demo corpus (the demo build's)."""

    def describe(self) -> str:
        if self.kind == "demo":
            return "demo corpus (held-out stories)"
        if self.kind == "hub":  # a local dataset folder by its name: the description is published with the index
            return f"{public_name(self.name)} ({self.split})"
        return f"uploaded file {self.name}"


def demo_texts(seed: int = 0) -> Iterator[str]:
    """The demo corpus's held-out stories (not seen in the demo model's or SAE's training)."""
    from sae_lib.demo.corpus import generate_corpus

    return (story.text for story in generate_corpus(seed=seed).heldout)


def detect_text_column(row: dict, wanted: str = "") -> str:
    """The column of ``row`` that holds text: ``wanted`` if given, else a usual name, else the first string one."""
    if wanted:
        if wanted not in row:
            raise InputError(f"There is no column {wanted!r}; the columns are {', '.join(map(str, row))}.")
        if row[wanted] is not None and not isinstance(row[wanted], str):  # None: a row without text, skipped
            texts = [str(name) for name, value in row.items() if isinstance(value, str)]
            raise InputError(f"The column {wanted!r} holds {type(row[wanted]).__name__} values, not text; "
                             f"the text columns are {', '.join(texts) or 'none'}. Name one of them.")
        return wanted
    for name in TEXT_COLUMNS:
        if isinstance(row.get(name), str):
            return name
    for name, value in row.items():
        if isinstance(value, str):
            return str(name)
    raise InputError(f"No column holds text; the columns are {', '.join(map(str, row))}. Name the text column.")


def _offline_hint() -> str:
    return ("Use the demo corpus or upload a text, jsonl or parquet file instead (build_latent_index.py: "
            "--dataset demo, or a local dataset file or folder).")


def hub_texts(name: str, split: str = "train", column: str = "") -> Iterator[str]:
    """Texts of a Hub dataset, streamed (only what the index needs is downloaded), column detected."""
    from datasets import load_dataset

    name = name.strip()
    if not name:
        raise InputError("Give a Hub dataset name such as HuggingFaceFW/fineweb. " + _offline_hint())
    try:
        stream = iter(load_dataset(name, split=split, streaming=True))
        first = next(stream)
        head = [first, *itertools.islice(stream, HEAD_ROWS - 1)]
    except StopIteration:
        raise InputError(f"The dataset {name!r} (split {split!r}) is empty. {_offline_hint()}") from None
    except Exception as err:  # datasets raises many types (no network, unknown name, bad split)
        raise InputError(
            f"Could not open the dataset {name!r} (split {split!r}): {type(err).__name__}: {str(err)[:200]}. "
            f"Check the name, and that this server can reach the Hugging Face Hub. {_offline_hint()}"
        ) from None
    # The column is detected from the first rows' values (a row's text can be missing: None).
    sample = {key: next((row[key] for row in head if row.get(key) is not None), None) for key in first}
    col = detect_text_column(sample, column)
    try:
        for row in itertools.chain(head, stream):
            if isinstance(row.get(col), str):  # a missing text (None) is skipped, as in uploads
                yield row[col]
    except Exception as err:
        raise InputError(f"Reading the dataset {name!r} failed part-way ({type(err).__name__}). {_offline_hint()}") from None


def _decode_text(data: bytes, name: str) -> str:
    if b"\x00" in data[:65536]:
        raise InputError(f"{name} is not a text file (it holds binary data). Upload UTF-8 text, jsonl or parquet.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name} is not UTF-8 text. Upload UTF-8 text, jsonl or parquet.") from None


def upload_texts(name: str, data: bytes, column: str = "") -> list[str]:
    """The texts of an uploaded file: ``.txt`` (one text per blank-line-separated paragraph), ``.jsonl``
    (one JSON object or string per line, text column detected) or ``.parquet`` (text column detected)."""
    suffix = Path(name).suffix.lower()
    if not data:
        raise InputError(f"{name} is empty. Upload a file with some text in it.")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as err:
            raise InputError(f"{name} is not a readable parquet file ({type(err).__name__}).") from None
        if table.num_rows == 0:
            raise InputError(f"{name} has no rows. Upload a file with some text in it.")
        col = detect_text_column(table.slice(0, 1).to_pylist()[0], column)
        texts = [t for t in table.column(col).to_pylist() if isinstance(t, str) and t.strip()]
    elif suffix == ".jsonl":
        texts, col = [], column
        for n, line in enumerate(_decode_text(data, name).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{name}, line {n}: not JSON. Each line of a .jsonl file is one JSON object.") from None
            if isinstance(row, str):
                texts.append(row)
                continue
            if not isinstance(row, dict):
                raise InputError(f"{name}, line {n}: expected a JSON object or string.")
            col = col or detect_text_column(row)
            if isinstance(row.get(col), str):
                texts.append(row[col])
        texts = [t for t in texts if t.strip()]
    elif suffix in (".txt", ".text", ".md", ""):
        text = _decode_text(data, name)
        texts = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    else:
        raise InputError(f"{name}: unsupported file type {suffix!r}. Upload .txt, .jsonl or .parquet.")
    if not texts:
        raise InputError(f"{name} holds no text. Upload a file with some text in it.")
    return texts


def source_texts(source: CorpusSource) -> Iterable[str]:
    """The texts of ``source``, lazily where it streams."""
    if source.kind == "demo":
        return demo_texts(source.seed)
    if source.kind == "hub":
        return hub_texts(source.name, source.split, source.text_column)
    if source.kind == "upload":
        return upload_texts(source.name, source.data, source.text_column)
    raise InputError(f"Unknown corpus source {source.kind!r}: use demo, hub or upload.")


def corpus_tokens(source: CorpusSource, tokenizer, n_tokens: int, context_size: int) -> torch.Tensor:
    """(n_seq, context_size) tokens of ``source``: ``n_tokens`` rounded down to whole rows (fewer when it runs out)."""
    if n_tokens < context_size:
        raise InputError(f"Index at least one row: {n_tokens} tokens is less than the context of {context_size}.")
    return pack_texts(source_texts(source), tokenizer, context_size, n_tokens // context_size).tokens
