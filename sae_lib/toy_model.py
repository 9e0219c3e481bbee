"""Anthropic's "Toy Models of Superposition", batched over sparsity levels.

The setup: ``n_features`` features, each uniform in [0, 1] with probability ``p`` and 0 otherwise, are
squeezed into ``n_hidden`` neurons by ``h = W x`` and read back by ``x_hat = ReLU(W^T h + b)``; the loss
is the squared error weighted by each feature's importance ``decay**i``. Every sparsity level (and every
random restart of it) is one *instance* of a single batched model: ``W`` has shape
``(instance, hidden, feature)``, so the whole sweep trains in one loop of small batched matmuls.

Chosen defaults and why they suffice (checked over several seeds; the tests pin seed 0):

- ``steps=1500, batch_size=128, lr=0.04`` with a cosine decay to 0. The toy has 15 parameters per
  instance, so per-step Python overhead, not arithmetic, sets the cost; a small batch with many steps
  and a high Adam rate converges fastest per second. 1500 steps reach the paper's solutions (dense: 2
  orthogonal features; sparse: a pentagon with negative biases; 1000 steps leave the dropped dense
  features at norms up to 0.2 on some seeds). The sweep took 1.9 s on one core of a quiet machine
  and 3-4 CPU-seconds on the shared, oversubscribed 2-core dev machine (``bench/toy_model.py``).
- ``restarts=4``: each level is trained from 4 random initialisations (extra instances, nearly free
  when batched) and the one with the lowest loss on a held-out batch is kept. Without it, some seeds
  get stuck in local minima at intermediate sparsity (e.g. a square of 4 features next to a level
  that found 5), and the count of represented features then wobbles instead of growing with sparsity.
- A feature counts as *represented* when its column norm ``||W_i||`` exceeds 0.5: trained norms sit
  near 0 or near 1 (slightly above 1 in the sparse regime, where the negative bias eats part of it).

The tiny SAE trained on one level's hidden activations is :mod:`sae_lib.toy_sae`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from sae_lib.errors import InputError
from sae_lib.limits import LIMITS

REPRESENTED_NORM = 0.5
"""A feature with column norm ``||W_i||`` above this counts as represented."""
EVAL_BATCH = 4096
"""Held-out samples per instance used to pick the best restart of each level."""
PROGRESS_REPORTS = 50
"""How many times a training run reports its progress (evenly spread over its steps)."""


class TrainingProgress(NamedTuple):
    """Where a training run is, and how long it is expected to take, measured on the steps done so far."""

    step: int
    """Steps done (1 to ``total``)."""
    total: int
    """Steps the run takes."""
    elapsed_s: float
    """Seconds since the first step started."""

    @property
    def expected_total_s(self) -> float:
        """The run's expected duration: the measured time per step so far, times all the steps."""
        return self.elapsed_s / self.step * self.total

    @property
    def remaining_s(self) -> float:
        return self.expected_total_s - self.elapsed_s


