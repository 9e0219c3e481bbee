"""Latent index: every latent's statistics from one streaming pass, saved next to the SAE.

The write-up explores latents one at a time (``show_activation_histogram``: 100 batches per latent).
Here one pass over a corpus, through the model up to the SAE's hook and the SAE encoder, fills for
*all* latents at once: firing count / density, max and mean positive activation, a histogram of
positive activations, the top-k activating contexts (with per-token activations for highlighting),
a few randomly sampled firing contexts (typical, lower-range activations), and the logit lens. The
memory held during the pass is ``d_sae x (n_bins + (top_k + n_lower_examples) x window)``,
independent of how many tokens stream through.

Files (names in :mod:`sae_lib.constants`) live inside the SAE folder: per-latent tensors in
safetensors, contexts in a parquet table, and a JSON with the metadata that ties the index to the
SAE's weights (a sha256 of them, plus a tolerance fingerprint for lower-precision loads).

Choices worth knowing:

* **Contexts are per sequence**: a latent's top-k contexts are the k sequences (rows of the token
  tensor) with its largest activation, each shown as a window around that sequence's max, so the
  k contexts are k different passages rather than neighbouring tokens of one passage.
* **Histograms have per-latent power-of-two ranges**: latent i's ``n_bins`` uniform bins cover
  ``[0, 2**hist_exp[i])``, the smallest power of two above its max. When a larger value arrives the
  range doubles and adjacent bins merge pairwise, which is exact, so the counts equal a histogram
  of all positive activations computed after the fact on the final edges.
* **Lower-range examples are a uniform random sample** of the sequences where the latent fires
  (random keys, kept by top-k, seeded): activations are skewed, so these show typical firing rather
  than the extremes.
* **Logit lens** is ``W_dec[i] @ W_U`` through the final norm's elementwise weight (and centering for
  LayerNorm); the norm's division by the residual's scale is left out because it is one positive
  scalar per position and does not change which tokens rank top or bottom. Models loaded with
  TransformerLens's ``fold_ln`` have that weight folded into ``W_U`` already.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sae_lens import SAE
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name
from transformer_lens import HookedTransformer

from sae_lib.constants import (
    INDEX_CONTEXTS_FILENAME,
    INDEX_COUNTS_FILENAME,
    INDEX_META_FILENAME,
    INDEX_STATS_FILENAME,
)
from sae_lib.cooccurrence import COUNT_FIELDS, CountsAccumulator, LatentCounts
from sae_lib.errors import CompatibilityError, InputError
from sae_lib.model_queue import queue_for
from sae_lib.limits import LIMITS, Limits, check_prompt

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
    dense_threshold: float = 0.1
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


# --- the pass --------------------------------------------------------------------------------


class _ContextBuffer:
    """The ``k`` best-scoring sequences per latent over a stream, merged per batch with ``torch.topk``."""

    def __init__(self, d_sae: int, k: int, window: int, device: torch.device):
        self.k, self.window = k, window
        self.score = torch.full((d_sae, k), -math.inf, device=device)
        self.value = torch.zeros(d_sae, k, device=device)
        self.row = torch.full((d_sae, k), -1, dtype=torch.long, device=device)
        self.pos = torch.zeros(d_sae, k, dtype=torch.long, device=device)
        self.start = torch.zeros(d_sae, k, dtype=torch.long, device=device)
        self.acts = torch.zeros(d_sae, k, window, device=device)

    def update(
        self,
        score: torch.Tensor,  # (B, d_sae): -inf where the latent does not fire in that row
        value: torch.Tensor,  # (B, d_sae): the row's max activation
        arg: torch.Tensor,  # (B, d_sae): position of that max in the row
        feats: torch.Tensor,  # (B, ctx, d_sae): all activations, for the windows
        row0: int,
        window_before: int,
    ) -> None:
        if self.k == 0:
            return
        B, ctx, _ = feats.shape
        c = min(self.k, B)
        cand_score, cand_row = score.T.topk(c, dim=1)  # (d_sae, c)
        merged = torch.cat([self.score, cand_score], dim=1)  # (d_sae, k + c)
        new_score, idx = merged.topk(self.k, dim=1)  # (d_sae, k)
        from_batch = (idx >= self.k) & (new_score > -math.inf)
        changed = from_batch.any(dim=1).nonzero().squeeze(1)
        if changed.numel() == 0:
            return
        # Reorder only the latents whose buffer changed; slots from the batch are overwritten below.
        keep = idx[changed].clamp(max=self.k - 1)  # (n_changed, k)
        for name in ("value", "row", "pos", "start"):
            t = getattr(self, name)
            t[changed] = t[changed].gather(1, keep)
        self.acts[changed] = self.acts[changed].gather(1, keep[:, :, None].expand(-1, -1, self.window))
        self.score[changed] = new_score[changed]

        lat, slot = from_batch.nonzero(as_tuple=True)  # (n_new,)
        b = cand_row[lat, idx[lat, slot] - self.k]  # (n_new,) row within the batch
        p = arg[b, lat]
        start = (p - window_before).clamp(min=0).clamp(max=max(ctx - self.window, 0))
        offs = torch.arange(self.window, device=feats.device)
        win_pos = (start[:, None] + offs).clamp(max=ctx - 1)  # (n_new, window)
        win = feats[b[:, None], win_pos, lat[:, None]]  # (n_new, window)
        if ctx < self.window:  # rows shorter than the window: pad with zeros, not repeats
            win = win.masked_fill(start[:, None] + offs >= ctx, 0.0)
        self.value[lat, slot] = value[b, lat]
        self.row[lat, slot] = b + row0
        self.pos[lat, slot] = p
        self.start[lat, slot] = start
        self.acts[lat, slot] = win

    def contexts(self, tokens: torch.Tensor) -> Contexts:
        """Fill token windows from the (n_seq, ctx) token tensor and move everything to CPU."""
        value, row = self.value.cpu(), self.row.cpu()
        pos, start, acts = self.pos.cpu(), self.start.cpu(), self.acts.cpu()
        ctx = tokens.shape[1]
        win_pos = start[..., None] + torch.arange(self.window)  # (d_sae, k, window)
        toks = tokens.cpu()[row.clamp(min=0)[..., None], win_pos.clamp(max=ctx - 1)]
        empty = (row < 0)[..., None] | (win_pos >= ctx)
        toks = toks.masked_fill(empty, -1)
        value = value.masked_fill(row < 0, 0.0)
        return Contexts(value, row, pos, start, toks.long(), acts)


class _Accumulator:
    """Running per-latent statistics; everything is O(d_sae x (n_bins + k x window))."""

    def __init__(self, d_sae: int, cfg: IndexConfig, device: torch.device):
        self.cfg, self.d_sae, self.device = cfg, d_sae, device
        self.log2_bins = int(math.log2(cfg.n_bins))
        self.n_tokens = 0
        # float64 sums: billions of small positive terms lose mass in float32 (MPS has no float64).
        sum_dtype = torch.float32 if device.type == "mps" else torch.float64
        self.count = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.sum_act = torch.zeros(d_sae, dtype=sum_dtype, device=device)
        self.max_act = torch.zeros(d_sae, device=device)
        self.hist = torch.zeros(d_sae, cfg.n_bins, dtype=torch.long, device=device)
        # Not fired yet: a very low exponent, so the first firing sets the range.
        self.hist_exp = torch.full((d_sae,), -(2**20), dtype=torch.int32, device=device)
        self.top = _ContextBuffer(d_sae, cfg.top_k, cfg.window, device)
        self.samples = _ContextBuffer(d_sae, cfg.n_lower_examples, cfg.window, device)
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def _merge_bins(self, shift: torch.Tensor) -> None:
        """Double latent i's histogram range ``shift[i]`` times: bin j moves to ``j >> shift``."""
        target = torch.arange(self.cfg.n_bins, device=self.device)[None, :] >> shift[:, None].long()
        self.hist = torch.zeros_like(self.hist).scatter_add_(1, target, self.hist)

    def update(self, feats: torch.Tensor, row0: int) -> None:
        """Fold in one batch of SAE activations, ``feats`` (B, ctx, d_sae), whose first row is ``row0``."""
        cfg, D = self.cfg, self.d_sae
        feats = feats.float()
        stat = feats[:, cfg.skip_positions :]  # (B, P, d_sae): the positions that count
        B, P, _ = stat.shape
        self.n_tokens += B * P
        # Everything below works on the firing entries only: SAE codes are sparse.
        tok, lat = (stat.reshape(B * P, D) > 0).nonzero(as_tuple=True)  # (nnz,)
        val = stat.reshape(B * P, D)[tok, lat]  # (nnz,)
        self.count += torch.bincount(lat, minlength=D)
        self.sum_act.index_add_(0, lat, val.to(self.sum_act.dtype))
        batch_max = torch.zeros(D, device=self.device).scatter_reduce_(0, lat, val, "amax")
        self.max_act = torch.maximum(self.max_act, batch_max)

        # Histogram range: the smallest power of two strictly above the max (frexp is exact).
        new_exp = torch.where(batch_max > 0, torch.maximum(self.hist_exp, torch.frexp(batch_max).exponent), self.hist_exp)
        shift = (new_exp - self.hist_exp).clamp(max=self.log2_bins)
        if bool((shift > 0).any()):
            self._merge_bins(shift)
        self.hist_exp = new_exp
        # x * n_bins / 2**e is a product by a power of two: exact, so bins match edges computed afterwards.
        scale = torch.ldexp(torch.full_like(val, float(cfg.n_bins)), -new_exp[lat])
        bins = (val * scale).floor().long().clamp(max=cfg.n_bins - 1)
        self.hist.view(-1).index_add_(0, lat * cfg.n_bins + bins, torch.ones_like(bins))

        # Per (row, latent): max activation and the first position reaching it.
        row, pos = tok // P, tok % P
        key = row * D + lat
        seq_max = torch.zeros(B * D, device=self.device).scatter_reduce_(0, key, val, "amax")
        at_max = val == seq_max[key]
        seq_arg = torch.full((B * D,), P, dtype=torch.long, device=self.device)
        seq_arg.scatter_reduce_(0, key[at_max], pos[at_max], "amin")
        seq_max, seq_arg = seq_max.view(B, D), seq_arg.view(B, D) + cfg.skip_positions
        fires = seq_max > 0
        neg_inf = torch.tensor(-math.inf, device=self.device)
        self.top.update(torch.where(fires, seq_max, neg_inf), seq_max, seq_arg, feats, row0, cfg.window_before)
        if cfg.n_lower_examples:
            keys = torch.rand(B, D, generator=self.gen, device=self.device)
            self.samples.update(torch.where(fires, keys, neg_inf), seq_max, seq_arg, feats, row0, cfg.window_before)


