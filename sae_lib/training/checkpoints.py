"""Checkpoint folders of a run: which are complete, the latest one, and what a run's --out holds."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from sae_lens.constants import (
    ACTIVATION_SCALER_CFG_FILENAME,
    ACTIVATIONS_STORE_STATE_FILENAME,
    RUNNER_CFG_FILENAME,
    TRAINER_STATE_FILENAME,
)

from sae_lib import constants

CHECKPOINT_FILES = (
    constants.SAE_WEIGHTS_FILENAME, constants.SAE_CFG_FILENAME, TRAINER_STATE_FILENAME,
    ACTIVATIONS_STORE_STATE_FILENAME, ACTIVATION_SCALER_CFG_FILENAME,
)
"""What SAELens writes into a checkpoint before ``runner_cfg.json`` (which it writes last)."""


def is_finished_sae(folder: Path) -> bool:
    """A folder SAELens can load: ``cfg.json`` and ``sae_weights.safetensors`` present."""
    folder = Path(folder)
    return (folder / constants.SAE_CFG_FILENAME).is_file() and (folder / constants.SAE_WEIGHTS_FILENAME).is_file()


def checkpoint_tokens(folder: Path) -> int | None:
    """Tokens done at a complete checkpoint folder, else None (a kill can leave one half-written).

    Not ``final_N`` (``--save_final_checkpoint``): SAELens saves it after folding the activation scaling
    into the weights, and a run resumed from it would estimate and fold the scaling a second time."""
    match = re.fullmatch(r"(\d+)", folder.name)
    if match is None or not all((folder / name).is_file() for name in CHECKPOINT_FILES):
        return None
    try:  # SAELens writes runner_cfg.json last: readable JSON there means the rest is complete
        json.loads((folder / RUNNER_CFG_FILENAME).read_text())
    except (OSError, ValueError):
        return None
    return int(match.group(1))


def latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the most tokens under ``out/checkpoints/<run id>/``."""
    root = Path(out) / constants.CHECKPOINTS_SUBDIR
    found = [(tokens, ckpt.stat().st_mtime, ckpt) for ckpt in root.glob("*/*")
             if ckpt.is_dir() and (tokens := checkpoint_tokens(ckpt)) is not None]
    return max(found)[2] if found else None


def clear_outputs(out: Path) -> None:
    """Remove what a run writes into ``out`` (only that: never rmtree a folder pointed at by mistake),
    and the latent index and explanations built next to the old SAE: they describe weights that are
    gone, and push_to_hub.py would publish them beside the new ones."""
    for name in (constants.SAE_CFG_FILENAME, constants.SAE_WEIGHTS_FILENAME, constants.SPARSITY_FILENAME,
                 RUNNER_CFG_FILENAME, constants.EVALS_FILENAME, constants.TRAIN_JOB_FILENAME,
                 constants.TRAIN_SUMMARY_FILENAME, constants.INDEX_META_FILENAME, constants.INDEX_STATS_FILENAME,
                 constants.INDEX_CONTEXTS_FILENAME, constants.INDEX_COUNTS_FILENAME, constants.EXPLANATIONS_FILENAME):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / constants.CHECKPOINTS_SUBDIR, ignore_errors=True)


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete the complete checkpoints in ``run_dir`` (one run's ``checkpoints/<run id>/``) but the
    ``keep`` with the most tokens; returns what went. Nothing else is touched: not ``final_N``, not a
    half-written folder (a kill mid-save), whose last complete predecessor therefore also stays."""
    complete = sorted(((tokens, ckpt) for ckpt in Path(run_dir).iterdir()
                       if ckpt.is_dir() and (tokens := checkpoint_tokens(ckpt)) is not None), reverse=True)
    gone = [ckpt for _, ckpt in complete[keep:]] if keep > 0 else []
    for ckpt in gone:
        shutil.rmtree(ckpt)
    return gone

