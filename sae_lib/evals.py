"""Evals of a trained SAE with SAELens's own ``run_evals``, summarised into ``evals.json``.

The summary keeps the numbers a researcher looks at first (explained variance, MSE, L0, CE loss
recovered with the three losses behind it, KL, dead and dense fractions); the full SAELens metric
tree is kept next to it.

What the CE losses measure (SAELens 6.54.12, ``sae_lens.evals.get_recons_loss``): the mean
next-token cross-entropy, in nats, over the evaluated rows exactly as the activation store hands
them out (``prepend_bos`` as configured: no BOS is added for our presets; no row is re-packed), one
value per position that has a next token, averaged over all tokens of all batches at once, **leaving
out every prediction made at a special-token position** (BOS/EOS/pad: ``exclude_special_tokens``,
on by default in ``run_evals``). On the demo, whose stories are separated by ``<|endoftext|>``,
the first token of each story (1.9% of positions, 2.4 nats each) is therefore not scored: the
shipped demo's clean loss is 0.921 nats where a plain ``model(rows, labels=rows)`` mean over every
position of the same 240 held-out rows is 0.950 (the LM's held-out loss in ``build.json``: 0.9497 on
all 243 rows; the issue's independent 0.948). Before the demo rows were tokenized without the
tokenizer's own BOS (``sae_lib.demo.data``), a second ``<|endoftext|>`` stood before every story as
well. ``tests/test_evals.py`` checks the definition against a naive computation.
"With SAE" splices the SAE's reconstruction in at the hook (special positions
keep their true activations); "ablated" zeroes the hook's output at every position.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE, ActivationsStore, LanguageModelSAERunnerConfig
from sae_lens.evals import get_eval_everything_config, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.util import get_special_token_ids
from transformer_lens import HookedTransformer

from sae_lib import constants
from sae_lib.constants import DENSE_THRESHOLD
from sae_lib.engine import EngineActivations
from sae_lib.sae_hooks import enable_hook

MIN_ABLATION_GAP = 0.05
"""Nats. CE loss recovered is (ablated - with SAE) / (ablated - clean). When zero-ablating the hook
raises the loss by less than this, the denominator is as small as the SAE's own error and the
sampling noise of a few thousand tokens, so the ratio can exceed 100% or swing by tens of points
between eval sets: the summary flags it (``ce_loss_score_meaningful`` false) and says why."""

SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("explained_variance", "explained variance"),
    ("mse", "MSE (sum over d_in, mean over tokens)"),
    ("l0", "L0 (active latents per token)"),
    ("ce_loss_score", "CE loss recovered"),
    ("ce_loss_without_sae", "CE loss, clean"),
    ("ce_loss_with_sae", "CE loss, SAE spliced in"),
    ("ce_loss_with_ablation", "CE loss, hook zero-ablated"),
    ("ce_ablation_gap", "ablation gap (ablated - clean)"),
    ("kl_div_score", "KL recovered"),
    ("kl_div_with_sae", "KL, SAE spliced in"),
    ("dead_fraction", "dead latents (never fired)"),
    ("dense_fraction", f"dense latents (> {DENSE_THRESHOLD:g} of tokens)"),
)
"""Summary fields in table order, with the label the table prints."""
_DERIVED_KEYS = frozenset({"ce_ablation_gap", "dead_fraction", "dense_fraction"})
"""Summary fields computed here rather than read from SAELens's metrics."""


