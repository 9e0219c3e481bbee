"""Names shared by the scripts, the app and the tests: environment variables, file names, defaults.

SAE artifacts use SAELens's own file names (imported, not repeated) so that any SAELens code can
load what we write.
"""

import os
from pathlib import Path

from sae_lens.constants import (  # noqa: F401  (re-exported: one place for artifact names)
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    SPARSITY_FILENAME,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# --- environment variables -------------------------------------------------------------------
ENV_MODEL = "LATENT_LAB_MODEL"
"""Model to load: a TransformerLens name (``Qwen/Qwen3-8B``) or a local Hugging Face folder."""
ENV_SAE = "LATENT_LAB_SAE"
"""SAE to load: a local SAELens folder, ``user/repo:sae_id[@revision]`` on the Hub, or a SAELens registry
release ``sae-lens:RELEASE/SAE_ID``."""
ENV_DEMO_DIR = "LATENT_LAB_DEMO_DIR"
"""Where the embedded default (demo model, SAE, index) is built and found."""
ENV_DEVICE = "LATENT_LAB_DEVICE"
ENV_DTYPE = "LATENT_LAB_DTYPE"

# --- embedded default ------------------------------------------------------------------------
DEFAULT_DEMO_DIR = REPO_ROOT / "data" / "demo"
DEMO_MODEL_SUBDIR = "model"
DEMO_SAE_SUBDIR = "sae"
DEMO_CORPUS_SUBDIR = "corpus"
DEMO_BUILD_MANIFEST = "build.json"
DEMO_GUIDE_FILENAME = "topic_guide.json"
"""The demo's planted topics and the latent that stands for each (:mod:`sae_lib.demo.guide`), in the SAE folder."""
"""Written last by the demo build: its presence (with a matching config hash) means 'complete'."""

# --- latent index (lives inside the SAE folder, next to SAELens's files) -----------------------
INDEX_STATS_FILENAME = "latent_index.safetensors"
INDEX_CONTEXTS_FILENAME = "latent_contexts.parquet"
INDEX_META_FILENAME = "latent_index.json"
INDEX_COUNTS_FILENAME = "latent_counts.safetensors"
"""Tokens each latent fires on and latents firing with it (bounded tables, :mod:`sae_lib.cooccurrence`)."""
EXPLANATIONS_FILENAME = "latent_explanations.parquet"
"""LM-written explanations and their scores (``scripts/explain_latents.py``), next to the index."""

DENSE_THRESHOLD = 0.1
"""A latent firing on more than this fraction of tokens counts as dense (evals and the latent index)."""

# --- evals written by the training script ------------------------------------------------------
EVALS_FILENAME = "evals.json"


def demo_dir() -> Path:
    """The embedded default's folder: ``$LATENT_LAB_DEMO_DIR`` or ``<repo>/data/demo``."""
    env = os.environ.get(ENV_DEMO_DIR)
    return Path(env).expanduser().resolve() if env else DEFAULT_DEMO_DIR

# --- training runs (inside the --out folder of scripts/train_sae.py) ----------------------------
TRAIN_JOB_FILENAME = "train_job.json"
"""What the run was started with (preset, model source, runner config): ``--resume`` reads it back."""
TRAIN_SUMMARY_FILENAME = "train_summary.json"
"""Written at the end of a run: steps, tokens, seconds, and the checkpoint it resumed from."""
CHECKPOINTS_SUBDIR = "checkpoints"
"""SAELens writes ``<out>/checkpoints/<run id>/<n_training_samples>/`` in here."""
