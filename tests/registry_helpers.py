"""A fake SAELens registry and Hub cache for registry SAEs (no fixtures here; used by several test modules).

SAELens reads its registry through ``get_pretrained_saes_directory()`` (imported by name into a few
of its modules); :func:`use_registry` points every one of them at a small dict of entries. The Hub is
replaced by a local cache (``tests.helpers.populate_hf_cache``) with huggingface_hub offline: only the
network is mocked, SAELens's own converters and ``SAE.from_pretrained`` run as they are.
"""

from pathlib import Path

import torch
from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

from tests.helpers import populate_hf_cache, use_hf_cache

SCOPE_REPO = "test/SAE-Res-Qwen3-8B-Base-W1K-L0_16"
"""A repo id in Qwen-Scope's naming, which SAELens's ``qwen_scope`` converter parses: 1K = 1,024 latents, k 16."""
SCOPE_D_SAE, SCOPE_K = 1024, 16


def use_registry(monkeypatch, entries: dict[str, PretrainedSAELookup]) -> dict[str, PretrainedSAELookup]:
    """Make ``entries`` SAELens's whole registry for the test."""
    import sae_lens.evals
    import sae_lens.loading.pretrained_sae_loaders
    import sae_lens.loading.pretrained_saes_directory
    import sae_lens.saes.sae

    directory = dict(entries)
    for module in (
        sae_lens.loading.pretrained_saes_directory,
        sae_lens.loading.pretrained_sae_loaders,
        sae_lens.saes.sae,
        sae_lens.evals,
    ):
        monkeypatch.setattr(module, "get_pretrained_saes_directory", lambda: directory)
    return directory


def lookup_entry(
    release: str,
    repo_id: str,
    model: str,
    saes: dict[str, str],
    conversion_func: str | None = "qwen_scope",
    neuronpedia: dict[str, str] | None = None,
    overrides: dict | None = None,
) -> PretrainedSAELookup:
    """One registry entry, as SAELens builds it from ``pretrained_saes.yaml``."""
    return PretrainedSAELookup(
        release=release,
        repo_id=repo_id,
        model=model,
        conversion_func=conversion_func,
        saes_map=saes,
        expected_var_explained={},
        expected_l0={},
        neuronpedia_id=neuronpedia or {},
        norm_scaling_factor={},
        config_overrides=overrides,
    )


def scope_weights(d_in: int, d_sae: int = SCOPE_D_SAE, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random but sane Qwen-Scope weights in Qwen's orientation: W_enc (d_sae, d_in), W_dec (d_in, d_sae)."""
    gen = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_sae, d_in, generator=gen) / d_in**0.5
    W_dec = W_enc.T / W_enc.T.norm(dim=0, keepdim=True)  # unit-norm decoder columns (one per latent)
    return {"W_enc": W_enc, "W_dec": W_dec.contiguous(), "b_enc": 0.01 * torch.randn(d_sae, generator=gen), "b_dec": torch.zeros(d_in)}


def fake_scope_cache(
    monkeypatch, cache: Path, d_in: int, layers: list[int], model: str, release: str = "test-scope",
    weights: dict | None = None, neuronpedia: dict[str, str] | None = None,
) -> dict[str, PretrainedSAELookup]:
    """A Hub cache holding a repo in Qwen-Scope's file layout (``layerN.sae.pt``) and a registry entry for it.

    ``config_overrides`` sets ``d_in`` (Qwen-Scope's converter takes it from its table of Qwen models).
    """
    src = cache.parent / f"{release}-files"
    src.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        torch.save(weights or scope_weights(d_in, seed=layer), src / f"layer{layer}.sae.pt")
    populate_hf_cache(cache, SCOPE_REPO, src)
    use_hf_cache(monkeypatch, cache)
    entry = lookup_entry(
        release, SCOPE_REPO, model, {f"layer{n}": f"layer{n}.sae.pt" for n in layers},
        neuronpedia=neuronpedia, overrides={"d_in": d_in},
    )
    return {release: entry}
