"""Artifact folder checks shared by the model and SAE loaders, run before any weight is read.

A folder must exist and be a folder, its JSON config must parse, its safetensors headers must be
intact, and pickle checkpoints are recognised only to explain why they are refused (they can run
arbitrary code when loaded, so nothing here or in the loaders ever unpickles them). Files written into
artifact folders go through :func:`atomic_write`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sae_lib.errors import InputError, LatentLabError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Checkpoint formats that unpickle on load: never read, only recognised to explain a refusal."""


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then ``os.replace`` it onto ``path``: a reader,
    or a job killed mid-write, never sees half a file (the old one stays until the new one is whole)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_all(writes: dict[Path, Callable[[Path], object]]) -> None:
    """:func:`atomic_write` for a set of files that belong together (an index's): every file is written
    in full beside its target first, then all are moved into place one after another, in ``writes``'
    order (so the last is the one a reader checks for completeness). A failure or a kill while writing,
    which takes seconds for a large file, leaves the old set whole; only the renames, microseconds
    apart, are not one step."""
    tmps = {Path(path): Path(path).with_name(f".{Path(path).name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            for path in writes}
    try:
        for path, write in writes.items():
            write(tmps[Path(path)])
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            if tmp.exists():
                tmp.unlink()


def check_writable(folder: Path, what: str, flag: str) -> None:
    """Create ``folder`` if needed and write (then remove) a file in it, so a job that would write there
    after hours of work finds out first; :class:`InputError` naming ``flag`` when it cannot."""
    folder = Path(folder)
    probe = folder / f".write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(f"Cannot write {what} into {folder} ({err.strerror or type(err).__name__}). "
                         f"Give a writable folder with {flag}.") from None


def check_folder(folder: Path, what: str, error: type[LatentLabError], give: str, holds: str) -> None:
    """Raise ``error`` unless ``folder`` exists and is a folder; ``give`` says what to give instead,
    ``holds`` what the folder should hold."""
    if not folder.exists():
        raise error(f"{what} folder {folder} does not exist. {give}")
    if not folder.is_dir():
        raise error(f"{what} path {folder} is a file; give the folder that holds {holds}.")


def read_json(path: Path, error: type[LatentLabError], fix: str) -> Any:
    """``path`` parsed as JSON; ``error`` (ending in ``fix``) when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} is not valid JSON ({err}); {fix}") from None


def pickle_refusal(
    folder: Path, what: str, has: str, error: type[LatentLabError], fix: str
) -> LatentLabError | None:
    """The error to raise when ``folder`` holds pickle checkpoints (None when it holds none): ``what``
    folder ``has`` pickle checkpoints (names), refused, then ``fix``."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        return None
    return error(
        f"{what} folder {folder} {has} pickle checkpoints ({', '.join(pickles[:3])}), which can run "
        f"arbitrary code when loaded, so they are refused. {fix}"
    )


def check_safetensors_headers(paths: Iterable[Path], error: type[LatentLabError], fix: str) -> None:
    """Raise ``error`` unless every existing file in ``paths`` has a readable safetensors header
    (a truncated download or a garbled file fails here, before any tensor is read)."""
    from safetensors import safe_open

    for path in paths:
        if not path.exists():
            continue
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own SafetensorError / OSError variants
            raise error(f"{path} is truncated or corrupted ({err}). {fix}") from None
