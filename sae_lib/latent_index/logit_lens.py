"""Logit lens of SAE latents: the tokens each latent's decoder direction promotes and suppresses."""

from __future__ import annotations

from typing import NamedTuple

import torch
from sae_lens import SAE
from sae_lens.util import extract_layer_from_tlens_hook_name
from transformer_lens import HookedTransformer

from sae_lib import sae_hooks


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
    W_dec = sae.W_dec.detach().float()  # (d_sae, d_out): a transcoder's decoder writes its output hook
    hook = sae_hooks.output_hook(sae)
    layer = extract_layer_from_tlens_hook_name(hook)
    if hook.endswith("hook_z") and layer is not None:
        W_O = model.blocks[layer].attn.W_O.detach().float().to(W_dec.device)  # (n_heads, d_head, d_model)
        head = getattr(sae.cfg.metadata, "hook_head_index", None)
        if head is not None:  # an SAE on one head writes that head's d_head
            return W_dec @ W_O[head], f"W_dec @ W_O[{head}]"
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
        why = f"unavailable: no map from {sae_hooks.output_hook(sae)} (width {sae_hooks.d_out(sae)}) to the residual stream"
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