def evaluate_sae(
    sae: SAE[Any],
    model: HookedTransformer,
    cfg: LanguageModelSAERunnerConfig[Any],
    dataset: Any | None = None,
    n_batches: int | None = 4,
    batch_size_prompts: int | None = None,
) -> dict[str, Any]:
    """Run SAELens's evals on ``n_batches`` batches of ``dataset`` (else ``cfg.dataset_path``).

    ``n_batches`` None: every full batch of ``dataset`` once (its first ``len // batch`` x batch rows).
    Returns ``{"summary": {...}, "metrics": <SAELens's nested metrics>}``. Dead/dense fractions come
    from SAELens's per-latent firing densities over the evaluated tokens; the CE losses are defined in
    this module's docstring.
    """
    # Evals need tokens (for CE loss / KL), so never read a training activation cache here.
    eval_cfg = dataclasses.replace(cfg, use_cached_activations=False, verbose=False, checkpoint_path=None)
    batch = batch_size_prompts or cfg.store_batch_size_prompts
    if n_batches is None:
        if dataset is None:
            raise ValueError("n_batches=None (the whole dataset) needs a dataset.")
        n_batches = len(dataset) // batch
        if n_batches < 1:
            raise ValueError(f"The eval dataset has {len(dataset)} rows, fewer than one batch of {batch}.")
    # Activations at the hook from the engine's forward; the CE/KL forwards with the SAE spliced in stay
    # HookedTransformer's run_with_hooks (EngineActivations passes every other call through). Those
    # splice at cfg.hook_name: an optional hook point (hook_mlp_in) that is off never fires, and the
    # with-SAE and ablated losses would silently equal the clean one (then SAELens divides by zero).
    enable_hook(model, cfg.hook_name)
    lm = EngineActivations(model)
    with warnings.catch_warnings():
        # "fewer samples (243) than ... (600064)": SAELens compares the eval rows with the run's training
        # tokens, which evals never read (they read n_batches batches).
        warnings.filterwarnings("ignore", message=".*fewer samples.*")
        store = ActivationsStore.from_config(lm, eval_cfg, override_dataset=dataset)
    if dataset is None and eval_cfg.streaming:
        # A streamed corpus: look at other shards than the run started on (a shard shuffle).
        store.shuffle_input_dataset(seed=cfg.seed + 1)
    _reset_restarts_rows(store)
    batches = _record_batches(store)
    config = get_eval_everything_config(
        batch_size_prompts=batch_size_prompts,
        n_eval_reconstruction_batches=n_batches,
        n_eval_sparsity_variance_batches=n_batches,
    )
    sae.eval()
    # SAELens takes the CE losses and KLs from the model's logits in the model's dtype and averages them
    # there: a bfloat16 model's losses came out rounded to bfloat16 (steps of 1/32 nat at 4-8 nats),
    # finer than the ablation gap. The logits are made float32 for the evals.
    to_float32 = model.unembed.register_forward_hook(lambda _module, _inputs, logits: logits.float())
    try:
        metrics, feature_metrics = run_evals(
            sae=sae,
            activation_store=store,
            model=lm,
            activation_scaler=ActivationScaler(),  # the trained scale is folded into the saved weights
            eval_config=config,
            model_kwargs=cfg.model_kwargs,
        )
    finally:
        to_float32.remove()
    density = torch.tensor(feature_metrics["feature_density"], dtype=torch.float64)  # (d_sae,)
    flat = {k: v for group in metrics.values() for k, v in group.items()}
    summary: dict[str, Any] = {key: _finite(flat.get(key)) for key, _ in SUMMARY_KEYS if key not in _DERIVED_KEYS}
    summary.update(ce_verdict(summary))
    summary["dead_fraction"] = float((density == 0).double().mean())
    summary["dense_fraction"] = float((density > DENSE_THRESHOLD).double().mean())
    summary["dense_threshold"] = DENSE_THRESHOLD
    # The tokens the variance/sparsity metrics averaged over: SAELens's token_stats count every position
    # of the rows, special tokens included, which run_evals leaves out of every metric (the demo: 30,720
    # positions, 30,129 tokens measured).
    special = torch.tensor(get_special_token_ids(model.tokenizer), dtype=torch.long)
    summary["n_tokens"] = int(sum((~torch.isin(b.cpu(), special)).sum() for b in batches[-n_batches:]))
    summary["d_sae"] = int(sae.cfg.d_sae)
    return {"summary": summary, "metrics": _json_safe(metrics)}


def _reset_restarts_rows(store: ActivationsStore) -> None:
    """Make ``store.reset_input_dataset`` restart the rows ``get_batch_tokens`` hands out.

    ``run_evals`` resets the store between its CE/KL batches and its variance/sparsity batches so both
    read the same rows; SAELens 6.54.12's reset only restarts the raw dataset iterator, not the row
    iterator the batches come from, so explained variance, MSE, L0 and dead/dense fractions were
    measured on the *next* rows (on the demo: held-out rows 240-242 and 0-236, where the CE losses
    read rows 0-239; on a stream: the batches after the CE ones)."""
    reset = store.reset_input_dataset

    def reset_rows() -> None:
        reset()
        store.iterable_sequences = store._iterate_tokenized_sequences()

    store.reset_input_dataset = reset_rows  # type: ignore[method-assign]


def _record_batches(store: ActivationsStore) -> list[torch.Tensor]:
    """A list that receives every token batch ``store.get_batch_tokens`` hands out from now on."""
    batches: list[torch.Tensor] = []
    get = store.get_batch_tokens

    def get_and_record(*args: Any, **kwargs: Any) -> torch.Tensor:
        tokens = get(*args, **kwargs)
        batches.append(tokens)
        return tokens

    store.get_batch_tokens = get_and_record  # type: ignore[method-assign]
    return batches


def ce_verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """The ablation gap, whether CE loss recovered means anything at it, and a sentence saying so."""
    clean, ablated = summary.get("ce_loss_without_sae"), summary.get("ce_loss_with_ablation")
    if clean is None or ablated is None:
        return {"ce_ablation_gap": None, "ce_loss_score_meaningful": False,
                "ce_loss_score_note": "CE losses were not computed."}
    gap = ablated - clean
    meaningful = gap >= MIN_ABLATION_GAP
    if meaningful:
        note = f"Zero-ablating the hook raises the loss by {gap:.3f} nats."
    elif gap <= 0:
        note = (f"Zero-ablating the hook does not raise the loss (ablated - clean = {gap:.3f} nats), so CE loss "
                "recovered divides by a gap of zero or less and means nothing; compare the three losses instead.")
    else:
        note = (f"Zero-ablating the hook raises the loss by only {gap:.3f} nats (< {MIN_ABLATION_GAP:g}), so CE loss "
                "recovered divides by a gap as small as the SAE's own error and says little; compare the three losses instead.")
    return {"ce_ablation_gap": gap, "ce_loss_score_meaningful": meaningful, "ce_loss_score_note": note}


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
            if key == "ce_loss_score" and summary.get("ce_loss_score_meaningful") is False:
                text += " (not meaningful: see below)"
        else:
            text = f"{value:.4g}"
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {text}" for label, text in rows]
    lines.append(f"{'tokens evaluated':<{width}}  {summary.get('n_tokens', 0):,}")
    if summary.get("ce_loss_score_meaningful") is False and summary.get("ce_loss_score_note"):
        lines.append(summary["ce_loss_score_note"])
    return "\n".join(lines)
