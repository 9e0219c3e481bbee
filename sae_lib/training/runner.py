"""The resumable runner: SAELens's ``LanguageModelSAETrainingRunner`` with exact resume and a clean stop.

Written against SAELens 6.54.12, whose runner (``llm_sae_training_runner.py``) and trainer
(``training/sae_trainer.py``) behave as follows; each repair below names the behaviour it works
around, so it can be dropped when SAELens changes it:

* On SIGINT/SIGTERM SAELens saves only the activation-store position (and ``runner_cfg.json``), not
  the SAE or the trainer state, so that checkpoint cannot be resumed. Here the stop waits for a step
  boundary and saves a full checkpoint with ``SAETrainer.save_checkpoint``.
* ``SAETrainer.fit`` checkpoints before it counts the step (``_checkpoint_if_needed`` runs before
  ``n_training_steps += 1``), so a trainer resumed from a scheduled checkpoint is one step behind;
  the step count is restored from the token count (one step = one batch).
* A resumed trainer recomputes every checkpoint threshold from zero and would save again at once
  for each threshold already passed; those are dropped.
* The trainer builds ``torch.optim.Adam`` with torch's default implementation (``foreach``: several
  kernels per step over every parameter). On CUDA it is switched to the fused kernel (:func:`fuse_adam`).
* With ``compile_llm`` SAELens compiles the model's ``run_with_cache``. Ours is the engine's forward to
  the hook (:class:`~sae_lib.engine.EngineActivations`), which stops by raising at the hook: compiled, the
  first batch failed with an IndexError. The engine's compilable forward to the hook
  (:mod:`sae_lib.engine_prefix`) is used instead.
* With ``compile_sae`` a compiler failure (no C++ compiler, a Triton or inductor error) raises out of the
  first training step and ends the run. Here the step falls back to the eager SAE with a notice instead:
  a run must not die at step 1 for want of an optimisation.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner
from sae_lens.saes.sae import TrainingSAE
from sae_lens.training._interruption import InterruptedException
from sae_lens.training.sae_trainer import SAETrainer
from sae_lens.util import temporary_seed
from transformer_lens import HookedTransformer

from sae_lib.engine import EngineActivations, engine_for
from sae_lib.hf_hooks import hook_site
from sae_lib.errors import LatentLabError
from sae_lib.training.checkpoints import checkpoint_tokens, prune_checkpoints
from sae_lib.training.progress import Log, Progress


@dataclass
class RunStats:
    """What happened in one ``run_training`` call (also written to ``train_summary.json``)."""

    n_training_steps: int = 0
    """Optimizer steps done in total, including those before a resume."""
    n_training_samples: int = 0
    """Activation vectors (tokens) trained on in total, including those before a resume."""
    resumed_from: str | None = None
    """The checkpoint folder this run continued from, if any."""
    resumed_at_step: int | None = None
    """The step count restored from that checkpoint."""
    resumed_at_tokens: int | None = None
    """The token count restored from that checkpoint."""
    tokens_this_run: int = 0
    """Tokens trained on by this process (the rest came from the checkpoint)."""
    train_seconds: float = 0.0
    """Wall time of the training loop in this process (activation generation included)."""
    interrupted_checkpoint: str | None = None
    """Set when a stop (SIGINT/SIGTERM or ``stop_after_steps``) ended the run: the checkpoint saved on the way out."""


def fuse_adam(optimizer: torch.optim.Optimizer, device_types: tuple[str, ...] = ("cuda",)) -> bool:
    """Switch a built ``Adam`` to torch's fused kernel when all its parameters are on ``device_types``;
    returns whether it did.

    Why: at Qwen3-8B's 65,536 latents the SAE has 537M float32 parameters. The default (``foreach``)
    Adam reads and writes them, their gradients and both moments in several passes per step; the fused
    kernel does it in one, the same update to rounding. Adam reads ``fused``/``foreach`` from its param
    groups at every step, and saves them with its state, so a resumed run stays fused.
    """
    if not isinstance(optimizer, torch.optim.Adam):
        return False
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params or any(p.device.type not in device_types or not p.is_floating_point() for p in params):
        return False
    for group in optimizer.param_groups:
        group["foreach"], group["fused"] = False, True
    # A state loaded from a foreach checkpoint (or made on the CPU) keeps its step counters on the CPU,
    # where torch puts them for that implementation; the fused kernel wants float32 steps beside the
    # parameters (as Adam creates them for a fused group), or it fails on the first step of a resume.
    for p, state in optimizer.state.items():
        if "step" in state:
            state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device)
    return True


def _eager_on_compiler_failure(owner: Any, attr: str, eager: Any, log: Log, what: str, instead: str, flag: str) -> None:
    """Wrap the compiled ``owner.attr`` (SAELens's ``torch.compile`` of it) so that a compiler failure
    puts ``eager`` back, logs why, and answers that call eagerly; any other error still ends the run.

    Compilation happens on the first call (and again for a new input shape: the last, partial batch),
    so the guard stays until the run ends; the compiled functions are pure functions of their inputs,
    so running the call again eagerly after a failure changes nothing else.
    """
    compiled = getattr(owner, attr)

    def first_calls(*args: Any, **kwargs: Any):
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as err:
            reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            log(f"compiling {what} failed ({type(err).__name__}: {reason}); training continues with {instead} "
                f"(pass --{flag} false to skip compiling).")
            setattr(owner, attr, eager)
            return eager(*args, **kwargs)

    setattr(owner, attr, first_calls)


class StopRequest:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary; a second signal stops at once,
    without a checkpoint."""

    def __init__(self, log: Log):
        self.requested = False
        self.forced = False
        """A second signal: stop now, without a checkpoint (as the first signal's message promises)."""
        self.log = log

    def __call__(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True
        self.log(f"{signal.Signals(signum).name} received: saving a checkpoint after the current step "
                 "(send it again to stop without one).")


class ResumableRunner(LanguageModelSAETrainingRunner):
    """SAELens 6.54.12's runner with the repairs listed in this module's docstring and a progress line.

    ``stop_after_steps`` stops the run at that step count as a signal would (checkpoint included):
    how a test runs a preset's exact config for a few steps.
    """

    def __init__(self, cfg: LanguageModelSAERunnerConfig[Any], *, log: Log, progress_every_s: float,
                 stop_after_steps: int | None = None, keep_checkpoints: int = 0, **kwargs: Any):
        self.log = log  # before SAELens's __init__, which calls _compile_llm_if_needed
        super().__init__(cfg, **kwargs)
        self.progress_every_s = progress_every_s
        self.stop_after_steps = stop_after_steps
        self.keep_checkpoints = keep_checkpoints
        self.stats = RunStats()

    def _compile_llm_if_needed(self) -> None:
        engine = engine_for(self.model.model) if isinstance(self.model, EngineActivations) else None
        if self.cfg.compile_llm and engine is not None and hook_site(engine.hf, self.cfg.hook_name) is not None:
            # SAELens compiles ``model.run_with_cache``; the engine answers it with a forward that stops at
            # the hook by raising out of it, which a compiled graph cannot do (the first batch failed).
            # The engine compiles its own forward to the hook instead (sae_lib.engine_prefix).
            self.model.compiled = True
            self.log("--compile_llm: activations come from a torch.compile'd copy of the model up to the hook "
                     "(the first batch compiles it).")
            return
        # A model the engine does not serve (TransformerLens alone): SAELens's own compile of
        # run_with_cache, with the same fallback as the SAE step's, since the qwen3-8b preset turns
        # compile_llm on for whatever model it is given.
        eager = self.model.run_with_cache
        super()._compile_llm_if_needed()
        if self.cfg.compile_llm:
            _eager_on_compiler_failure(self.model, "run_with_cache", eager, self.log,
                                       "the model's forward", "the eager forward", "compile_llm")

    def _compile_sae_if_needed(self) -> None:
        eager = self.sae.training_forward_pass
        super()._compile_sae_if_needed()
        if self.cfg.compile_sae:
            _eager_on_compiler_failure(self.sae, "training_forward_pass", eager, self.log,
                                       "the SAE's training step", "the eager SAE", "compile_sae")

    def run_trainer_with_interruption_handling(self, trainer: SAETrainer[Any, Any]) -> TrainingSAE[Any]:
        batch = self.cfg.train_batch_size_tokens
        if self.cfg.resume_from_checkpoint is not None:
            trainer.n_training_steps = trainer.n_training_samples // batch
            trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
            self.stats.resumed_from = str(self.cfg.resume_from_checkpoint)
            self.stats.resumed_at_step = trainer.n_training_steps
            self.stats.resumed_at_tokens = trainer.n_training_samples
            self.log(f"resuming from {self.cfg.resume_from_checkpoint} at step {trainer.n_training_steps:,} "
                     f"({trainer.n_training_samples:,} tokens)")
        fuse_adam(trainer.optimizer)
        self._check_checkpoint_space(trainer)
        if self.keep_checkpoints > 0 and self.cfg.checkpoint_path is not None:
            inner_save = trainer.save_checkpoint

            def save_checkpoint(*args: Any, **kwargs: Any) -> None:
                inner_save(*args, **kwargs)  # complete on return (runner_cfg.json, written last, included)
                for gone in prune_checkpoints(Path(self.cfg.checkpoint_path), self.keep_checkpoints):
                    self.log(f"removed the older checkpoint {gone.name} (--keep_checkpoints {self.keep_checkpoints})")

            trainer.save_checkpoint = save_checkpoint  # type: ignore[method-assign]
        start = trainer.n_training_samples
        progress = Progress(self.cfg.training_tokens, start, self.cfg.total_training_steps, self.log, self.progress_every_s)
        stop = StopRequest(self.log)
        inner_step = trainer.step

        def step(batch_acts: torch.Tensor):  # (train_batch_size_tokens, d_in)
            if self.stop_after_steps is not None and trainer.n_training_samples // batch >= self.stop_after_steps:
                stop.requested = True
            if stop.requested:
                # Raised before this step touches any state, so the checkpoint is exactly step-aligned.
                raise InterruptedException()
            out = inner_step(batch_acts)
            # SAELens counts the step after checkpointing; report the step this batch completes.
            progress.update(trainer.n_training_samples, trainer.n_training_steps + 1)
            return out

        trainer.step = step  # type: ignore[method-assign]
        inner_window_log = trainer.full_sparsity_window_log

        def window_log() -> dict[str, Any]:
            # A checkpoint taken on a sparsity window's first step was saved right after SAELens reset the
            # window's statistics: resumed there, the window holds no samples, and SAELens would build a
            # histogram of 0/0 (wandb.Histogram raises on NaN, logging or not) on every --resume.
            if trainer.n_frac_active_samples == 0:
                return {}
            return inner_window_log()

        trainer.full_sparsity_window_log = window_log  # type: ignore[method-assign]
        in_main = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, stop)
        t0 = time.perf_counter()
        try:
            sae = trainer.fit()
        except (KeyboardInterrupt, InterruptedException):
            if self.cfg.checkpoint_path is not None and stop.requested and not stop.forced:
                name = str(trainer.n_training_samples)
                folder = Path(self.cfg.checkpoint_path) / name
                if checkpoint_tokens(folder) == trainer.n_training_samples:
                    # The scheduled checkpoint of this very step: complete already. Saving again would
                    # rewrite it in place, and a kill during that rewrite would break the only copy.
                    self.log(f"checkpoint already saved at this step: {folder}")
                else:
                    trainer.save_checkpoint(checkpoint_name=name)
                    self.log(f"checkpoint saved: {folder}")
                self.stats.interrupted_checkpoint = str(folder)
            raise
        finally:
            self.stats.train_seconds = time.perf_counter() - t0
            self.stats.n_training_steps = trainer.n_training_samples // batch
            self.stats.n_training_samples = trainer.n_training_samples
            self.stats.tokens_this_run = trainer.n_training_samples - start
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        progress.update(trainer.n_training_samples, trainer.n_training_steps, force=True)
        return sae


    def _check_checkpoint_space(self, trainer: SAETrainer[Any, Any]) -> None:
        """Warn at the start, with figures, when the checkpoints still to come (and the finished SAE)
        will not fit on the disk: a day-long run must not find out at its fourth checkpoint. A checkpoint
        holds the SAE's weights and Adam's two moments: three times the weights (6.4 GB for the qwen3-8b
        preset's 65,536 x 4,096 float32 SAE)."""
        where = self.cfg.checkpoint_path or self.cfg.output_path
        if where is None:
            return
        weights = sum(p.numel() * p.element_size() for p in trainer.sae.parameters())
        coming = len(trainer.checkpoint_thresholds)
        if self.keep_checkpoints > 0:  # a new one is complete before the oldest kept one goes
            coming = min(coming, self.keep_checkpoints + 1)
        need = coming * 3 * weights + weights
        folder = Path(where)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        if need > free:
            self.log(f"WARNING: this run will write {coming} checkpoint(s) of about {3 * weights / 1e9:.2f} GB and a "
                     f"{weights / 1e9:.2f} GB SAE, about {need / 1e9:.1f} GB in all, but {folder} has {free / 1e9:.1f} GB "
                     "free: a checkpoint would fail part-way (--resume continues from the last complete one). "
                     "Free space, pass --keep_checkpoints 1 (only the latest checkpoint is kept), or lower --n_checkpoints.")


class TrainingInterrupted(LatentLabError):
    """A stop (SIGINT/SIGTERM, ``stop_after_steps``) ended training; ``stats.interrupted_checkpoint`` says where it was saved."""

    def __init__(self, stats: RunStats):
        self.stats = stats
        where = (
            f"a checkpoint was saved in {stats.interrupted_checkpoint}; rerun the same command with --resume to continue."
            if stats.interrupted_checkpoint
            else "no checkpoint was saved (checkpointing is off); the run must start over."
        )
        super().__init__(f"Training was interrupted at step {stats.n_training_steps:,} "
                         f"({stats.n_training_samples:,} tokens): {where}")


def _log_corpus_passes(cfg: LanguageModelSAERunnerConfig[Any], dataset: Any | None, log: Log) -> None:
    """For a pre-tokenized in-memory dataset (rows of ``input_ids``) smaller than the run: how many times
    the run reads it. A streamed or text dataset's size is not known up front: nothing is said."""
    try:
        rows = len(dataset)
        width = len(dataset[0]["input_ids"]) if rows else 0
    except (TypeError, KeyError, IndexError):
        return
    tokens = rows * width
    if 0 < tokens < cfg.training_tokens:
        log(f"the dataset holds {tokens:,} tokens ({rows:,} rows of {width:,}), fewer than the run's "
            f"{cfg.training_tokens:,}: it is read about {cfg.training_tokens / tokens:.1f} times")


def run_training(
    cfg: LanguageModelSAERunnerConfig[Any],
    model: HookedTransformer | None = None,
    dataset: Any | None = None,
    log: Log = print,
    progress_every_s: float = 10.0,
    stop_after_steps: int | None = None,
    keep_checkpoints: int = 0,
) -> tuple[TrainingSAE[Any], RunStats]:
    """Train with SAELens's runner (seeded from ``cfg.seed``); returns the SAE and what happened.

    Writes ``cfg.output_path`` in SAELens's layout when set. ``model``/``dataset`` override what the
    config names (the demo passes its local model and its generated, pre-tokenized corpus). A stop
    raises :class:`TrainingInterrupted`. ``keep_checkpoints`` > 0: only that many of the latest complete
    checkpoints stay (0: all, as SAELens keeps them).
    """
    import logging

    sae_lens_log = logging.getLogger("sae_lens")
    level = sae_lens_log.level
    # SAELens warns that an overridden model/dataset makes the run "not reproducible via config";
    # ours are reproducible from the demo build's / train job's own records, so it would only mislead.
    sae_lens_log.setLevel(logging.ERROR)
    _log_corpus_passes(cfg, dataset, log)
    # SAELens never seeds torch from cfg.seed; the SAE's init and the buffer shuffles draw from it.
    try:
        with temporary_seed(cfg.seed), warnings.catch_warnings():
            # SAELens's "fewer samples (2434) than ... (600064)" compares a dataset's rows with the run's
            # tokens (each row holds context_size of them), then warns again at every pass over a small
            # corpus, which is meant to be read several times: the line above says how many.
            warnings.filterwarnings("ignore", message=".*(fewer samples|exhausted|context_size).*")
            # Activations come from the Hugging Face forward up to the hook (the generation engine's
            # kernels, the layers above never run); SAELens sees the HookedTransformer otherwise.
            lm = EngineActivations(model) if model is not None else None
            runner = ResumableRunner(cfg, override_dataset=dataset, override_model=lm, log=log,
                                     progress_every_s=progress_every_s, stop_after_steps=stop_after_steps,
                                     keep_checkpoints=keep_checkpoints)
            try:
                sae = runner.run()
            except (KeyboardInterrupt, InterruptedException):
                raise TrainingInterrupted(runner.stats) from None
    finally:
        sae_lens_log.setLevel(level)
    return sae, runner.stats
