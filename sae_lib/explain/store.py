"""``latent_explanations.parquet``: explanations and scores next to the latent index, never half-written.

One row per latent (the newest wins when a latent is explained again). The file's schema metadata
carries the index's ``build_id``, so explanations written for one index are never shown with
another. Every write goes through a temporary file and ``os.replace``: a job killed mid-write leaves
the previous complete file, and a rerun continues from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sae_lib.constants import EXPLANATIONS_FILENAME
from sae_lib.errors import CompatibilityError
from sae_lib.explain.explainer import Explanation
from sae_lib.folders import atomic_write

COLUMNS = [f.name for f in dataclasses.fields(Explanation)]
_SCHEMA = pa.schema(
    [("latent", pa.int32()), ("explanation", pa.string()), ("method", pa.string()), ("explainer", pa.string())]
    + [(name, pa.float32()) for name in ("detection", "fuzzing", "detection_shuffled", "fuzzing_shuffled")]
    + [("created", pa.string())]
)


def explanations_path(index_dir: Path) -> Path:
    return Path(index_dir) / EXPLANATIONS_FILENAME


def empty_table() -> pd.DataFrame:
    return _SCHEMA.empty_table().to_pandas()


def load_explanations(path: Path, build_id: str) -> pd.DataFrame:
    """The stored explanations (an empty table when there is no file); CompatibilityError for another index's."""
    path = Path(path)
    if not path.exists():
        return empty_table()
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise CompatibilityError(f"{path.name} is unreadable ({err}); delete it and run scripts/explain_latents.py again.") from None
    stored = (table.schema.metadata or {}).get(b"index_build_id", b"").decode()
    if stored != build_id:
        raise CompatibilityError(
            f"{path.name} was written for another build of the latent index, so its explanations may not match these "
            "latents. Run scripts/explain_latents.py (it keeps the old file aside and explains this build)."
        )
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise CompatibilityError(f"{path.name} lacks columns {missing}; run scripts/explain_latents.py again.")
    return table.select(COLUMNS).to_pandas()


def stored_build(path: Path) -> str | None:
    """The index build ``path``'s explanations were written for; None when there is no readable file."""
    try:
        return (pq.read_schema(path).metadata or {}).get(b"index_build_id", b"").decode()
    except (OSError, pa.ArrowInvalid):
        return None


def set_aside_stale(path: Path, build_id: str) -> Path | None:
    """Move explanations written for another build of the index (or unreadable) out of the way, to
    ``latent_explanations.for-build-<id>.parquet`` beside it, and return where; None when there is no
    file or it belongs to ``build_id``. Rebuilding an index changes its build, and the old file then
    blocked every later explain run; hours of explainer work are kept, but never read or pushed."""
    path = Path(path)
    if not path.exists():
        return None
    stored = stored_build(path)
    stored = "unreadable" if stored is None else stored
    if stored == build_id:
        return None
    aside = path.with_name(f"{path.stem}.for-build-{(stored or 'unknown')[:12]}{path.suffix}")
    n = 1
    while aside.exists():  # an earlier file set aside under the same name is kept too
        n += 1
        aside = path.with_name(f"{path.stem}.for-build-{(stored or 'unknown')[:12]}-{n}{path.suffix}")
    path.replace(aside)
    return aside


def save_explanations(path: Path, build_id: str, rows: Iterable[Explanation], existing: pd.DataFrame | None = None) -> pd.DataFrame:
    """Merge ``rows`` into ``existing`` (newest per latent wins), write atomically, return the merged table."""
    path = Path(path)
    new = pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=COLUMNS)
    parts = [t for t in (existing, new) if t is not None and len(t)]
    merged = pd.concat(parts, ignore_index=True) if parts else empty_table()
    merged = merged.drop_duplicates("latent", keep="last").sort_values("latent").reset_index(drop=True)
    table = pa.Table.from_pandas(merged, schema=_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({"index_build_id": build_id})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return merged
