"""Latent index data model: what one pass computes (config) and what it holds (statistics, contexts, metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from sae_lib.constants import DENSE_THRESHOLD
from sae_lib.cooccurrence import LatentCounts
from sae_lib.errors import InputError

FORMAT_VERSION = 1
KIND_TOP = "top"
KIND_SAMPLE = "sample"


@dataclass(frozen=True)
class IndexConfig:
    """What one index pass computes and how it streams."""

    n_bins: int = 64
    """Histogram bins per latent; a power of two, so that doubling a latent's range merges bins exactly."""
    top_k: int = 20
    """Top activating contexts kept per latent (one per sequence)."""
    n_lower_examples: int = 5
    """Randomly sampled firing contexts kept per latent, to show typical (lower-range) activations."""
    window: int = 24
    """Tokens shown per context; the max sits at ``window_before`` (or as close as the row allows)."""
    window_before: int = 16
    """Tokens before the max token in a context window (what leads up to it matters most)."""
    dense_threshold: float = DENSE_THRESHOLD
    """A latent firing on more than this share of tokens is 'dense'."""
    batch_size: int = 32
    """Sequences per forward pass."""
    n_logit_tokens: int = 10
    """Top and bottom logit-lens tokens kept per latent."""
    skip_positions: int = 0
    """Leading positions of each row left out of every statistic (attention-sink tokens with huge norms,
    as in Qwen models whose first position dominates every max); they still show inside windows."""
    seed: int = 0
    """Seed of the random keys that pick the lower-range examples."""
    k_tokens: int = 32
    """Tokens counted per latent (heavy-hitter slots) for its statistical label's lift tokens."""
    k_cofire: int = 32
    """Co-firing latents counted per latent (heavy-hitter slots), for its neighbours."""
    cofire_pairs_per_batch: int = 1 << 22
    """At most this many (latent, latent) pairs counted per batch: positions are subsampled past it."""
    compile: bool = False
    """Run the model's forward to the hook through ``torch.compile`` (:mod:`sae_lib.engine_prefix`: a copy
    of the decoder up to the hook's layer; the first batch, and a last partial one, compile). Off: on one H100
    at Qwen3-8B's shape that forward ran 1.37x the eager one at training's batches, but it has not been
    timed inside the index pass (``bench/gpu.py --compile-llm``), whose goal is met without it."""
    tf32: bool = True
    """On CUDA, a float32 SAE's encode runs its matmuls in TF32 (tensor cores; inputs rounded to a 10-bit
    mantissa, so activations differ from IEEE float32 by about 1e-3 relative; ``bench/gpu.py`` reports the
    difference and the firing decisions it flips): several times faster at Qwen3-8B's width. No effect on CPU."""

    def __post_init__(self) -> None:
        if self.n_bins < 2 or self.n_bins & (self.n_bins - 1):
            raise InputError(f"n_bins must be a power of two (2, 4, ..., 64, ...), got {self.n_bins}.")
        if self.top_k < 1:
            raise InputError(f"top_k must be at least 1, got {self.top_k}.")
        if self.n_lower_examples < 0:
            raise InputError(f"n_lower_examples must be 0 or more, got {self.n_lower_examples}.")
        if self.window < 1 or not (0 <= self.window_before < self.window):
            raise InputError(
                f"Need window >= 1 and 0 <= window_before < window, got window={self.window}, "
                f"window_before={self.window_before}."
            )
        if not (0.0 < self.dense_threshold <= 1.0):
            raise InputError(f"dense_threshold must be in (0, 1], got {self.dense_threshold}.")
        if min(self.k_tokens, self.k_cofire, self.cofire_pairs_per_batch) < 1:
            raise InputError("k_tokens, k_cofire and cofire_pairs_per_batch must be at least 1.")
        if self.batch_size < 1 or self.n_logit_tokens < 1 or self.skip_positions < 0:
            raise InputError("batch_size and n_logit_tokens must be at least 1 and skip_positions at least 0.")


