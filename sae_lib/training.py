"""SAE training with SAELens: one builder for the runner config, one call that trains.

The demo build and ``scripts/train_sae.py`` both go through here, so the embedded default is trained
by exactly the code a researcher uses for Qwen3-8B.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sae_lens import (
    JumpReLUTrainingSAEConfig,
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
)
from sae_lens.saes.sae import TrainingSAE
from transformer_lens import HookedTransformer


def jumprelu_runner_config(
    *,
    model_name: str,
    hook_name: str,
    d_in: int,
    d_sae: int,
    dataset_path: str,
    training_tokens: int,
    context_size: int,
    train_batch_size_tokens: int = 4096,
    lr: float = 3e-4,
    l0_coefficient: float = 1.0,
    jumprelu_init_threshold: float = 0.01,
    jumprelu_bandwidth: float = 0.05,
    jumprelu_sparsity_loss_mode: str = "step",
    l0_warm_up_steps: int = 0,
    pre_act_loss_coefficient: float | None = None,
    lr_warm_up_steps: int = 0,
    lr_decay_steps: int = 0,
    normalize_activations: str = "expected_average_only_in",
    store_batch_size_prompts: int = 32,
    n_batches_in_buffer: int = 16,
    prepend_bos: bool = False,
    streaming: bool = True,
    device: str = "cpu",
    dtype: str = "float32",
    autocast: bool = False,
    autocast_lm: bool = False,
    seed: int = 42,
    n_checkpoints: int = 0,
    checkpoint_path: str | None = None,
    output_path: str | None = None,
    resume_from_checkpoint: str | None = None,
    wandb_project: str | None = None,
    n_eval_batches: int = 10,
    verbose: bool = True,
    **extra: Any,
) -> LanguageModelSAERunnerConfig[JumpReLUTrainingSAEConfig]:
    """A SAELens runner config for a JumpReLU SAE; ``extra`` passes any other runner field through."""
    sae_cfg = JumpReLUTrainingSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        dtype=dtype,
        device=device,
        normalize_activations=normalize_activations,
        l0_coefficient=l0_coefficient,
        l0_warm_up_steps=l0_warm_up_steps,
        jumprelu_init_threshold=jumprelu_init_threshold,
        jumprelu_bandwidth=jumprelu_bandwidth,
        jumprelu_sparsity_loss_mode=jumprelu_sparsity_loss_mode,
        pre_act_loss_coefficient=pre_act_loss_coefficient,
    )
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        model_name=model_name,
        hook_name=hook_name,
        dataset_path=dataset_path,
        streaming=streaming,
        context_size=context_size,
        training_tokens=training_tokens,
        train_batch_size_tokens=train_batch_size_tokens,
        store_batch_size_prompts=store_batch_size_prompts,
        n_batches_in_buffer=n_batches_in_buffer,
        lr=lr,
        lr_warm_up_steps=lr_warm_up_steps,
        lr_decay_steps=lr_decay_steps,
        prepend_bos=prepend_bos,
        device=device,
        dtype=dtype,
        autocast=autocast,
        autocast_lm=autocast_lm,
        seed=seed,
        n_checkpoints=n_checkpoints,
        checkpoint_path=checkpoint_path,
        output_path=output_path,
        resume_from_checkpoint=resume_from_checkpoint,
        n_eval_batches=n_eval_batches,
        logger=LoggingConfig(log_to_wandb=wandb_project is not None, wandb_project=wandb_project),
        verbose=verbose,
        **extra,
    )


@contextmanager
def _quiet_override_warnings() -> Iterator[None]:
    # SAELens warns that an overridden model/dataset makes the run "not reproducible via config";
    # ours are reproducible from the demo build's own config, so the warning would only mislead.
    log = logging.getLogger("sae_lens")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def run_training(
    cfg: LanguageModelSAERunnerConfig[Any],
    model: HookedTransformer | None = None,
    dataset: Any | None = None,
) -> TrainingSAE[Any]:
    """Train with SAELens's own runner; writes ``cfg.output_path`` in SAELens's layout when set.

    ``model``/``dataset`` override what the config names (the demo passes its local model and its
    generated, pre-tokenized corpus, since neither lives on the Hub).
    """
    with _quiet_override_warnings():
        runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model)
    return runner.run()
