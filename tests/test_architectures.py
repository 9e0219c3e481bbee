"""Every SAE architecture SAELens loads, on hooks beyond hook_mlp_out, through the index, "what fires"
and steering: the input hook is read, the output hook is written (transcoders: two different hooks)."""

import copy

import pytest
import torch
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    Transcoder,
    TranscoderConfig,
)
from sae_lens.saes.sae import SAEMetadata

from sae_lib import latent_index as li
from sae_lib import generation, probe, sae_hooks, steering
from sae_lib.dose_response import dose_response
from sae_lib.packing import pack_texts
from sae_lib.sae import check_sae_matches_model
from tests.conftest import TINY_TEXTS

D_IN, D_SAE = 32, 64


def _sane(sae) -> None:
    """Random but sane weights: unit-norm decoder rows along the encoder's directions, biases that let latents fire."""
    torch.manual_seed(0)
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        d_out = sae.W_dec.shape[1]
        W = torch.randn(D_SAE, d_out) if d_out != D_IN else sae.W_enc.T.clone()
        sae.W_dec.copy_(W / W.norm(dim=1, keepdim=True))
        for name in ("b_enc", "b_gate", "b_mag"):
            if getattr(sae, name, None) is not None:
                getattr(sae, name).normal_(0, 0.05)


def _via_disk(training_sae, path) -> SAE:
    """Save an SAELens training SAE as its inference model and load it back as SAELens does."""
    training_sae.save_inference_model(path)
    return SAE.load_from_disk(path)


def _meta(hook: str, hook_out: str | None = None) -> SAEMetadata:
    return SAEMetadata(hook_name=hook, **({"hook_name_out": hook_out} if hook_out else {}))


def build(arch: str, tmp_path) -> SAE:
    if arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=_meta("blocks.1.hook_resid_pre")))
    elif arch == "gated":
        sae = GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=_meta("blocks.0.hook_attn_out")))
    elif arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=8, metadata=_meta("blocks.1.hook_resid_post")))
    elif arch == "batchtopk":
        train = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=8, metadata=_meta("blocks.1.hook_mlp_in")))
        _sane(train)
        train.topk_threshold.fill_(0.05)
        return _via_disk(train, tmp_path / arch)
    elif arch == "matryoshka":
        cfg = MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D_IN, d_sae=D_SAE, k=8, matryoshka_widths=[16, D_SAE], metadata=_meta("blocks.1.hook_mlp_out")
        )
        train = MatryoshkaBatchTopKTrainingSAE(cfg)
        _sane(train)
        train.topk_threshold.fill_(0.05)
        return _via_disk(train, tmp_path / arch)
    elif arch == "transcoder":
        cfg = TranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_IN, apply_b_dec_to_input=False, metadata=_meta("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"))
        sae = Transcoder(cfg)
        _sane(sae)
        sae.save_model(tmp_path / arch)  # through SAELens's own format and back
        return SAE.load_from_disk(tmp_path / arch)
    else:
        raise ValueError(arch)
    _sane(sae)
    return sae.eval()


ARCHS = ["standard", "gated", "topk", "batchtopk", "matryoshka", "transcoder"]


@pytest.fixture(scope="module")
def model(tiny_model):
    # A private copy: loading an SAE on hook_mlp_in switches that hook on in the model's config.
    return copy.deepcopy(tiny_model)


@pytest.fixture(scope="module")
def tokens(model):
    return pack_texts(TINY_TEXTS, model.tokenizer, context_size=16, n_seq=12).tokens


