"""Latent index files: the three files next to the SAE, written atomically and read back checked.

Per-latent tensors go in safetensors, contexts in a parquet table, and a JSON holds the metadata
that ties the index to the SAE's weights (names in :mod:`sae_lib.constants`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sae_lens import SAE

from sae_lib.constants import INDEX_CONTEXTS_FILENAME, INDEX_COUNTS_FILENAME, INDEX_META_FILENAME, INDEX_STATS_FILENAME
from sae_lib.cooccurrence import COUNT_FIELDS, LatentCounts
from sae_lib.errors import CompatibilityError
from sae_lib.folders import atomic_write_all
from sae_lib.latent_index.identity import check_index_matches_sae
from sae_lib.latent_index.model import FORMAT_VERSION, KIND_SAMPLE, KIND_TOP, Contexts, IndexMeta, LatentIndex


_STAT_FIELDS = (
    "count", "sum_act", "max_act", "hist", "hist_exp",
    "logit_top_ids", "logit_top_vals", "logit_bottom_ids", "logit_bottom_vals", "fingerprint",
)  # fmt: skip


def _contexts_table(ctx: Contexts, kind: str) -> pa.Table:
    lat, rank = (ctx.row >= 0).nonzero(as_tuple=True)
    window = ctx.tokens.shape[-1]
    return pa.table(
        {
            "latent": pa.array(lat.numpy().astype(np.int32)),
            "kind": pa.array([kind] * len(lat), pa.string()),
            "rank": pa.array(rank.numpy().astype(np.int16)),
            "activation": pa.array(ctx.value[lat, rank].numpy()),
            "row": pa.array(ctx.row[lat, rank].numpy()),
            "position": pa.array(ctx.pos[lat, rank].numpy().astype(np.int32)),
            "window_start": pa.array(ctx.start[lat, rank].numpy().astype(np.int32)),
            "tokens": pa.FixedSizeListArray.from_arrays(
                pa.array(ctx.tokens[lat, rank].reshape(-1).numpy().astype(np.int32)), window
            ),
            "acts": pa.FixedSizeListArray.from_arrays(
                pa.array(ctx.acts[lat, rank].reshape(-1).numpy().astype(np.float32)), window
            ),
        }
    )


def save_index(index: LatentIndex, sae_dir: Path) -> None:
    """Write the index files into ``sae_dir`` as one set: all are written in full before any replaces
    an older index's, and the JSON (the 'complete' marker) goes last. A build killed while writing (the
    contexts take seconds at 65,536 latents) leaves the older index there and whole."""
    sae_dir = Path(sae_dir)
    sae_dir.mkdir(parents=True, exist_ok=True)
    build = {"build_id": index.meta.build_id}
    tensors = {name: getattr(index, name).contiguous() for name in _STAT_FIELDS}
    table = pa.concat_tables([_contexts_table(index.top, KIND_TOP), _contexts_table(index.samples, KIND_SAMPLE)])
    table = table.replace_schema_metadata(build)
    writes = {sae_dir / INDEX_STATS_FILENAME: lambda p: save_file(tensors, str(p), metadata=build),
              sae_dir / INDEX_CONTEXTS_FILENAME: lambda p: pq.write_table(table, p)}
    if index.counts is not None:
        counts = index.counts.tensors()
        writes[sae_dir / INDEX_COUNTS_FILENAME] = lambda p: save_file(counts, str(p), metadata=build)
    meta_text = json.dumps(dataclasses.asdict(index.meta), ensure_ascii=False)
    writes[sae_dir / INDEX_META_FILENAME] = lambda p: p.write_text(meta_text, encoding="utf-8")
    atomic_write_all(writes)
    if index.counts is None:  # an older build's counts would not match this build
        (sae_dir / INDEX_COUNTS_FILENAME).unlink(missing_ok=True)


def _contexts_from_table(table: pa.Table, kind: str, d_sae: int, k: int, window: int) -> Contexts:
    rows = table.filter(pc.equal(table["kind"], kind))
    lat = torch.from_numpy(rows["latent"].to_numpy().astype(np.int64))
    rank = torch.from_numpy(rows["rank"].to_numpy().astype(np.int64))

    def col(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(rows[name].to_numpy()))

    def fixed(name: str) -> torch.Tensor:
        flat = rows[name].combine_chunks().flatten().to_numpy() if rows.num_rows else np.zeros(0)
        return torch.from_numpy(np.array(flat)).reshape(-1, window)

    value = torch.zeros(d_sae, k)
    row = torch.full((d_sae, k), -1, dtype=torch.long)
    pos = torch.zeros(d_sae, k, dtype=torch.long)
    start = torch.zeros(d_sae, k, dtype=torch.long)
    tokens = torch.full((d_sae, k, window), -1, dtype=torch.long)
    acts = torch.zeros(d_sae, k, window)
    if rows.num_rows:
        value[lat, rank] = col("activation").float()
        row[lat, rank] = col("row").long()
        pos[lat, rank] = col("position").long()
        start[lat, rank] = col("window_start").long()
        tokens[lat, rank] = fixed("tokens").long()
        acts[lat, rank] = fixed("acts").float()
    return Contexts(value, row, pos, start, tokens, acts)


def load_index(sae_dir: Path, sae: SAE) -> LatentIndex | None:
    """The index next to the SAE; None when there is none; :class:`CompatibilityError` when it is not this SAE's."""
    sae_dir = Path(sae_dir)
    paths = [sae_dir / n for n in (INDEX_META_FILENAME, INDEX_STATS_FILENAME, INDEX_CONTEXTS_FILENAME)]
    if not paths[0].exists():
        return None
    broken = "The latent index in {} is incomplete or damaged ({}). Rebuild it with scripts/build_latent_index.py."
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise CompatibilityError(broken.format(sae_dir, "missing " + ", ".join(missing)))
    try:
        raw = json.loads(paths[0].read_text(encoding="utf-8"))
        meta = IndexMeta(**raw)
    except (ValueError, TypeError) as err:
        raise CompatibilityError(broken.format(sae_dir, f"unreadable {paths[0].name}: {err}")) from None
    if meta.format_version != FORMAT_VERSION:
        raise CompatibilityError(broken.format(sae_dir, f"format version {meta.format_version}, expected {FORMAT_VERSION}"))
    # A truncated or foreign file (a copy cut short, a disk that filled up) is "damaged", not a traceback.
    unreadable = (SafetensorError, pa.ArrowException, OSError, KeyError, ValueError)
    try:
        with safe_open(str(paths[1]), framework="pt") as f:
            stats = {name: f.get_tensor(name) for name in _STAT_FIELDS}
            stats_build = (f.metadata() or {}).get("build_id")
    except unreadable as err:
        raise CompatibilityError(broken.format(sae_dir, f"unreadable {paths[1].name}: {str(err)[:200]}")) from None
    try:
        table = pq.read_table(paths[2])
    except unreadable as err:
        raise CompatibilityError(broken.format(sae_dir, f"unreadable {paths[2].name}: {str(err)[:200]}")) from None
    table_build = (table.schema.metadata or {}).get(b"build_id", b"").decode()
    if stats_build != meta.build_id or table_build != meta.build_id:
        raise CompatibilityError(broken.format(sae_dir, "its files come from different builds"))
    check_index_matches_sae(meta, stats["fingerprint"], sae)
    cfg = meta.config
    counts = None
    if (sae_dir / INDEX_COUNTS_FILENAME).exists():  # indexes built before the counts existed lack it
        try:
            with safe_open(str(sae_dir / INDEX_COUNTS_FILENAME), framework="pt") as f:
                build_id = (f.metadata() or {}).get("build_id")
                counts = LatentCounts(**{name: f.get_tensor(name) for name in COUNT_FIELDS})
        except unreadable as err:
            raise CompatibilityError(broken.format(sae_dir, f"unreadable {INDEX_COUNTS_FILENAME}: {str(err)[:200]}")) from None
        if build_id != meta.build_id:
            raise CompatibilityError(broken.format(sae_dir, "its files come from different builds"))
    return LatentIndex(
        meta=meta,
        top=_contexts_from_table(table, KIND_TOP, meta.d_sae, cfg["top_k"], cfg["window"]),
        samples=_contexts_from_table(table, KIND_SAMPLE, meta.d_sae, cfg["n_lower_examples"], cfg["window"]),
        counts=counts,
        **stats,
    )