class Contexts(NamedTuple):
    """Contexts kept per latent; a slot with ``value == 0`` is empty (the latent fired in fewer sequences)."""

    value: torch.Tensor
    """(d_sae, k) float32: the latent's max activation in that sequence, descending for top contexts."""
    row: torch.Tensor
    """(d_sae, k) int64: row of the token tensor the context comes from, -1 for an empty slot."""
    pos: torch.Tensor
    """(d_sae, k) int64: position of the max within the row."""
    start: torch.Tensor
    """(d_sae, k) int64: position in the row where the window starts."""
    tokens: torch.Tensor
    """(d_sae, k, window) int64: token ids of the window."""
    acts: torch.Tensor
    """(d_sae, k, window) float32: the latent's activation on each window token."""


@dataclass(frozen=True)
class IndexMeta:
    """What an index was built from, and what ties it to its SAE."""

    sae_sha256: str
    """sha256 over the SAE's state dict in float32 (names, shapes, bytes)."""
    build_id: str
    """Random id written into all three files, so files of two different builds are never mixed."""
    d_sae: int
    d_in: int
    hook_name: str
    model_name: str
    n_tokens: int
    """Tokens the statistics cover (rows x (context - skip_positions))."""
    n_sequences: int
    context_size: int
    config: dict[str, Any]
    """The :class:`IndexConfig` as a dict."""
    logit_lens: str
    """How the logit lens was computed (or why it is unavailable)."""
    description: str = ""
    """The dataset the tokens came from, in words."""
    vocab: list[str] | None = None
    """Every token id's text, so the index is readable without a tokenizer."""
    created: str = ""
    format_version: int = FORMAT_VERSION


@dataclass
class LatentIndex:
    """Every latent's statistics; tensors on CPU, indexed by latent along the first dimension."""

    meta: IndexMeta
    count: torch.Tensor
    """(d_sae,) int64: tokens where the latent is > 0."""
    sum_act: torch.Tensor
    """(d_sae,) float64: sum of its positive activations."""
    max_act: torch.Tensor
    """(d_sae,) float32: its max activation (0 when dead)."""
    hist: torch.Tensor
    """(d_sae, n_bins) int64: counts of positive activations in ``n_bins`` uniform bins over ``[0, 2**hist_exp)``."""
    hist_exp: torch.Tensor
    """(d_sae,) int32: log2 of the histogram's upper edge (meaningless for dead latents)."""
    top: Contexts
    """Top-k contexts by activation."""
    samples: Contexts
    """Uniformly sampled firing contexts (value order, not ranked by activation)."""
    logit_top_ids: torch.Tensor
    """(d_sae, n_logit) int64: tokens the latent's direction promotes most, best first."""
    logit_top_vals: torch.Tensor
    """(d_sae, n_logit) float32."""
    logit_bottom_ids: torch.Tensor
    """(d_sae, n_logit) int64: tokens it suppresses most, most negative first."""
    logit_bottom_vals: torch.Tensor
    """(d_sae, n_logit) float32."""
    fingerprint: torch.Tensor = field(repr=False)
    """(d_sae, 3) float32: W_dec row norms, W_enc column norms, b_enc; checks lower-precision loads."""
    counts: LatentCounts | None = field(default=None, repr=False)
    """Tokens each latent fires on and latents firing with it; None for an index built before they existed."""

    @property
    def d_sae(self) -> int:
        return int(self.count.shape[0])

    @property
    def density(self) -> torch.Tensor:
        """(d_sae,) float64: fraction of tokens where the latent fires."""
        return self.count.double() / max(self.meta.n_tokens, 1)

    @property
    def mean_act(self) -> torch.Tensor:
        """(d_sae,) float64: mean of its positive activations (0 when dead)."""
        return self.sum_act / self.count.clamp(min=1).double()

    @property
    def dead(self) -> torch.Tensor:
        """(d_sae,) bool: never fired on the indexed tokens."""
        return self.count == 0

    @property
    def dense(self) -> torch.Tensor:
        """(d_sae,) bool: fires on more than ``dense_threshold`` of tokens."""
        return self.density > self.meta.config["dense_threshold"]

    def token_str(self, token_id: int) -> str:
        vocab = self.meta.vocab
        return vocab[token_id] if vocab is not None and 0 <= token_id < len(vocab) else f"<{token_id}>"
