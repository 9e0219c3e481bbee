"""Published SAE metadata: ``cfg.json`` / ``runner_cfg.json`` with no local path and only measured figures.

SAELens records the runner's folders (``output_path``, ``checkpoint_path``, a local ``model_name``)
in both files, and stamps ``metadata.l0`` / ``metadata.num_dead_features`` from the last training
window (for the demo: L0 190 and 0 dead latents, where held-out text gives 15.4 and 20% dead). What
we write next to a finished SAE and what we upload goes through :func:`public_cfg` instead: local
paths become folder names (or go, for purely local fields), and the two figures are the evals'
held-out measurements, or absent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sae_lib.folders import atomic_write

LOCAL_ONLY_KEYS = frozenset({"output_path", "checkpoint_path", "resume_from_checkpoint", "cached_activations_path"})
"""runner_cfg.json fields that only ever name this machine's folders: dropped (set to null) when published."""
MEASURED_KEYS = ("l0", "num_dead_features")
"""cfg.json metadata that SAELens fills from training; replaced by held-out measurements or removed."""

_ABSOLUTE = re.compile(r"^(/|~|\.{1,2}/|[A-Za-z]:[\\/]|\\\\)")


def is_local_path(value: Any) -> bool:
    """True for a string that names a folder or file on this machine: absolute, ``~``, ``./``/``../``,
    or an existing relative path (``Qwen/Qwen3-8B`` is a Hub id unless such a folder exists here)."""
    if not isinstance(value, str) or not value:
        return False
    if _ABSOLUTE.match(value):
        return True
    return ("/" in value or os.sep in value) and Path(value).exists()


def public_name(value: Any) -> Any:
    """``value``, or just its last path component when it is a local path (a folder name, never the path)."""
    if not is_local_path(value):
        return value
    return Path(os.path.normpath(os.path.expanduser(value))).name or None


def scrub_local_paths(obj: Any) -> Any:
    """``obj`` (JSON-like) with :data:`LOCAL_ONLY_KEYS` set to None and every other local path made a name."""
    if isinstance(obj, dict):
        return {k: (None if k in LOCAL_ONLY_KEYS else scrub_local_paths(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_local_paths(v) for v in obj]
    return public_name(obj)


def measured_metadata(summary: dict[str, Any] | None, d_sae: int | None = None) -> dict[str, Any]:
    """``metadata`` fields from an evals summary (``sae_lib.evals``): L0 and dead latents on held-out
    tokens, with how many tokens; empty when there are no evals (``d_sae``: when the summary lacks it)."""
    if not summary or summary.get("l0") is None:
        return {}
    out = {"l0": summary["l0"], "measured_on_tokens": summary.get("n_tokens")}
    width = summary.get("d_sae") or d_sae
    if summary.get("dead_fraction") is not None and width:
        out["num_dead_features"] = round(summary["dead_fraction"] * width)
    return out


def public_cfg(cfg: dict[str, Any], evals_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cfg.json or runner_cfg.json dict as it may be written next to a finished SAE or published."""
    out = scrub_local_paths(cfg)
    sae = out.get("sae") if isinstance(out.get("sae"), dict) else {}
    for holder, d_sae in ((out.get("metadata"), out.get("d_sae")), (sae.get("metadata"), sae.get("d_sae"))):
        if isinstance(holder, dict):
            for key in (*MEASURED_KEYS, "measured_on_tokens"):
                holder.pop(key, None)
            holder.update(measured_metadata(evals_summary, d_sae))
    return out


def rewrite_public(folder: Path, names: tuple[str, ...], evals_summary: dict[str, Any] | None) -> None:
    """Rewrite the JSON files ``names`` in ``folder`` (those present) through :func:`public_cfg`, atomically."""
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            continue
        data = public_cfg(json.loads(path.read_text()), evals_summary)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))