class _Reporter:
    """Calls ``progress`` about ``PROGRESS_REPORTS`` times over ``total`` steps (and after the last)."""

    def __init__(self, total: int, progress: Callable[[TrainingProgress], None] | None) -> None:
        self.total, self.progress = total, progress
        self.every = max(1, total // PROGRESS_REPORTS)
        self.start = time.perf_counter()

    def step_done(self, step: int) -> None:
        done = step + 1
        if self.progress is not None and (done % self.every == 0 or done == self.total):
            self.progress(TrainingProgress(done, self.total, time.perf_counter() - self.start))


@dataclass(frozen=True)
class ToyConfig:
    """One sweep of toy models over sparsity levels. Frozen and hashable so results cache by it."""

    n_features: int = 5
    """Number of input features (the paper's n)."""
    n_hidden: int = 2
    """Number of hidden neurons (the paper's m); fewer than ``n_features`` or nothing is squeezed."""
    importance_decay: float = 0.9
    """Feature i has importance ``importance_decay ** i``: feature 0 matters most."""
    max_probability: float = 1.0
    """Probability that a feature is non-zero at the densest level (1 = always on)."""
    min_probability: float = 0.05
    """Probability that a feature is non-zero at the sparsest level."""
    n_levels: int = 10
    """Sparsity levels, spaced geometrically from ``max_probability`` down to ``min_probability``."""
    steps: int = 1500
    """Adam steps (cosine-decayed learning rate)."""
    batch_size: int = 128
    """Samples per step and instance."""
    lr: float = 0.04
    """Peak Adam learning rate."""
    restarts: int = 4
    """Random initialisations per level; the one with the lowest held-out loss is kept."""
    seed: int = 0
    """Seed for the initialisation and the data (a private generator: global RNG state is untouched)."""

    @classmethod
    def within_limits(cls) -> "ToyConfig":
        """The defaults, each bounded by this server's limits (an operator may lower them below the defaults)."""
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        n_features = min(fields["n_features"], LIMITS.max_toy_features)
        return cls(**{**fields, "n_features": n_features, "n_hidden": min(fields["n_hidden"], n_features - 1),
                      "n_levels": min(fields["n_levels"], LIMITS.max_toy_levels),
                      "steps": min(fields["steps"], LIMITS.max_toy_steps)})

    def __post_init__(self) -> None:
        if not 2 <= self.n_features <= LIMITS.max_toy_features:
            raise InputError(
                f"The toy model needs between 2 and {LIMITS.max_toy_features} features, got {self.n_features}."
            )
        if not 1 <= self.n_hidden < self.n_features:
            raise InputError(
                f"Hidden neurons must be at least 1 and fewer than the features ({self.n_features}), got "
                f"{self.n_hidden}: with as many neurons as features every feature gets its own and there "
                "is no superposition to see. Lower the neurons or add features."
            )
        if not 0.0 < self.importance_decay <= 1.0:
            raise InputError(f"Importance decay must be in (0, 1], got {self.importance_decay:g}.")
        if not 0.0 < self.min_probability <= self.max_probability <= 1.0:
            raise InputError(
                "Feature probabilities must satisfy 0 < sparsest <= densest <= 1, got "
                f"sparsest {self.min_probability:g} and densest {self.max_probability:g}: "
                "put the smaller probability on the sparse end."
            )
        if not 1 <= self.n_levels <= LIMITS.max_toy_levels:
            raise InputError(f"Sparsity levels must be between 1 and {LIMITS.max_toy_levels}, got {self.n_levels}.")
        if self.n_levels > 1 and self.min_probability == self.max_probability:
            raise InputError("The sparsity range is empty: make the sparsest probability smaller than the densest.")
        if not 1 <= self.steps <= LIMITS.max_toy_steps:
            raise InputError(f"Training steps must be between 1 and {LIMITS.max_toy_steps:,}, got {self.steps}.")
        if not 1 <= self.batch_size <= 65536:
            raise InputError(f"Batch size must be between 1 and 65,536, got {self.batch_size}.")
        if not 1 <= self.restarts <= 16:
            raise InputError(f"Restarts must be between 1 and 16, got {self.restarts}.")
        if not 0.0 < self.lr < 10.0:
            raise InputError(f"The learning rate must be in (0, 10), got {self.lr:g}.")

    def feature_probability(self) -> Tensor:
        """Probability of each feature being non-zero per level, densest first. Shape (level,)."""
        if self.n_levels == 1:
            return torch.tensor([self.min_probability])
        t = torch.linspace(0, 1, self.n_levels)
        return self.max_probability * (self.min_probability / self.max_probability) ** t

    def importance(self) -> Tensor:
        """Importance of each feature. Shape (feature,)."""
        return self.importance_decay ** torch.arange(self.n_features, dtype=torch.float32)


class ToyModel(nn.Module):
    """``x_hat = ReLU(W^T W x + b)`` for many independent instances at once."""

    def __init__(self, n_instances: int, n_features: int, n_hidden: int, generator: torch.Generator):
        super().__init__()
        # Xavier-normal per instance (torch's own xavier would count the instance axis in the fan).
        std = math.sqrt(2.0 / (n_features + n_hidden))
        self.W = nn.Parameter(torch.randn(n_instances, n_hidden, n_features, generator=generator) * std)
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))

    # Written as a short loop over hidden neurons of broadcast multiply-adds rather than torch.bmm:
    # CPU bmm always splits its instance loop across threads, and for matrices this small the thread
    # hand-off costs 10-100x the arithmetic (a 1500-step sweep took 70 s instead of 2 s on a busy
    # 2-core machine). These elementwise ops stay below torch's parallel grain size at the defaults.
    def hidden(self, x: Tensor) -> Tensor:
        """(instance, batch, feature) -> (instance, batch, hidden)."""
        return torch.cat([(x * self.W[:, None, k, :]).sum(-1, keepdim=True) for k in range(self.W.shape[1])], -1)

    def forward(self, x: Tensor) -> Tensor:
        """(instance, batch, feature) -> reconstruction ``ReLU(W^T W x + b)``, same shape."""
        out = self.b[:, None, :]  # (instance, 1, feature)
        for k in range(self.W.shape[1]):
            w_k = self.W[:, None, k, :]  # (instance, 1, feature): neuron k's row
            out = out + (x * w_k).sum(-1, keepdim=True) * w_k
        return torch.relu(out)