def hook_activations(model: HookedTransformer, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
    """Activations at ``hook_name`` for ``tokens`` (B, ctx), running the model only up to that hook's layer."""
    stop = extract_stop_at_layer_from_tlens_hook_name(hook_name)
    _, cache = model.run_with_cache(
        tokens, stop_at_layer=stop, names_filter=[hook_name], return_cache_object=False
    )
    return cache[hook_name]


@torch.no_grad()
def encode_tokens(model: HookedTransformer, sae: SAE, tokens: torch.Tensor) -> torch.Tensor:
    """SAE activations (B, ctx, d_sae) for tokens (B, ctx): model to the hook, then ``sae.encode``."""
    acts = hook_activations(model, tokens.to(_device(model)), sae.cfg.metadata.hook_name)
    return sae.encode(acts.to(sae.device))


ProgressFn = Callable[[int, int, float], None]
"""Called after each batch with (tokens done, tokens total, seconds elapsed)."""


@torch.no_grad()
def build_index(
    model: HookedTransformer,
    sae: SAE,
    tokens: torch.Tensor,
    cfg: IndexConfig,
    progress: ProgressFn | None = None,
    description: str = "",
) -> LatentIndex:
    """One streaming pass over ``tokens`` (n_seq, ctx) -> every latent's statistics and contexts."""
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise InputError(f"Expected a (n_sequences, context) token tensor with at least one row, got shape {tuple(tokens.shape)}.")
    n_seq, ctx = tokens.shape
    if cfg.skip_positions >= ctx:
        raise InputError(f"skip_positions ({cfg.skip_positions}) leaves nothing of a {ctx}-token context.")
    device = sae.device
    acc = _Accumulator(int(sae.cfg.d_sae), cfg, device)
    counts = CountsAccumulator(
        int(sae.cfg.d_sae), int(model.cfg.d_vocab), cfg.k_tokens, cfg.k_cofire, cfg.cofire_pairs_per_batch,
        cfg.seed, device,
    )  # fmt: skip
    total, t0 = n_seq * ctx, time.perf_counter()
    for row0 in range(0, n_seq, cfg.batch_size):
        batch = tokens[row0 : row0 + cfg.batch_size]
        feats = encode_tokens(model, sae, batch)
        acc.update(feats, row0)
        counts.update(batch[:, cfg.skip_positions :], feats[:, cfg.skip_positions :].float())
        if progress is not None:
            progress(min(row0 + cfg.batch_size, n_seq) * ctx, total, time.perf_counter() - t0)
    lens = logit_lens(model, sae, cfg.n_logit_tokens)
    meta = IndexMeta(
        sae_sha256=sae_hash(sae),
        build_id=uuid.uuid4().hex,
        d_sae=int(sae.cfg.d_sae),
        d_in=int(sae.cfg.d_in),
        hook_name=sae.cfg.metadata.hook_name,
        model_name=str(model.cfg.model_name),
        n_tokens=acc.n_tokens,
        n_sequences=int(n_seq),
        context_size=int(ctx),
        config=dataclasses.asdict(cfg),
        logit_lens=lens.how,
        description=description,
        vocab=vocab_strings(model),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return LatentIndex(
        meta=meta,
        count=acc.count.cpu(),
        sum_act=acc.sum_act.double().cpu(),
        max_act=acc.max_act.cpu(),
        hist=acc.hist.cpu(),
        hist_exp=acc.hist_exp.cpu(),
        top=acc.top.contexts(tokens),
        samples=acc.samples.contexts(tokens),
        logit_top_ids=lens.top_ids,
        logit_top_vals=lens.top_vals,
        logit_bottom_ids=lens.bottom_ids,
        logit_bottom_vals=lens.bottom_vals,
        fingerprint=sae_fingerprint(sae),
        counts=counts.finish(),
    )


def _device(model: HookedTransformer) -> torch.device:
    return next(model.parameters()).device


# --- logit lens ------------------------------------------------------------------------------


class LogitLens(NamedTuple):
    top_ids: torch.Tensor
    """(d_sae, n) int64: most promoted tokens, best first."""
    top_vals: torch.Tensor
    """(d_sae, n) float32."""
    bottom_ids: torch.Tensor
    """(d_sae, n) int64: most suppressed tokens, most negative first."""
    bottom_vals: torch.Tensor
    """(d_sae, n) float32."""
    how: str
    """What was computed, in words (stored in the index metadata)."""


def decoder_in_residual(model: HookedTransformer, sae: SAE) -> tuple[torch.Tensor, str] | None:
    """W_dec mapped into the residual stream (d_sae, d_model), or None when the hook has no such map."""
    W_dec = sae.W_dec.detach().float()  # (d_sae, d_in)
    hook = sae.cfg.metadata.hook_name
    layer = extract_stop_at_layer_from_tlens_hook_name(hook)
    layer = None if layer is None else layer - 1
    if hook.endswith("hook_z") and layer is not None:
        W_O = model.blocks[layer].attn.W_O.detach().float().to(W_dec.device)  # (n_heads, d_head, d_model)
        return torch.einsum("sd,dm->sm", W_dec, W_O.reshape(-1, W_O.shape[-1])), "W_dec @ W_O"
    if hook.endswith("mlp.hook_post") and layer is not None:
        W_out = model.blocks[layer].mlp.W_out.detach().float().to(W_dec.device)  # (d_mlp, d_model)
        return W_dec @ W_out, "W_dec @ W_out"
    if W_dec.shape[1] == model.cfg.d_model:
        return W_dec, "W_dec"
    return None


@torch.no_grad()
def logit_lens(model: HookedTransformer, sae: SAE, n: int, chunk: int = 2048) -> LogitLens:
    """Top/bottom ``n`` tokens of each latent's direction through the final norm's weight and W_U."""
    d_sae = int(sae.cfg.d_sae)
    mapped = decoder_in_residual(model, sae)
    if mapped is None:
        empty_i = torch.zeros(d_sae, 0, dtype=torch.long)
        empty_f = torch.zeros(d_sae, 0)
        why = f"unavailable: no map from {sae.cfg.metadata.hook_name} (d_in {sae.cfg.d_in}) to the residual stream"
        return LogitLens(empty_i, empty_f, empty_i, empty_f, why)
    dirs, how = mapped  # (d_sae, d_model)
    W_U = model.W_U.detach().float().to(dirs.device)  # (d_model, d_vocab)
    norm = str(model.cfg.normalization_type)
    if norm.startswith("LN"):
        dirs = dirs - dirs.mean(dim=1, keepdim=True)  # LayerNorm centers the residual: a linear map
        how += " centered"
    w = getattr(model.ln_final, "w", None) if hasattr(model, "ln_final") else None
    if isinstance(w, torch.Tensor):
        dirs = dirs * w.detach().float().to(dirs.device)
        how += " * ln_final.w"
    how += " @ W_U (final norm's per-position scale omitted: it does not change the ranking)"
    n = min(n, W_U.shape[1])
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    for i in range(0, d_sae, chunk):
        logits = dirs[i : i + chunk] @ W_U  # (chunk, d_vocab)
        tv, ti = logits.topk(n, dim=1)
        bv, bi = logits.topk(n, dim=1, largest=False)
        for acc, t in zip(parts, (ti, tv, bi, bv)):
            acc.append(t.cpu())
    top_ids, top_vals, bottom_ids, bottom_vals = (torch.cat(p) for p in parts)
    return LogitLens(top_ids.long(), top_vals, bottom_ids.long(), bottom_vals, how)


def vocab_strings(model: HookedTransformer) -> list[str] | None:
    """Each token id's text (ids past the tokenizer's vocabulary, padding rows of W_U, become ``<id>``)."""
    tok = model.tokenizer
    if tok is None:
        return None
    n_tok = len(tok)
    texts = tok.batch_decode([[i] for i in range(min(n_tok, model.cfg.d_vocab))])
    return texts + [f"<{i}>" for i in range(n_tok, model.cfg.d_vocab)]


# --- what ties an index to its SAE -------------------------------------------------------------


def sae_hash(sae: SAE) -> str:
    """sha256 over the SAE's parameters and buffers as float32 (names, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(sae.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def sae_fingerprint(sae: SAE) -> torch.Tensor:
    """(d_sae, 3) float32: W_dec row norms, W_enc column norms, b_enc. Close for the same SAE in any dtype."""
    W_dec = sae.W_dec.detach().float().cpu()
    W_enc = sae.W_enc.detach().float().cpu()
    b_enc = sae.b_enc.detach().float().cpu()
    return torch.stack([W_dec.norm(dim=1), W_enc.norm(dim=0), b_enc], dim=1)


def check_index_matches_sae(meta: IndexMeta, fingerprint: torch.Tensor, sae: SAE) -> None:
    """Raise :class:`CompatibilityError` unless the index was built for this SAE."""
    rebuild = "Rebuild it for this SAE with scripts/build_latent_index.py (or delete the index files)."
    hook = sae.cfg.metadata.hook_name
    if meta.d_sae != int(sae.cfg.d_sae) or meta.d_in != int(sae.cfg.d_in) or meta.hook_name != hook:
        raise CompatibilityError(
            f"The latent index was built for an SAE with d_sae {meta.d_sae}, d_in {meta.d_in} on {meta.hook_name}, "
            f"but the loaded SAE has d_sae {sae.cfg.d_sae}, d_in {sae.cfg.d_in} on {hook}. {rebuild}"
        )
    if sae_hash(sae) == meta.sae_sha256:
        return
    # A float32 SAE must match bit for bit; one loaded in lower precision (bf16 on a GPU) only within
    # that precision's rounding, which the fingerprint checks.
    low_precision = sae.W_dec.dtype in (torch.float16, torch.bfloat16)
    if low_precision and torch.allclose(sae_fingerprint(sae), fingerprint, rtol=1e-2, atol=1e-3):
        return
    raise CompatibilityError(
        "The latent index next to this SAE was built for different SAE weights (the weights' hash does not "
        f"match). {rebuild}"
    )


# --- files -----------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder and ``os.replace`` it: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_STAT_FIELDS = (
    "count", "sum_act", "max_act", "hist", "hist_exp",
    "logit_top_ids", "logit_top_vals", "logit_bottom_ids", "logit_bottom_vals", "fingerprint",
)  # fmt: skip


def _contexts_table(ctx: Contexts, kind: str) -> pa.Table:
    lat, rank = (ctx.row >= 0).nonzero(as_tuple=True)
    window = ctx.tokens.shape[-1]
    return pa.table(
        {
            "latent": pa.array(lat.numpy().astype(np.int32)),
            "kind": pa.array([kind] * len(lat), pa.string()),
            "rank": pa.array(rank.numpy().astype(np.int16)),
            "activation": pa.array(ctx.value[lat, rank].numpy()),
            "row": pa.array(ctx.row[lat, rank].numpy()),
            "position": pa.array(ctx.pos[lat, rank].numpy().astype(np.int32)),
            "window_start": pa.array(ctx.start[lat, rank].numpy().astype(np.int32)),
            "tokens": pa.FixedSizeListArray.from_arrays(
                pa.array(ctx.tokens[lat, rank].reshape(-1).numpy().astype(np.int32)), window
            ),
            "acts": pa.FixedSizeListArray.from_arrays(
                pa.array(ctx.acts[lat, rank].reshape(-1).numpy().astype(np.float32)), window
            ),
        }
    )


def save_index(index: LatentIndex, sae_dir: Path) -> None:
    """Write the three index files into ``sae_dir`` atomically; the JSON (the 'complete' marker) goes last."""
    sae_dir = Path(sae_dir)
    sae_dir.mkdir(parents=True, exist_ok=True)
    build = {"build_id": index.meta.build_id}
    tensors = {name: getattr(index, name).contiguous() for name in _STAT_FIELDS}
    _atomic_write(sae_dir / INDEX_STATS_FILENAME, lambda p: save_file(tensors, str(p), metadata=build))
    table = pa.concat_tables([_contexts_table(index.top, KIND_TOP), _contexts_table(index.samples, KIND_SAMPLE)])
    table = table.replace_schema_metadata(build)
    _atomic_write(sae_dir / INDEX_CONTEXTS_FILENAME, lambda p: pq.write_table(table, p))
    if index.counts is not None:
        counts = index.counts.tensors()
        _atomic_write(sae_dir / INDEX_COUNTS_FILENAME, lambda p: save_file(counts, str(p), metadata=build))
    meta_text = json.dumps(dataclasses.asdict(index.meta), ensure_ascii=False)
    _atomic_write(sae_dir / INDEX_META_FILENAME, lambda p: p.write_text(meta_text, encoding="utf-8"))


def _contexts_from_table(table: pa.Table, kind: str, d_sae: int, k: int, window: int) -> Contexts:
    rows = table.filter(pc.equal(table["kind"], kind))
    lat = torch.from_numpy(rows["latent"].to_numpy().astype(np.int64))
    rank = torch.from_numpy(rows["rank"].to_numpy().astype(np.int64))

    def col(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(rows[name].to_numpy()))

    def fixed(name: str) -> torch.Tensor:
        flat = rows[name].combine_chunks().flatten().to_numpy() if rows.num_rows else np.zeros(0)
        return torch.from_numpy(np.array(flat)).reshape(-1, window)

    value = torch.zeros(d_sae, k)
    row = torch.full((d_sae, k), -1, dtype=torch.long)
    pos = torch.zeros(d_sae, k, dtype=torch.long)
    start = torch.zeros(d_sae, k, dtype=torch.long)
    tokens = torch.full((d_sae, k, window), -1, dtype=torch.long)
    acts = torch.zeros(d_sae, k, window)
    if rows.num_rows:
        value[lat, rank] = col("activation").float()
        row[lat, rank] = col("row").long()
        pos[lat, rank] = col("position").long()
        start[lat, rank] = col("window_start").long()
        tokens[lat, rank] = fixed("tokens").long()
        acts[lat, rank] = fixed("acts").float()
    return Contexts(value, row, pos, start, tokens, acts)


def load_index(sae_dir: Path, sae: SAE) -> LatentIndex | None:
    """The index next to the SAE; None when there is none; :class:`CompatibilityError` when it is not this SAE's."""
    sae_dir = Path(sae_dir)
    paths = [sae_dir / n for n in (INDEX_META_FILENAME, INDEX_STATS_FILENAME, INDEX_CONTEXTS_FILENAME)]
    if not paths[0].exists():
        return None
    broken = "The latent index in {} is incomplete or damaged ({}). Rebuild it with scripts/build_latent_index.py."
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise CompatibilityError(broken.format(sae_dir, "missing " + ", ".join(missing)))
    try:
        raw = json.loads(paths[0].read_text(encoding="utf-8"))
        meta = IndexMeta(**raw)
    except (ValueError, TypeError) as err:
        raise CompatibilityError(broken.format(sae_dir, f"unreadable {paths[0].name}: {err}")) from None
    if meta.format_version != FORMAT_VERSION:
        raise CompatibilityError(broken.format(sae_dir, f"format version {meta.format_version}, expected {FORMAT_VERSION}"))
    with safe_open(str(paths[1]), framework="pt") as f:
        stats = {name: f.get_tensor(name) for name in _STAT_FIELDS}
        stats_build = (f.metadata() or {}).get("build_id")
    table = pq.read_table(paths[2])
    table_build = (table.schema.metadata or {}).get(b"build_id", b"").decode()
    if stats_build != meta.build_id or table_build != meta.build_id:
        raise CompatibilityError(broken.format(sae_dir, "its files come from different builds"))
    check_index_matches_sae(meta, stats["fingerprint"], sae)
    cfg = meta.config
    counts = None
    if (sae_dir / INDEX_COUNTS_FILENAME).exists():  # indexes built before the counts existed lack it
        with safe_open(str(sae_dir / INDEX_COUNTS_FILENAME), framework="pt") as f:
            if (f.metadata() or {}).get("build_id") != meta.build_id:
                raise CompatibilityError(broken.format(sae_dir, "its files come from different builds"))
            counts = LatentCounts(**{name: f.get_tensor(name) for name in COUNT_FIELDS})
    return LatentIndex(
        meta=meta,
        top=_contexts_from_table(table, KIND_TOP, meta.d_sae, cfg["top_k"], cfg["window"]),
        samples=_contexts_from_table(table, KIND_SAMPLE, meta.d_sae, cfg["n_lower_examples"], cfg["window"]),
        counts=counts,
        **stats,
    )


# --- tokens for an index pass ---------------------------------------------------------------


class PackedTokens(NamedTuple):
    tokens: torch.Tensor
    """(n_seq, ctx) int64: texts tokenized and concatenated with a separator, cut into rows."""
    doc_ids: torch.Tensor
    """(n_seq, ctx) int64: which input text each token came from; -1 for separators."""


def pack_texts(texts: Iterable[str], tokenizer: Any, context_size: int, n_seq: int) -> PackedTokens:
    """Tokenize ``texts`` one by one, join them with the end-of-text token, and cut ``n_seq`` full rows.

    Stops reading ``texts`` as soon as the rows are full (a streamed Hub dataset is never read to the end).
    Returns fewer rows when the texts run out; a partial last row is dropped.
    """
    if context_size < 1 or n_seq < 1:
        raise InputError(f"context_size and n_seq must be at least 1, got {context_size} and {n_seq}.")
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    need = context_size * n_seq
    ids: list[int] = []
    docs: list[int] = []
    for j, text in enumerate(texts):
        if not text:
            continue
        if ids and sep is not None:
            ids.append(sep)
            docs.append(-1)
        new = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(new)
        docs.extend([j] * len(new))
        if len(ids) >= need:
            break
    rows = min(len(ids) // context_size, n_seq)
    if rows == 0:
        raise InputError(
            f"The texts hold {len(ids)} tokens, fewer than one {context_size}-token row: give more text "
            "or a shorter context."
        )
    cut = rows * context_size
    return PackedTokens(
        torch.tensor(ids[:cut]).view(rows, context_size),
        torch.tensor(docs[:cut]).view(rows, context_size),
    )


# --- reading an index (what the Latent browser shows) -------------------------------------------


def parse_latent(value: object, d_sae: int) -> int:
    """A latent id from a URL or a text box; :class:`InputError` when it is not a number in range."""
    text = str(value).strip()
    try:
        latent = int(text)
    except ValueError:
        raise InputError(f"Latent {text!r} is not a number: give a whole number from 0 to {d_sae - 1}.") from None
    if not 0 <= latent < d_sae:
        raise InputError(f"Latent {latent} is out of range: this SAE has latents 0 to {d_sae - 1}.")
    return latent


class Histogram(NamedTuple):
    edges: np.ndarray
    """(n + 1,) bin edges, from 0 up to the first edge above the max."""
    counts: np.ndarray
    """(n,) positive activations per bin."""


def latent_histogram(index: LatentIndex, latent: int) -> Histogram:
    """Latent's histogram of positive activations, trimmed after the bin holding its max."""
    n_bins = index.hist.shape[1]
    counts = index.hist[latent].numpy()
    if index.count[latent] == 0:
        return Histogram(np.zeros(1), np.zeros(0, dtype=np.int64))
    upper = math.ldexp(1.0, int(index.hist_exp[latent]))
    last = int(np.nonzero(counts)[0].max()) + 1
    return Histogram(np.linspace(0.0, upper, n_bins + 1)[: last + 1], counts[:last])


def histogram_title(index: LatentIndex, latent: int) -> str:
    """The write-up's title: ``Latent i Activations Density x%, Max Activation y``."""
    return (
        f"Latent {latent} Activations Density {float(index.density[latent]):.3%}, "
        f"Max Activation {float(index.max_act[latent]):.2f}"
    )


def _log10_density(index: LatentIndex) -> np.ndarray:
    d = index.density.numpy()
    with np.errstate(divide="ignore"):
        return np.where(d > 0, np.log10(np.where(d > 0, d, 1.0)), -np.inf)


def log10_densities(index: LatentIndex) -> np.ndarray:
    """log10 density of every latent that fired (dead latents have none)."""
    ld = _log10_density(index)
    return ld[np.isfinite(ld)]


def _peak_tokens(index: LatentIndex) -> torch.Tensor:
    """(d_sae, k) token id at each top context's max (-1 for empty slots)."""
    ctx = index.top
    at = (ctx.pos - ctx.start).clamp(min=0, max=ctx.tokens.shape[-1] - 1)
    return ctx.tokens.gather(2, at[..., None]).squeeze(2).masked_fill(ctx.row < 0, -1)


def latent_table(
    index: LatentIndex,
    log10_density_range: tuple[float, float] | None = None,
    hide_dead: bool = False,
    query: str = "",
    n_tokens_shown: int = 5,
) -> pd.DataFrame:
    """One row per latent (filtered): density, max, mean, status, top logit tokens, tokens it peaks on.

    ``query`` keeps latents where a token containing it (case-insensitive) is among the tokens the
    latent peaks on in its top contexts or among its top logit-lens tokens.
    """
    peaks = _peak_tokens(index).numpy()
    logit_ids = index.logit_top_ids[:, :n_tokens_shown].numpy()
    ld = _log10_density(index)
    keep = np.ones(index.d_sae, dtype=bool)
    if hide_dead:
        keep &= ~index.dead.numpy()
    if log10_density_range is not None:
        low, high = log10_density_range
        keep &= index.dead.numpy() | ((ld >= low) & (ld <= high))
    if query.strip():
        q = query.strip().lower()
        vocab = index.meta.vocab or []
        hits = np.array([q in s.lower() for s in vocab] + [False], dtype=bool)  # last entry: id -1
        lookup = lambda ids: hits[np.where((ids >= 0) & (ids < len(vocab)), ids, len(vocab))]  # noqa: E731
        keep &= lookup(peaks).any(axis=1) | lookup(logit_ids).any(axis=1)
    rows = np.nonzero(keep)[0]
    status = np.where(index.dead.numpy(), "dead", np.where(index.dense.numpy(), "dense", ""))

    def peak_summary(i: int) -> str:
        counts = Counter(int(t) for t in peaks[i] if t >= 0)
        return " · ".join(f"{index.token_str(t)!r}×{c}" for t, c in counts.most_common(n_tokens_shown))

    return pd.DataFrame(
        {
            "latent": rows,
            "density": index.density.numpy()[rows],
            "log10 density": ld[rows],
            "max": index.max_act.numpy()[rows],
            "mean": index.mean_act.numpy()[rows],
            "status": status[rows],
            "top logit tokens": [" ".join(repr(index.token_str(int(t))) for t in logit_ids[i]) for i in rows],
            "peaks on (top contexts)": [peak_summary(int(i)) for i in rows],
        }
    )


class ContextView(NamedTuple):
    tokens: list[str]
    """The window's token texts."""
    acts: list[float]
    """The latent's activation on each."""
    activation: float
    """The context's max activation."""
    row: int
    """Row of the indexed token tensor."""
    peak: int
    """Index of the max token within the window."""


def latent_contexts(index: LatentIndex, latent: int, kind: str = KIND_TOP) -> list[ContextView]:
    """The latent's stored contexts, top ones by activation, samples sorted by activation too."""
    ctx = index.top if kind == KIND_TOP else index.samples
    out = []
    for s in range(ctx.value.shape[1]):
        if int(ctx.row[latent, s]) < 0:
            continue
        ids = [int(t) for t in ctx.tokens[latent, s] if t >= 0]
        out.append(
            ContextView(
                tokens=[index.token_str(t) for t in ids],
                acts=ctx.acts[latent, s, : len(ids)].tolist(),
                activation=float(ctx.value[latent, s]),
                row=int(ctx.row[latent, s]),
                peak=int(ctx.pos[latent, s] - ctx.start[latent, s]),
            )
        )
    return sorted(out, key=lambda c: -c.activation)


def highlight_html(tokens: list[str], acts: list[float], scale: float) -> str:
    """Tokens as HTML spans shaded orange by activation / ``scale``; the value shows on hover."""
    spans = []
    for tok, a in zip(tokens, acts):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, a / scale))
        text = html.escape(tok).replace("\n", "↵")
        spans.append(
            f'<span title="{a:.3f}" style="background: rgba(255,140,0,{alpha:.2f}); '
            f'padding: 1px 0; border-radius: 2px; white-space: pre">{text}</span>'
        )
    return '<div style="font-family: monospace; line-height: 1.9">' + "".join(spans) + "</div>"


def logit_lens_table(index: LatentIndex, latent: int) -> pd.DataFrame:
    """Promoted and suppressed tokens side by side."""
    return pd.DataFrame(
        {
            "promoted": [index.token_str(int(t)) for t in index.logit_top_ids[latent]],
            "logit": index.logit_top_vals[latent].numpy(),
            "suppressed": [index.token_str(int(t)) for t in index.logit_bottom_ids[latent]],
            "logit ": index.logit_bottom_vals[latent].numpy(),
        }
    )


def sample_latents(d_sae: int, n: int = 20, seed: int = 0) -> list[int]:
    """The write-up's random sample: ``n`` distinct latents, seeded."""
    return sorted(random.Random(seed).sample(range(d_sae), min(n, d_sae)))


def steering_query(index: LatentIndex, latent: int) -> dict[str, str]:
    """Query parameters the Steering page reads: the latent and its max activation."""
    return {"latent": str(latent), "max_act": f"{float(index.max_act[latent]):.6g}"}


# --- what fires here (live model + SAE) --------------------------------------------------------


class Firing(NamedTuple):
    tokens: list[str]
    """The prompt's tokens as text."""
    latents: torch.Tensor
    """(n_tokens, top_n) int64: the latents firing most on each token (by activation)."""
    acts: torch.Tensor
    """(n_tokens, top_n) float32: their activations (0 where fewer latents fire)."""


@torch.no_grad()
def what_fires(
    model: HookedTransformer, sae: SAE, prompt: str, top_n: int = 5, limits: Limits = LIMITS
) -> Firing:
    """Per token of ``prompt``, the ``top_n`` latents with the largest activation."""
    check_prompt(prompt, limits)
    tokens = model.to_tokens(prompt)  # (1, n)
    if tokens.shape[1] > limits.max_prompt_tokens:
        raise InputError(
            f"The prompt is {tokens.shape[1]} tokens long; the limit is {limits.max_prompt_tokens}. Shorten it."
        )
    # The model is shared with steering, whose hooks live on it while a generation runs: wait our turn.
    with queue_for(model).slot():
        feats = encode_tokens(model, sae, tokens)[0].float().cpu()  # (n, d_sae)
    acts, latents = feats.topk(min(top_n, feats.shape[1]), dim=1)
    return Firing(model.to_str_tokens(tokens[0]), latents, acts)


def firing_table(firing: Firing) -> pd.DataFrame:
    """One row per token: the latents that fire most there, as ``latent (activation)``."""
    cols = {}
    for j in range(firing.latents.shape[1]):
        cols[f"#{j + 1}"] = [
            f"{int(lat)} ({float(a):.2f})" if a > 0 else ""
            for lat, a in zip(firing.latents[:, j], firing.acts[:, j])
        ]
    return pd.DataFrame({"token": firing.tokens, **cols})


def firing_latents(firing: Firing) -> list[int]:
    """Latents that fire anywhere in the prompt, strongest first (for click-through)."""
    best: dict[int, float] = {}
    for lat, a in zip(firing.latents.flatten().tolist(), firing.acts.flatten().tolist()):
        if a > 0:
            best[lat] = max(best.get(lat, 0.0), a)
    return sorted(best, key=lambda k: -best[k])
