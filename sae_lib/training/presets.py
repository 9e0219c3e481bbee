"""Named training runs: each preset is a function returning SAELens's own ``LanguageModelSAERunnerConfig``.

``qwen3-8b`` is the write-up's run translated to SAELens 6; ``demo`` is the embedded demo's SAE,
read from :class:`~sae_lib.demo.config.DemoConfig` (the demo build trains through this preset, so
the SAE the app ships and ``train_sae.py --preset demo`` are one recipe). Any SAE architecture
SAELens trains can replace a preset's JumpReLU SAE (:func:`with_architecture`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sae_lens import JumpReLUTrainingSAEConfig, LanguageModelSAERunnerConfig, LoggingConfig
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from sae_lens.saes.sae import TrainingSAEConfig

from sae_lib.demo.config import DEMO_DATASET, DEMO_MODEL_NAME, DemoConfig
from sae_lib.errors import InputError
from sae_lib.training.config import buffer_batches

ARCHITECTURES: tuple[str, ...] = tuple(SAE_TRAINING_CLASS_REGISTRY)  # filled by importing sae_lens
"""What ``--architecture`` accepts: SAELens 6.54.12 trains standard, gated, topk, abstopk, jumprelu,
batchtopk, matryoshka_batchtopk and matching_pursuit SAEs. It has transcoder classes for inference
(``sae_lens.saes.transcoder``) but no training config or trainer for them, so there is no transcoder option."""

QWEN3_8B_TRAINING_TOKENS = 1_228_800_000
"""The write-up's budget: 300,000 steps of 4,096 tokens (about a day on one A100)."""
QWEN3_8B_STEPS = QWEN3_8B_TRAINING_TOKENS // 4096
WRITE_UP_BUFFER_BATCHES = 20
"""Training batches in the shuffle buffer. The write-up ran SAELens 5 with its defaults, whose buffer
held n_batches_in_buffer (20) x store_batch_size_prompts (32) x context (128) = 81,920 tokens, i.e. 20
batches of 4,096; SAELens 6.54 counts the buffer in context rows, so ``n_batches_in_buffer`` becomes 640."""


def _no_wandb() -> LoggingConfig:
    # SAELens logs to W&B unless told not to; a run logs only with --logger.log_to_wandb true.
    return LoggingConfig(log_to_wandb=False)


def qwen3_8b() -> LanguageModelSAERunnerConfig[JumpReLUTrainingSAEConfig]:
    """The write-up's run at 16x width: Qwen3-8B, blocks.28.hook_mlp_out, 1.23B fineweb tokens, JumpReLU, 65,536 latents (about a day on one A100).

    16x (65,536 latents) is the flagship width here; the write-up's config set none, so SAELens 5 used
    its default expansion factor 4 (16,384 latents): ``--sae.d_sae 16384`` trains that width."""
    context, batch = 128, 4096  # the write-up left both at SAELens's defaults; kept for a faithful translation
    sae = JumpReLUTrainingSAEConfig(
        d_in=4096,
        d_sae=16 * 4096,
        dtype="float32",
        device="cuda",
        # The JumpReLU settings SAELens's training docs recommend (docs/training_saes.md, "Training
        # JumpReLU SAEs"): Anthropic's tanh sparsity loss with pre-act loss, on normalized
        # activations, the L0 coefficient warmed up over the whole run.
        jumprelu_sparsity_loss_mode="tanh",
        l0_coefficient=5.0,
        jumprelu_tanh_scale=4.0,
        jumprelu_bandwidth=2.0,
        jumprelu_init_threshold=0.1,
        pre_act_loss_coefficient=3e-6,
        normalize_activations="expected_average_only_in",
        l0_warm_up_steps=QWEN3_8B_STEPS,
        # SAELens 6.54 JumpReLUTrainingSAEConfig docstring: "True matches Anthropic's setup".
        jumprelu_ste_to_input=True,
    )
    return LanguageModelSAERunnerConfig(
        sae=sae,
        model_name="Qwen/Qwen3-8B",
        hook_name="blocks.28.hook_mlp_out",
        dataset_path="HuggingFaceFW/fineweb",
        dataset_trust_remote_code=False,
        streaming=True,
        is_dataset_tokenized=False,
        context_size=context,
        training_tokens=QWEN3_8B_TRAINING_TOKENS,
        train_batch_size_tokens=batch,
        n_batches_in_buffer=buffer_batches(batch, context, WRITE_UP_BUFFER_BATCHES),
        prepend_bos=False,
        n_checkpoints=5,
        autocast=True,
        autocast_lm=True,
        # torch.compile of the SAE's training forward fuses the elementwise work over the 4,096 x 65,536
        # pre-activations (JumpReLU, tanh sparsity and pre-act losses) that eager mode runs as separate
        # passes over ~1 GB tensors; compile_llm compiles the engine's forward to the hook (layers 0-28
        # only), fusing the norms, rotary and SwiGLU elementwise work. One H100 at this shape
        # (bench/gpu.py): 22.4k tok/s with neither, 27.4k with compile_sae, 33.9k with both (the forward
        # alone 37.3k -> 50.9k tok/s). Each costs about a minute of compiling once per run; a compiler
        # failure falls back to eager with a notice in the log.
        compile_sae=True,
        compile_llm=True,
        seed=42,
        device="cuda",
        dtype="float32",
        # SAELens docs (docs/training_saes.md, "Training JumpReLU SAEs"): with the tanh loss,
        # "Anthropic recommends decaying the LR for the final 20% of training".
        lr_decay_steps=QWEN3_8B_STEPS // 5,
        checkpoint_path=None,
        output_path=None,
        logger=_no_wandb(),
    )


