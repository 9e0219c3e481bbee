"""SAE training with SAELens: presets, config rules, the resumable runner, checkpoints and the job.

The demo build and ``scripts/train_sae.py`` both go through here, so the embedded default is trained
by exactly the code a researcher uses for Qwen3-8B. On top of SAELens's runner this adds what a
day-long run needs: configs checked before step 1, progress (tokens, tokens/s, time left), a
checkpoint on SIGINT/SIGTERM that can be resumed, resume that keeps the step count, evals saved
next to the SAE, and published files without local paths.
"""

from sae_lib.training.checkpoints import CHECKPOINT_FILES, clear_outputs, is_finished_sae, latest_checkpoint
from sae_lib.training.config import (
    buffer_batches,
    check_buffer,
    configure_run,
    hook_width,
    round_training_tokens,
    saelens_settings,
)
from sae_lib.training.job import ModelLoader, TrainJob, TrainResult, train
from sae_lib.training.presets import (
    ARCHITECTURES,
    PRESETS,
    QWEN3_8B_STEPS,
    QWEN3_8B_TRAINING_TOKENS,
    preset_config,
    preset_summary,
    with_architecture,
)
from sae_lib.training.progress import Progress
from sae_lib.training.runner import ResumableRunner, RunStats, TrainingInterrupted, run_training

__all__ = [
    "ARCHITECTURES", "CHECKPOINT_FILES", "PRESETS", "QWEN3_8B_STEPS", "QWEN3_8B_TRAINING_TOKENS", "ModelLoader",
    "Progress", "ResumableRunner", "RunStats", "TrainJob", "TrainResult", "TrainingInterrupted", "buffer_batches",
    "check_buffer", "clear_outputs", "configure_run", "hook_width", "is_finished_sae", "latest_checkpoint",
    "preset_config", "preset_summary", "round_training_tokens", "run_training", "saelens_settings", "train",
    "with_architecture",
]
