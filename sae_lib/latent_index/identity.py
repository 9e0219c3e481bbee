"""SAE identity for the latent index: the weight hash and fingerprint that tie an index to its SAE."""

from __future__ import annotations

import hashlib

import torch
from sae_lens import SAE

from sae_lib.errors import CompatibilityError
from sae_lib.latent_index.model import IndexMeta


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
    # Norms where the weights are, accumulated in float32; only (d_sae, 3) crosses to the CPU (copying
    # both matrices over, 2 GB at Qwen3-8B's 65,536 x 4,096, took longer than the norms).
    W_dec, W_enc = sae.W_dec.detach(), sae.W_enc.detach()
    # Gated SAEs have no b_enc (SAELens sets it to None); their gate bias plays its part.
    b = sae.b_enc if getattr(sae, "b_enc", None) is not None else sae.b_gate
    norms = torch.stack([torch.linalg.vector_norm(W_dec, dim=1, dtype=torch.float32),
                         torch.linalg.vector_norm(W_enc, dim=0, dtype=torch.float32), b.detach().float()], dim=1)
    return norms.cpu()


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
