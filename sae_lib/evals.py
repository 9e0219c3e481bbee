"""Evals of a trained SAE with SAELens's own ``run_evals``, summarised into ``evals.json``.

The summary keeps the numbers a researcher looks at first (explained variance, MSE, L0, CE loss
recovered, KL, dead and dense fractions); the full SAELens metric tree is kept next to it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE, ActivationsStore, LanguageModelSAERunnerConfig
from sae_lens.evals import get_eval_everything_config, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from transformer_lens import HookedTransformer

from sae_lib import constants
from sae_lib.constants import DENSE_THRESHOLD

SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("explained_variance", "explained variance"),
    ("mse", "MSE (sum over d_in, mean over tokens)"),
    ("l0", "L0 (active latents per token)"),
    ("ce_loss_score", "CE loss recovered"),
    ("ce_loss_without_sae", "CE loss, clean"),
    ("ce_loss_with_sae", "CE loss, SAE spliced in"),
    ("ce_loss_with_ablation", "CE loss, hook zero-ablated"),
    ("kl_div_score", "KL recovered"),
    ("kl_div_with_sae", "KL, SAE spliced in"),
    ("dead_fraction", "dead latents (never fired)"),
    ("dense_fraction", f"dense latents (> {DENSE_THRESHOLD:g} of tokens)"),
)
"""Summary fields in table order, with the label the table prints."""


def evaluate_sae(
    sae: SAE[Any],
    model: HookedTransformer,
    cfg: LanguageModelSAERunnerConfig[Any],
    dataset: Any | None = None,
    n_batches: int = 4,
    batch_size_prompts: int | None = None,
) -> dict[str, Any]:
    """Run SAELens's evals on ``n_batches`` batches of ``dataset`` (else ``cfg.dataset_path``).

    Returns ``{"summary": {...}, "metrics": <SAELens's nested metrics>}``. Dead/dense fractions come
    from SAELens's per-latent firing densities over the evaluated tokens.
    """
    # Evals need tokens (for CE loss / KL), so never read a training activation cache here.
    eval_cfg = dataclasses.replace(cfg, use_cached_activations=False, verbose=False, checkpoint_path=None)
    store = ActivationsStore.from_config(model, eval_cfg, override_dataset=dataset)
    if dataset is None and eval_cfg.streaming:
        # A streamed corpus: look at other shards than the run started on (a shard shuffle).
        store.shuffle_input_dataset(seed=cfg.seed + 1)
    config = get_eval_everything_config(
        batch_size_prompts=batch_size_prompts,
        n_eval_reconstruction_batches=n_batches,
        n_eval_sparsity_variance_batches=n_batches,
    )
    sae.eval()
    metrics, feature_metrics = run_evals(
        sae=sae,
        activation_store=store,
        model=model,
        activation_scaler=ActivationScaler(),  # the trained scale is folded into the saved weights
        eval_config=config,
        model_kwargs=cfg.model_kwargs,
    )
    density = torch.tensor(feature_metrics["feature_density"], dtype=torch.float64)  # (d_sae,)
    flat = {k: v for group in metrics.values() for k, v in group.items()}
    summary: dict[str, Any] = {key: _finite(flat.get(key)) for key, _ in SUMMARY_KEYS[:-2]}
    summary["dead_fraction"] = float((density == 0).double().mean())
    summary["dense_fraction"] = float((density > DENSE_THRESHOLD).double().mean())
    summary["dense_threshold"] = DENSE_THRESHOLD
    summary["n_tokens"] = int(flat.get("total_tokens_eval_sparsity_variance", 0))
    summary["d_sae"] = int(sae.cfg.d_sae)
    return {"summary": summary, "metrics": _json_safe(metrics)}


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def save_evals(evals: dict[str, Any], sae_dir: Path) -> Path:
    path = Path(sae_dir) / constants.EVALS_FILENAME
    path.write_text(json.dumps(evals, indent=2))
    return path


def load_evals(sae_dir: Path) -> dict[str, Any] | None:
    """The folder's ``evals.json``, or None when absent or unreadable."""
    try:
        return json.loads((Path(sae_dir) / constants.EVALS_FILENAME).read_text())
    except (OSError, ValueError):
        return None


def format_evals_table(summary: dict[str, Any]) -> str:
    """A short two-column text table of the summary, for the terminal and the model card."""
    rows = []
    for key, label in SUMMARY_KEYS:
        value = summary.get(key)
        if value is None:
            text = "n/a"
        elif key in ("dead_fraction", "dense_fraction", "explained_variance", "ce_loss_score", "kl_div_score"):
            text = f"{100 * value:.1f}%"
        else:
            text = f"{value:.4g}"
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {text}" for label, text in rows]
    lines.append(f"{'tokens evaluated':<{width}}  {summary.get('n_tokens', 0):,}")
    return "\n".join(lines)
