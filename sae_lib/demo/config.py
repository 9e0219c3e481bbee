"""The embedded demo's settings: one ``DemoConfig`` read by the demo build and the ``demo`` training preset.

Kept apart from ``build.py`` so that training can read the demo SAE's tuned settings without
importing the build (which itself trains through the ``demo`` preset).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from sae_lib.demo.lm import LMConfig

BUILD_VERSION = 6
"""Bump when the build's code changes what it produces, so cached builds are redone.
3: the SAE trains through the ``demo`` training preset, ships ``evals.json``, records no local paths.
5: the SAE's training activations come from the generation engine's Hugging Face forward.
6: ``evals.json``'s variance and sparsity figures are measured on the CE losses' rows, and its token
count is of the tokens measured (special tokens out)."""

DEMO_MODEL_NAME = "latent-lab/demo"
"""What the demo SAE's config names as its model: a label, not a path (the model ships next to it)."""
DEMO_DATASET = "latent-lab/demo-corpus"
"""The demo SAE's ``dataset_path``: tells training to read the generated story corpus (never the Hub)."""


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    """Seeds the corpus, the LM and the SAE."""
    n_train: int = 6000
    """Training stories (about 50 tokens each)."""
    n_heldout: int = 600
    """Held-out stories: the LM's held-out loss, the SAE's evals and the latent index use these."""
    vocab_size: int = 2048
    """BPE vocabulary cap (the corpus is small, so the trained vocabulary can be smaller)."""
    lm: LMConfig = field(default_factory=LMConfig)
    hook_layer: int = 2
    """The SAE reads ``blocks.{hook_layer}.hook_mlp_out``, as the flagship reads block 28's MLP output."""
    d_sae: int = 1024
    """SAE width: 8x the residual width."""
    sae_training_tokens: int = 586 * 1024
    """586 steps of ``sae_batch_tokens``: what the build trained before it went through the preset
    (600,000 tokens, which SAELens rounds up to whole steps)."""
    sae_batch_tokens: int = 1024
    sae_lr: float = 2e-3
    sae_l0_coefficient: float = 10.0
    """Tuned on this corpus: L0 about 15 of 1024 latents, 1.2% of variance unexplained."""
    sae_context: int = 128
    index_top_k: int = 20
    """Top contexts kept per latent in the latent index."""

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.hook_layer}.hook_mlp_out"

    def digest(self) -> str:
        blob = json.dumps({"v": BUILD_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


SMALL_DEMO = DemoConfig(
    n_train=800,
    n_heldout=100,
    lm=LMConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, intermediate_size=128, context=64, batch_size=16, steps=60),
    hook_layer=1,
    d_sae=256,
    sae_training_tokens=40 * 1024,
    sae_context=64,
    index_top_k=5,
)
"""A build that takes seconds: for tests of the pipeline itself, not of what it learns."""
