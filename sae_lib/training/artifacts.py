"""The finished SAE folder: SAELens's files rewritten to carry no local path and only measured figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_lens.constants import RUNNER_CFG_FILENAME

from sae_lib import constants
from sae_lib.published import rewrite_public


def finish_sae_folder(folder: Path, evals: dict[str, Any] | None) -> None:
    """Rewrite ``cfg.json`` and ``runner_cfg.json`` in ``folder`` through ``sae_lib.published.public_cfg``.

    SAELens wrote them with the run's output/checkpoint folders and training-window L0 and dead
    counts; after this they name no local path, and ``metadata.l0`` / ``num_dead_features`` are the
    evals' held-out measurements (absent without evals). Checkpoints keep SAELens's originals, which
    ``--resume`` reads.
    """
    summary = (evals or {}).get("summary")
    rewrite_public(Path(folder), (constants.SAE_CFG_FILENAME, RUNNER_CFG_FILENAME), summary)
