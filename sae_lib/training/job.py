"""A training job end to end: what ``scripts/train_sae.py`` runs (checks, model, data, training, evals, files)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from sae_lens import SAE, LanguageModelSAERunnerConfig
from sae_lens.constants import RUNNER_CFG_FILENAME
from transformer_lens import HookedTransformer

from sae_lib import constants
from sae_lib.demo.config import DEMO_DATASET
from sae_lib.errors import InputError
from sae_lib.evals import evaluate_sae, format_evals_table, save_evals
from sae_lib.folders import check_writable
from sae_lib.published import public_name
from sae_lib.sae_hooks import enable_hook
from sae_lib.training.artifacts import finish_sae_folder
from sae_lib.training.checkpoints import clear_outputs, is_finished_sae, latest_checkpoint
from sae_lib.training.config import configure_run, hook_width
from sae_lib.training.progress import Log
from sae_lib.training.runner import RunStats, run_training

ModelLoader = Callable[[str, str | None, str | None], HookedTransformer]
"""``(source, device, dtype) -> model``: how a job gets its model when it is not handed one."""


@dataclass
class TrainJob:
    """How to run one training job; what to train is the runner config next to it."""

    out: Path | None = None
    """Output folder: the SAE in SAELens's layout, evals.json, train_summary.json, checkpoints/. Required."""
    preset: str = "demo"
    """Starting settings (listed at the end of --help); every other flag overrides one of them."""
    architecture: str | None = None
    """Train this SAELens architecture (listed at the end of --help) instead of the preset's JumpReLU; its own settings start at SAELens's defaults."""
    model: str | None = None
    """Model to load (a TransformerLens/Hub name or a local Hugging Face folder). Default: the config's
    model_name; for the demo preset, the embedded demo model (built if missing)."""
    model_dtype: str | None = None
    """Model weights dtype. Default: the loader's (bfloat16 on GPU, float32 on CPU)."""
    resume: bool = False
    """Continue the unfinished run in --out from its latest complete checkpoint, with its saved settings."""
    overwrite: bool = False
    """Replace a finished SAE (or an unfinished run) already in --out."""
    evals: bool = True
    """Run SAELens's evals at the end and save evals.json."""
    eval_batches: int = 4
    """Batches (of store_batch_size_prompts prompts) the final evals use."""
    demo_stories: int = 6000
    """Demo corpus only: training stories generated (the held-out split is a tenth of it)."""
    progress_every_s: float = 10.0
    """Seconds between progress lines."""
    keep_checkpoints: int = 0
    """Keep only this many of the latest complete checkpoints, deleting older ones as new ones complete
    (0: keep all, as SAELens does). One qwen3-8b checkpoint is about 6.4 GB (weights and Adam state), five 32 GB."""


class TrainResult(NamedTuple):
    sae_dir: Path
    """Folder holding the SAE in SAELens's layout (plus evals.json)."""
    stats: RunStats
    """Steps, tokens, timing, resume point."""
    evals: dict[str, Any] | None
    """What evals.json holds (None when evals were skipped)."""


def _model(model: HookedTransformer | ModelLoader, source: str, device: str | None, dtype: str | None) -> HookedTransformer:
    return model if isinstance(model, HookedTransformer) else model(source, device, dtype)


