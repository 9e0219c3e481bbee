"""Latent index pass: one streaming sweep of a token tensor that fills every latent's statistics at once.

The memory held during the pass is ``d_sae x (n_bins + (top_k + n_lower_examples) x window)``,
independent of how many tokens stream through. See :mod:`sae_lib.latent_index` for the choices
(contexts per sequence, power-of-two histograms, random lower-range samples).
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from sae_lib.cooccurrence import CountsAccumulator
from sae_lib.errors import InputError
from sae_lib.latent_index.identity import sae_fingerprint, sae_hash
from sae_lib.latent_index.logit_lens import logit_lens, vocab_strings
from sae_lib.latent_index.model import Contexts, IndexConfig, IndexMeta, LatentIndex
from sae_lib.model_queue import queue_for
from sae_lib.probe import encode_tokens


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
        # The window gather (d_sae x k x window ids: 31M at 65,536 latents) runs where the buffers are;
        # on a GPU that is milliseconds, on the CPU it took seconds.
        row, start = self.row, self.start
        ctx = tokens.shape[1]
        win_pos = start[..., None] + torch.arange(self.window, device=start.device)  # (d_sae, k, window)
        toks = tokens.to(start.device)[row.clamp(min=0)[..., None], win_pos.clamp(max=ctx - 1)]
        toks = toks.masked_fill((row < 0)[..., None] | (win_pos >= ctx), -1)
        value = self.value.masked_fill(row < 0, 0.0)
        return Contexts(value.cpu(), row.cpu(), self.pos.cpu(), start.cpu(), toks.long().cpu(), self.acts.cpu())


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

    def update(self, feats: torch.Tensor, row0: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold in one batch of SAE activations, ``feats`` (B, ctx, d_sae), whose first row is ``row0``.
        Returns the firing entries it found, ``(position, latent)`` over the counted positions, so the
        co-occurrence counts reuse them instead of scanning the batch again."""
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
            # A uniform sample of the latent's firings, at most one per row: every firing draws a random
            # key, a row offers its firing with the largest key (a uniform pick within the row), and the
            # buffer keeps the largest keys over all rows. Showing each sampled row's max instead would
            # show an upper quantile (the max of several firings), not typical activations.
            ekey = torch.rand(val.shape, generator=self.gen, device=self.device)  # (nnz,)
            row_key = torch.full((B * D,), -math.inf, device=self.device).scatter_reduce_(0, key, ekey, "amax")
            best = (ekey == row_key[key]).nonzero().squeeze(1)  # firings holding their row's largest key
            pick = torch.full((B * D,), -1, dtype=torch.long, device=self.device).scatter_reduce_(0, key[best], best, "amax")
            chosen = pick.clamp(min=0)  # one firing per (row, latent) even if two keys tie
            s_val = torch.where(pick >= 0, val[chosen] if val.numel() else 0.0, 0.0).view(B, D)
            s_pos = torch.where(pick >= 0, pos[chosen] if pos.numel() else 0, 0).view(B, D) + cfg.skip_positions
            self.samples.update(row_key.view(B, D), s_val, s_pos, feats, row0, cfg.window_before)
        return tok, lat


class PassStatistics:
    """Everything the pass accumulates from a batch: the per-latent statistics and the co-occurrence
    counts, from one scan of the batch's firing entries. ``measure`` runs this too, so the UI's time
    estimate times what the pass does."""

    def __init__(self, d_sae: int, vocab: int, cfg: IndexConfig, device: torch.device):
        self.skip = cfg.skip_positions
        self.acc = _Accumulator(d_sae, cfg, device)
        self.counts = CountsAccumulator(d_sae, vocab, cfg.k_tokens, cfg.k_cofire, cfg.cofire_pairs_per_batch,
                                        cfg.seed, device)  # fmt: skip

    def update(self, tokens: torch.Tensor, feats: torch.Tensor, row0: int) -> None:
        """``tokens`` (B, ctx) and their SAE activations ``feats`` (B, ctx, d_sae); the first row is ``row0``."""
        firing = self.acc.update(feats, row0)
        self.counts.update(tokens[:, self.skip :], firing, n_pos=tokens.shape[0] * (tokens.shape[1] - self.skip))


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
    stats = PassStatistics(int(sae.cfg.d_sae), int(model.cfg.d_vocab), cfg, sae.device)
    acc, counts = stats.acc, stats.counts
    total, t0 = n_seq * ctx, time.perf_counter()
    for row0 in range(0, n_seq, cfg.batch_size):
        batch = tokens[row0 : row0 + cfg.batch_size]
        # One batch at a time in the model's queue: an index built in the app shares the model with
        # steering, whose hooks must never be on it during this forward pass.
        with queue_for(model).slot():
            feats = encode_tokens(model, sae, batch, tf32=cfg.tf32, compiled=cfg.compile)
        stats.update(batch, feats, row0)
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