def sample_features(probability: Tensor, batch: int, n_features: int, generator: torch.Generator) -> Tensor:
    """Sparse feature vectors: uniform in [0, 1] with ``probability[i]`` per instance, else 0.

    Returns shape (instance, batch, feature).
    """
    shape = (len(probability), batch, n_features)
    on = torch.rand(shape, generator=generator) < probability[:, None, None]
    return torch.where(on, torch.rand(shape, generator=generator), 0.0)


def weighted_loss(x: Tensor, x_hat: Tensor, importance: Tensor) -> Tensor:
    """Importance-weighted squared error per instance, averaged over batch and features. Shape (instance,)."""
    return ((x - x_hat).square() * importance).mean(dim=(1, 2))


class ToyResult(NamedTuple):
    """A trained sweep: the best restart of each sparsity level."""

    W: Tensor
    """Embedding of the features, shape (level, hidden, feature); column i is feature i's direction."""
    b: Tensor
    """Output bias, shape (level, feature)."""
    feature_probability: Tensor
    """Probability of a feature being non-zero, shape (level,), densest first."""
    importance: Tensor
    """Importance of each feature, shape (feature,)."""
    loss: Tensor
    """Held-out importance-weighted loss of the kept restart, shape (level,)."""
    config: ToyConfig
    """What was trained."""