def _naive_input(model, sae, tokens) -> torch.Tensor:
    """What the SAE should read, computed by hand from TransformerLens's plain hooks."""
    name = sae.cfg.metadata.hook_name
    if name.endswith("mlp.hook_in"):  # ln2(resid_mid): RMSNorm then its gain
        layer = int(name.split(".")[1])
        _, cache = model.run_with_cache(tokens, names_filter=[f"blocks.{layer}.hook_resid_mid"])
        x = cache[f"blocks.{layer}.hook_resid_mid"]
        ln = model.blocks[layer].ln2
        return x / (x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt() * ln.w
    _, cache = model.run_with_cache(tokens, names_filter=[name])
    return cache[name]


@pytest.mark.parametrize("arch", ARCHS)
def test_reads_the_input_hook_and_indexes(arch, model, tokens, tmp_path):
    sae = build(arch, tmp_path)
    if arch in ("batchtopk", "matryoshka"):
        assert isinstance(sae, JumpReLUSAE)  # SAELens saves BatchTopK-family SAEs as JumpReLU for inference
    check_sae_matches_model(sae, model)
    with torch.no_grad():
        feats = probe.encode_tokens(model, sae, tokens)
        torch.testing.assert_close(feats, sae.encode(_naive_input(model, sae, tokens)), atol=1e-5, rtol=1e-5)
    assert (feats > 0).any()
    index = li.build_index(model, sae, tokens, li.IndexConfig(n_bins=16, top_k=3, n_lower_examples=2, window=8, window_before=4, batch_size=5))
    assert index.d_sae == D_SAE and index.meta.hook_name == sae.cfg.metadata.hook_name
    torch.testing.assert_close(index.count, (feats > 0).sum(dim=(0, 1)).cpu())
    firing = probe.what_fires(model, sae, "The ship sailed across the ocean.")
    assert firing.latents.shape[1] == 5


@pytest.mark.parametrize("arch", ARCHS)
def test_steering_writes_the_output_hook(arch, model, tokens, tmp_path):
    sae = build(arch, tmp_path)
    check_sae_matches_model(sae, model)
    out = sae_hooks.output_hook(sae)
    assert sae_hooks.is_transcoder(sae) == (arch == "transcoder")
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens[:2], names_filter=[out])
        add = steering.SteeringSpec(3, "add", max_act=2.0, coeff=1.5)
        with steering.steering_hooks(model, sae, [add]):
            _, steered = model.run_with_cache(tokens[:2], names_filter=[out])
        # Exactly the decoder direction is added at the output hook (the cache sees the hook's result).
        torch.testing.assert_close(steered[out] - clean[out], (3.0 * sae.W_dec[3]).expand_as(clean[out]), atol=1e-5, rtol=1e-4)

        # "clamp activation": encode what the input hook holds, set the latent, add the change of the decoding.
        clamp = steering.SteeringSpec(3, "clamp activation", max_act=2.0, coeff=2.0)
        with steering.steering_hooks(model, sae, [clamp]):
            _, steered = model.run_with_cache(tokens[:2], names_filter=[out])
        z = sae.encode(_naive_input(model, sae, tokens[:2]))
        z_new = z.clone()
        z_new[..., 3] = 4.0
        torch.testing.assert_close(steered[out] - clean[out], sae.decode(z_new) - sae.decode(z), atol=1e-4, rtol=1e-4)
    assert all(not h.fwd_hooks for h in model.hook_dict.values())

    settings = generation.GenerationSettings(max_new_tokens=3, n_samples=2, temperature=0.0)
    result = generation.generate(model, sae, "The ship sailed", [add], settings)
    assert len(result.steered) == 2
    dr = dose_response(model, sae, "The ship sailed", [add], [0.0, 1.0], settings)
    assert float(dr.kl_next_token[0]) == pytest.approx(0.0, abs=1e-6)
    assert all(not h.fwd_hooks for h in model.hook_dict.values())


def test_optional_hook_points_are_switched_on_only_when_an_sae_needs_them(tiny_model, tmp_path):
    model = copy.deepcopy(tiny_model)
    assert not model.cfg.use_hook_mlp_in
    check_sae_matches_model(build("topk", tmp_path), model)  # resid_post: nothing to switch on
    assert not model.cfg.use_hook_mlp_in
    sae = build("batchtopk", tmp_path)  # blocks.1.hook_mlp_in
    check_sae_matches_model(sae, model)
    assert model.cfg.use_hook_mlp_in
    tokens = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():  # switching it on changes nothing the model computes
        torch.testing.assert_close(model(tokens), tiny_model(tokens), atol=0, rtol=0)