def demo(cfg: DemoConfig = DemoConfig()) -> LanguageModelSAERunnerConfig[JumpReLUTrainingSAEConfig]:
    """The embedded demo's SAE: the tiny Qwen3 on its generated story corpus, the same code path, about 2 minutes on CPU."""
    sae = JumpReLUTrainingSAEConfig(
        d_in=cfg.lm.hidden_size,
        d_sae=cfg.d_sae,
        dtype="float32",
        device="cpu",
        l0_coefficient=cfg.sae_l0_coefficient,
        jumprelu_sparsity_loss_mode="step",
        jumprelu_init_threshold=0.01,
        jumprelu_bandwidth=0.05,
        normalize_activations="expected_average_only_in",
    )
    return LanguageModelSAERunnerConfig(
        sae=sae,
        model_name=DEMO_MODEL_NAME,
        hook_name=cfg.hook_name,
        dataset_path=DEMO_DATASET,
        dataset_trust_remote_code=False,
        streaming=False,
        context_size=cfg.sae_context,
        training_tokens=cfg.sae_training_tokens,
        train_batch_size_tokens=cfg.sae_batch_tokens,
        store_batch_size_prompts=16,
        n_batches_in_buffer=buffer_batches(cfg.sae_batch_tokens, cfg.sae_context, 4),
        lr=cfg.sae_lr,
        lr_warm_up_steps=20,
        prepend_bos=False,
        n_checkpoints=2,
        seed=cfg.seed,
        device="cpu",
        dtype="float32",
        n_eval_batches=2,
        # SAELens's default (1000 batches) is sized for billions of tokens; 50 estimate the norm well here.
        n_batches_for_norm_estimate=50,
        checkpoint_path=None,
        output_path=None,
        logger=_no_wandb(),
    )


PRESETS: dict[str, Callable[[], LanguageModelSAERunnerConfig[Any]]] = {"qwen3-8b": qwen3_8b, "demo": demo}
"""Preset name -> a function returning a fresh config (configs are mutable, so none is shared)."""


def preset_summary(name: str) -> str:
    """The preset function's first docstring line, for ``--help``."""
    return (PRESETS[name].__doc__ or "").strip().split("\n")[0]


def with_architecture(cfg: LanguageModelSAERunnerConfig[Any], architecture: str) -> LanguageModelSAERunnerConfig[Any]:
    """``cfg`` training a ``architecture`` SAE instead: shape, dtype, device and normalization kept,
    the architecture's own settings (k, l1_coefficient, ...) at SAELens's defaults."""
    if architecture not in ARCHITECTURES:
        raise InputError(f"Unknown architecture {architecture!r}. SAELens trains: {', '.join(ARCHITECTURES)}.")
    if cfg.sae.architecture() == architecture:
        return cfg
    _, config_class = get_sae_training_class(architecture)
    shared = {f.name: getattr(cfg.sae, f.name) for f in dataclasses.fields(TrainingSAEConfig) if f.name != "metadata"}
    if architecture == "matryoshka_batchtopk":
        # SAELens has no default for the nested widths (an empty list is refused): prefixes of 1/16,
        # 1/8, 1/4, 1/2 and all of the latents, as the Matryoshka SAE paper nests them.
        shared["matryoshka_widths"] = [cfg.sae.d_sae // 2**i for i in range(4, 0, -1) if cfg.sae.d_sae // 2**i > 0] + [cfg.sae.d_sae]
    # The run name SAELens derived names the old architecture; None lets it derive the new one.
    return dataclasses.replace(cfg, sae=config_class(**shared), logger=dataclasses.replace(cfg.logger, run_name=None))


def preset_config(name: str, architecture: str | None = None) -> LanguageModelSAERunnerConfig[Any]:
    """The named preset's config, with its SAE swapped for ``architecture`` when given."""
    try:
        cfg = PRESETS[name]()
    except KeyError:
        raise InputError(f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}.") from None
    return with_architecture(cfg, architecture) if architecture else cfg