def _demo_datasets(model: HookedTransformer, cfg: LanguageModelSAERunnerConfig[Any], stories: int) -> tuple[Any, Any]:
    from sae_lib.demo.data import as_dataset, demo_corpus_rows

    rows = demo_corpus_rows(model.tokenizer, cfg.context_size, seed=cfg.seed, n_train=stories,
                            n_heldout=max(1, stories // 10))
    return as_dataset(rows.train), as_dataset(rows.heldout)


def _resume(job: TrainJob, out: Path, model: HookedTransformer | ModelLoader, log: Log):
    if is_finished_sae(out) and not job.overwrite:
        raise InputError(f"{out} already holds a finished SAE: there is nothing to resume. "
                         "Push or use it, or start a new run in another --out.")
    ckpt = latest_checkpoint(out)
    try:
        saved = json.loads((out / constants.TRAIN_JOB_FILENAME).read_text())
    except (OSError, ValueError):
        saved = None
    if ckpt is None or saved is None:
        raise InputError(
            f"No complete checkpoint to resume in {out / constants.CHECKPOINTS_SUBDIR}. A run saves one "
            "n_checkpoints times and when stopped with Ctrl-C/SIGTERM; run without --resume to start over."
        )
    cfg = LanguageModelSAERunnerConfig.from_dict(json.loads((ckpt / RUNNER_CFG_FILENAME).read_text()))
    cfg.resume_from_checkpoint = str(ckpt)
    cfg.output_path = str(out)
    # Where the run's folder is now (it may have moved since, e.g. off a preempted machine's scratch disk):
    # the saved path would send the next checkpoints back to the old place.
    cfg.checkpoint_path = str(ckpt.parent)
    log(f"resuming the {saved['preset']} run in {out} (its saved settings; command-line settings are ignored)")
    lm = _model(model, saved["model"], cfg.llm_device or cfg.device, saved["model_dtype"])
    return cfg, lm, saved["preset"], saved.get("demo_stories", job.demo_stories)


def train(job: TrainJob, cfg: LanguageModelSAERunnerConfig[Any] | None, model: HookedTransformer | ModelLoader,
          log: Log = print) -> TrainResult:
    """Run a training job end to end: checks, model, data, SAELens training, evals, summary.

    ``cfg`` is what to train (a preset's config with any overrides; ignored with ``job.resume``,
    which reads the run's own). ``model`` is the model itself or a :data:`ModelLoader` called with the
    job's model source (``job.model``, else ``cfg.model_name``).
    """
    if job.out is None:
        raise InputError("--out is required: the folder to write the SAE into.")
    out = Path(job.out).expanduser().resolve()
    if job.eval_batches < 1:
        raise InputError(f"--eval_batches must be at least 1, got {job.eval_batches}.")
    if job.keep_checkpoints < 0:
        raise InputError(f"--keep_checkpoints must be 0 (keep all) or more, got {job.keep_checkpoints}.")
    if job.resume:
        cfg, lm, preset, demo_stories = _resume(job, out, model, log)
    else:
        if cfg is None:
            raise InputError("A new run needs a training config (a preset).")
        if is_finished_sae(out) and not job.overwrite:
            raise InputError(f"{out} already holds a finished SAE. Pass --overwrite to replace it, or choose another --out.")
        if latest_checkpoint(out) is not None and not job.overwrite:
            raise InputError(f"{out} holds checkpoints of an unfinished run. Pass --resume to continue it, "
                             "or --overwrite to start over.")
        # Before the model loads and the run starts: a file or an unwritable --out failed at out.mkdir below.
        check_writable(out, "the SAE", "--out")
        preset, demo_stories = job.preset, job.demo_stories
        source = job.model or cfg.model_name
        log(f"loading {public_name(source)} on {cfg.llm_device or cfg.device}")
        lm = _model(model, source, cfg.llm_device or cfg.device, job.model_dtype)
        if job.model is not None:  # record which model this is, never where it sits on this machine
            cfg = dataclasses.replace(cfg, model_name=public_name(job.model))
        cfg = configure_run(cfg, d_in=hook_width(lm, cfg.hook_name), out=out, log=log)
        if job.overwrite:
            clear_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        # The resume record stays in the local run folder (push_to_hub uploads none of it).
        record = {"preset": preset, "model": source, "model_dtype": job.model_dtype,
                  "demo_stories": demo_stories, "runner_cfg": cfg.to_dict()}
        (out / constants.TRAIN_JOB_FILENAME).write_text(json.dumps(record, indent=2, default=str))

    # An optional hook point (hook_mlp_in) fires only when switched on: SAELens reads and splices there
    # whenever the engine does not serve the model (and its evals always do).
    enable_hook(lm, cfg.hook_name)
    dataset = eval_dataset = None
    if cfg.dataset_path == DEMO_DATASET:
        dataset, eval_dataset = _demo_datasets(lm, cfg, demo_stories)
    log(f"training a {cfg.sae.architecture()} SAE {cfg.sae.d_in} -> {cfg.sae.d_sae} on {cfg.hook_name} of "
        f"{cfg.model_name}: {cfg.training_tokens:,} tokens in {cfg.total_training_steps:,} steps of {cfg.train_batch_size_tokens:,}")
    _, stats = run_training(cfg, model=lm, dataset=dataset, log=log, progress_every_s=job.progress_every_s,
                            keep_checkpoints=job.keep_checkpoints)
    log(f"SAE written to {out} ({stats.n_training_steps:,} steps, {stats.n_training_samples:,} tokens)")

    evals = None
    if job.evals:
        sae = SAE.load_from_disk(str(out), device=cfg.device)  # what was written, as anyone loads it
        try:
            evals = evaluate_sae(sae, lm, cfg, dataset=eval_dataset, n_batches=job.eval_batches)
        except Exception as err:  # hours of training are on disk: a failing eval must not leave the folder half-done
            log(f"WARNING: the evals failed ({type(err).__name__}: {str(err)[:300]}). The SAE itself is complete "
                f"in {out}; it is finished without held-out metrics ({constants.EVALS_FILENAME} is not written).")
        else:
            save_evals(evals, out)
            log(f"evals ({constants.EVALS_FILENAME}):\n{format_evals_table(evals['summary'])}")
    finish_sae_folder(out, evals)
    summary = {**dataclasses.asdict(stats), "training_tokens": cfg.training_tokens,
               "total_training_steps": cfg.total_training_steps, "preset": preset}
    (out / constants.TRAIN_SUMMARY_FILENAME).write_text(json.dumps(summary, indent=2))
    return TrainResult(out, stats, evals)
