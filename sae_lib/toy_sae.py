"""A tiny SAE trained on the hidden activations of one sparsity level of the toy model.

The SAE demo trains SAELens's own ``StandardTrainingSAE`` (ReLU + L1, its L1 term weighted by each
decoder row's norm: the loss the Theory page shows) with its ``training_forward_pass`` on the hidden activations of one sparsity level. Using
SAELens's piece rather than a hand-written SAE keeps the demo's equations those of the library the app
runs on; its full training runner is not used because it streams activations from a language model.
The toy model itself (the sweep over sparsity levels) is :mod:`sae_lib.toy_model`.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from torch import Tensor

from sae_lib.errors import InputError
from sae_lib.limits import LIMITS
from sae_lib.toy_model import EVAL_BATCH, ToyResult, TrainingProgress, _Reporter, sample_features


@dataclass(frozen=True)
class ToySAEConfig:
    """A tiny SAE trained on the hidden activations ``h = W x`` of one trained sparsity level."""

    level: int = -1
    """Which sparsity level's activations (index into the sweep; -1 = the sparsest)."""
    d_sae: int = 10
    """SAE latents; more than the features, as for real SAEs (surplus latents die or duplicate)."""
    l1_coefficient: float = 0.3
    """Weight of the L1 sparsity penalty against the reconstruction loss. At 0.03 latents blend
    neighbouring pentagon directions (L0 ~3); at 1.0 the penalty starts killing latents."""
    steps: int = 400
    """Adam steps."""
    batch_size: int = 256
    """Samples per step; only those with some feature on carry signal, so this is not tiny."""
    lr: float = 0.02
    """Adam learning rate."""
    seed: int = 0
    """Seed for the SAE's initialisation and its data."""

    @classmethod
    def within_limits(cls) -> "ToySAEConfig":
        """The defaults, each bounded by this server's limits (an operator may lower them below the defaults)."""
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        return cls(**{**fields, "d_sae": min(fields["d_sae"], 4 * LIMITS.max_toy_features),
                      "steps": min(fields["steps"], LIMITS.max_toy_steps)})

    def __post_init__(self) -> None:
        if not 1 <= self.d_sae <= 4 * LIMITS.max_toy_features:
            raise InputError(f"SAE latents must be between 1 and {4 * LIMITS.max_toy_features}, got {self.d_sae}.")
        if not 0.0 <= self.l1_coefficient <= 10.0:
            raise InputError(f"The L1 coefficient must be between 0 and 10, got {self.l1_coefficient:g}.")
        if not 1 <= self.steps <= LIMITS.max_toy_steps:
            raise InputError(f"SAE training steps must be between 1 and {LIMITS.max_toy_steps:,}, got {self.steps}.")
        if not 1 <= self.batch_size <= 65536:
            raise InputError(f"Batch size must be between 1 and 65,536, got {self.batch_size}.")
        if not 0.0 < self.lr < 10.0:
            raise InputError(f"The learning rate must be in (0, 10), got {self.lr:g}.")


class ToySAEResult(NamedTuple):
    """A tiny SAE trained on a toy model's hidden activations, and how its latents match the features.

    Plain tensors rather than the SAELens module, so the result can be cached by value (the module
    holds lambdas and does not pickle)."""

    W_enc: Tensor
    """Encoder weights, shape (hidden, d_sae)."""
    b_enc: Tensor
    """Encoder bias, shape (d_sae,)."""
    W_dec: Tensor
    """Decoder weights, shape (d_sae, hidden): row k is latent k's direction in the hidden space."""
    b_dec: Tensor
    """Decoder bias, subtracted before encoding and added after decoding, shape (hidden,)."""
    cosine: Tensor
    """Cosine similarity of each latent's decoder row with each planted feature direction ``W_i``,
    shape (d_sae, feature)."""
    frequency: Tensor
    """Fraction of held-out samples on which each latent fires, shape (d_sae,); 0 = dead latent."""
    explained_variance: float
    """1 - (reconstruction error / variance of h) on held-out samples."""
    l0: float
    """Mean number of latents firing per held-out sample with at least one feature on."""


def train_toy_sae(
    toy: ToyResult, cfg: ToySAEConfig, progress: Callable[[TrainingProgress], None] | None = None
) -> ToySAEResult:
    """Train a ReLU + L1 SAE (SAELens's ``StandardTrainingSAE``) on ``h = W x`` of one level.

    ``progress`` as for :func:`train_toy`."""
    n_levels = len(toy.feature_probability)
    if not -n_levels <= cfg.level < n_levels:
        raise InputError(f"Sparsity level {cfg.level} does not exist: the sweep has {n_levels} levels.")
    W = toy.W[cfg.level]  # (hidden, feature)
    probability = toy.feature_probability[cfg.level].reshape(1)  # (1,): one instance
    n_hidden, n_features = W.shape
    gen = torch.Generator().manual_seed(cfg.seed)

    def hidden_batch(n: int) -> tuple[Tensor, Tensor]:
        x = sample_features(probability, n, n_features, gen)[0]  # (batch, feature)
        return x, x @ W.T  # (batch, hidden)

    sae_cfg = StandardTrainingSAEConfig(d_in=n_hidden, d_sae=cfg.d_sae, l1_coefficient=cfg.l1_coefficient)
    # SAELens initialises from the global RNG: fork it so seeding here leaves the caller's state alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        sae = StandardTrainingSAE(sae_cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    reporter = _Reporter(cfg.steps, progress)
    for step in range(cfg.steps):
        _, h = hidden_batch(cfg.batch_size)
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=h,
                coefficients={"l1": cfg.l1_coefficient},
                dead_neuron_mask=None,
                n_training_steps=step,
                is_logging_step=False,
            )
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        reporter.step_done(step)
    sae.eval()
    with torch.no_grad():
        x, h = hidden_batch(EVAL_BATCH)
        z = sae.encode(h)  # (batch, d_sae)
        h_hat = sae.decode(z)
        fired = z > 0
        any_on = x.sum(dim=-1) > 0
        resid = (h - h_hat).square().sum()
        var = (h - h.mean(dim=0)).square().sum().clamp_min(1e-12)
        dec = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)  # (d_sae, hidden)
        feat = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)  # (hidden, feature)
        return ToySAEResult(
            W_enc=sae.W_enc.detach().clone(),
            b_enc=sae.b_enc.detach().clone(),
            W_dec=sae.W_dec.detach().clone(),
            b_dec=sae.b_dec.detach().clone(),
            cosine=dec @ feat,
            frequency=fired.float().mean(dim=0),
            explained_variance=float(1 - resid / var),
            l0=float(fired[any_on].sum(dim=-1).float().mean()) if any_on.any() else 0.0,
        )