def train_toy(cfg: ToyConfig, progress: Callable[[TrainingProgress], None] | None = None) -> ToyResult:
    """Train every sparsity level (times ``cfg.restarts``) as one batched model; keep the best restart.

    ``progress`` is called now and then with the steps done and the measured expected duration; it may
    raise to stop the run (a page that is stopped does).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    levels = cfg.feature_probability()
    probability = levels.repeat_interleave(cfg.restarts)  # (level * restart,)
    importance = cfg.importance()
    model = ToyModel(len(probability), cfg.n_features, cfg.n_hidden, gen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    reporter = _Reporter(cfg.steps, progress)
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        x = sample_features(probability, cfg.batch_size, cfg.n_features, gen)
        # Summed over instances: each instance's gradient is its own loss's gradient.
        loss = weighted_loss(x, model(x), importance).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        reporter.step_done(step)
    with torch.no_grad():
        x = sample_features(probability, EVAL_BATCH, cfg.n_features, gen)
        held_out = weighted_loss(x, model(x), importance).view(cfg.n_levels, cfg.restarts)
        best = held_out.argmin(dim=1) + torch.arange(cfg.n_levels) * cfg.restarts  # (level,)
        return ToyResult(
            W=model.W.detach()[best].clone(),
            b=model.b.detach()[best].clone(),
            feature_probability=levels,
            importance=importance,
            loss=held_out.min(dim=1).values,
            config=cfg,
        )


# --- what the paper measures -----------------------------------------------------------------


class ToyAnalysis(NamedTuple):
    """The paper's measures of a trained sweep."""

    norms: Tensor
    """``||W_i||`` per level and feature, shape (level, feature): near 1 = represented, near 0 = dropped."""
    represented: Tensor
    """``norms > REPRESENTED_NORM``, bool, shape (level, feature)."""
    n_represented: Tensor
    """Represented features per level, shape (level,)."""
    superposition: Tensor
    """``sum_{j != i} (W_i/||W_i|| . W_j)^2`` per level and feature, shape (level, feature):
    0 when feature i has a direction to itself, larger the more others interfere with it."""
    feature_dimensionality: Tensor
    """The paper's ``D_i = ||W_i||^2 / sum_j (W_i/||W_i|| . W_j)^2``, shape (level, feature): the share
    of a hidden dimension feature i gets (1 = a dimension of its own, 0 = not represented)."""
    dimensions_per_feature: Tensor
    """``n_hidden / ||W||_F^2`` per level, shape (level,): 1 for no superposition, 2/5 for a pentagon of
    unit-length features. It depends on the lengths: trained features are often a little longer than 1
    (about 1.13 in the sparse regime here), which lowers it (0.31 for that pentagon)."""
    mean_dimensionality: Tensor
    """Mean ``D_i`` over the represented features per level, shape (level,): the share of a dimension a
    represented feature gets, independent of lengths (2/5 for any regular pentagon; 0 when none is)."""


def gram(W: Tensor) -> Tensor:
    """``W^T W``: how much writing feature j interferes with reading feature i. (..., feature, feature)."""
    return W.transpose(-1, -2) @ W


def analyse(W: Tensor) -> ToyAnalysis:
    """The paper's measures for embeddings ``W`` of shape (level, hidden, feature)."""
    norms = W.norm(dim=-2)  # (level, feature)
    # Zero columns have no direction: divide by a floor so they contribute 0, not NaN.
    unit = W / norms.clamp_min(1e-8)[..., None, :]
    overlap = (unit.transpose(-1, -2) @ W).square()  # (level, i, j) = (W_i_hat . W_j)^2
    total = overlap.sum(dim=-1)  # (level, feature), includes j = i which is ||W_i||^2
    superposition = total - overlap.diagonal(dim1=-2, dim2=-1)
    represented = norms > REPRESENTED_NORM
    dimensionality = norms.square() / total.clamp_min(1e-12)
    return ToyAnalysis(
        norms=norms,
        represented=represented,
        n_represented=represented.sum(dim=-1),
        superposition=superposition,
        feature_dimensionality=dimensionality,
        dimensions_per_feature=W.shape[-2] / W.square().sum(dim=(-2, -1)).clamp_min(1e-12),
        mean_dimensionality=(dimensionality * represented).sum(dim=-1) / represented.sum(dim=-1).clamp_min(1),
    )


def neighbour_angles(directions: Tensor) -> Tensor:
    """Angles in degrees between angularly adjacent 2-D directions, going once round the circle.

    ``directions`` has shape (2, k); returns shape (k,), summing to 360. A regular pentagon gives 72s.
    """
    if directions.shape[0] != 2:
        raise ValueError(f"neighbour_angles needs 2-D directions, got {directions.shape[0]}-D.")
    theta = torch.atan2(directions[1], directions[0]).sort().values  # (k,)
    gaps = torch.diff(theta, append=theta[:1] + 2 * math.pi)
    return torch.rad2deg(gaps)
