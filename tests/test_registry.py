"""SAELens registry SAEs (``sae-lens:RELEASE/SAE_ID``): syntax, loading a Qwen-Scope-layout repo from a
fake Hub cache, the restricted unpickler, and every bad input with its message."""

import pickle
import shutil

import pytest
import torch
from sae_lens import TopKSAE

from sae_lib import probe, registry
from sae_lib.errors import CompatibilityError, SAELoadError
from sae_lib.model import load_model, official_model_name
from sae_lib.packing import pack_texts
from sae_lib.sae import load_sae, parse_sae_spec
from sae_lib.workspace import load_workspace
from tests.conftest import TINY_TEXTS
from tests.helpers import populate_hf_cache, use_hf_cache
from tests.registry_helpers import SCOPE_K, fake_scope_cache, scope_weights, use_registry

LAYER = 1
SPEC = f"sae-lens:test-scope/layer{LAYER}"


def test_spec_syntax_cannot_be_mistaken_for_a_hub_spec():
    spec = parse_sae_spec("sae-lens:gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71")
    assert (spec.kind, spec.release, spec.sae_id) == ("registry", "gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")
    assert str(spec) == "sae-lens:gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71"
    hub = parse_sae_spec("user/repo:blocks.28.hook_mlp_out")
    assert (hub.kind, hub.repo_id) == ("hub", "user/repo")
    for bad in ("sae-lens:", "sae-lens:release-only", "sae-lens:/layer0"):
        with pytest.raises(SAELoadError, match="RELEASE/SAE_ID"):
            parse_sae_spec(bad)


@pytest.fixture
def scope(monkeypatch, tmp_path, tiny_hf_qwen3_dir):
    """A Qwen-Scope-layout repo for the tiny 64-wide Qwen3 model, reachable only through the registry."""
    weights = scope_weights(64, seed=LAYER)
    entries = fake_scope_cache(
        monkeypatch, tmp_path / "hub", 64, [LAYER], model=str(tiny_hf_qwen3_dir), weights=weights,
        neuronpedia={f"layer{LAYER}": "tiny-qwen3/1-test-res"},
    )
    use_registry(monkeypatch, entries)
    return weights


def test_qwen_scope_layout_loads_through_sae_lens(scope, tiny_hf_qwen3_dir):
    loaded = load_sae(SPEC, device="cpu")
    sae = loaded.sae
    assert isinstance(sae, TopKSAE) and loaded.local_dir is None and str(loaded.spec) == SPEC
    assert sae.cfg.metadata.hook_name == f"blocks.{LAYER}.hook_resid_post" and sae.cfg.k == SCOPE_K
    torch.testing.assert_close(sae.W_enc.data, scope["W_enc"].T)  # SAELens's orientation: (d_in, d_sae)
    torch.testing.assert_close(sae.W_dec.data, scope["W_dec"].T)
    assert registry.neuronpedia_url(sae, 7) == "https://www.neuronpedia.org/tiny-qwen3/1-test-res/7"

    # Through the app's loader: model checked by name, hook and width; the SAE encodes what the
    # model has at blocks.1.hook_resid_post, as a naive top-k of Qwen's own equations.
    ws = load_workspace(str(tiny_hf_qwen3_dir), SPEC, device="cpu", dtype="float32", fallback=False)
    assert ws.index is None and "none" in ws.index_problem
    tokens = pack_texts(TINY_TEXTS, ws.model.tokenizer, context_size=12, n_seq=2).tokens
    feats = probe.encode_tokens(ws.model, ws.sae, tokens)  # (2, 12, d_sae)
    _, cache = ws.model.run_with_cache(tokens, names_filter=[f"blocks.{LAYER}.hook_resid_post"])
    pre = cache[f"blocks.{LAYER}.hook_resid_post"] @ scope["W_enc"].T + scope["b_enc"]  # Qwen's W_enc: (d_sae, d_in)
    top = pre.topk(SCOPE_K, dim=-1)
    naive = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    torch.testing.assert_close(feats, naive, atol=1e-5, rtol=1e-5)


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(monkeypatch, tmp_path, tiny_hf_qwen3_dir):
    marker = tmp_path / "payload-ran"
    evil = {**scope_weights(64), "W_enc": _Payload(marker)}
    entries = fake_scope_cache(monkeypatch, tmp_path / "hub", 64, [LAYER], model=str(tiny_hf_qwen3_dir), weights=evil)
    use_registry(monkeypatch, entries)
    # Neither the environment nor SAELens's own call may loosen the restricted unpickler.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(SAELoadError, match="refused and nothing in it was run") as err:
        load_sae(SPEC, device="cpu")
    assert "exec" in str(err.value)  # names what it asked for
    assert not marker.exists()
    assert torch.load is not None and torch.load.__name__ == "load"  # the restriction is scoped to the load
    # The payload is real: the unrestricted unpickler does run it (so the test above can fail).
    checkpoint = next((tmp_path / "hub").rglob(f"layer{LAYER}.sae.pt"))
    with open(checkpoint, "rb") as f:
        try:
            torch.load(f, weights_only=False)
        except (pickle.UnpicklingError, TypeError, KeyError):
            pass
    assert marker.read_text() == "ran"


def test_pickles_stay_refused_everywhere_else(tmp_path):
    # A local folder holding only a .pt checkpoint is still refused, never read.
    folder = tmp_path / "sae"
    folder.mkdir()
    torch.save(scope_weights(8, d_sae=16), folder / "sae.pt")
    with pytest.raises(SAELoadError, match="pickle checkpoints"):
        load_sae(str(folder))


def test_unknown_release_or_id_lists_close_matches(scope):
    with pytest.raises(SAELoadError, match="Close matches: test-scope"):
        load_sae("sae-lens:test-scpoe/layer1")
    with pytest.raises(SAELoadError, match=r"no SAE id 'layer11'.*close matches: layer1"):
        load_sae("sae-lens:test-scope/layer11")


def test_release_for_another_model_names_both(monkeypatch, tmp_path, tiny_hf_qwen3_dir):
    entries = fake_scope_cache(monkeypatch, tmp_path / "hub", 64, [LAYER], model="Qwen/Qwen3-8B-Base")
    use_registry(monkeypatch, entries)
    loads = []  # refused from the registry's entry alone: neither the model nor the SAE is loaded first
    monkeypatch.setattr("sae_lib.model.load_model", lambda *a, **k: loads.append("model"))
    monkeypatch.setattr("sae_lib.sae.load_sae", lambda *a, **k: loads.append("sae"))
    with pytest.raises(CompatibilityError, match="trained on Qwen/Qwen3-8B-Base") as err:
        load_workspace(str(tiny_hf_qwen3_dir), SPEC, device="cpu", fallback=False)
    assert tiny_hf_qwen3_dir.name in str(err.value) and loads == []


def test_d_in_mismatch_names_both_widths(monkeypatch, tmp_path, tiny_hf_qwen3_dir):
    entries = fake_scope_cache(monkeypatch, tmp_path / "hub", 48, [LAYER], model=str(tiny_hf_qwen3_dir))
    use_registry(monkeypatch, entries)
    with pytest.raises(CompatibilityError, match=r"d_in is 48 but hook 'blocks.1.hook_resid_post'.*width 64"):
        load_workspace(str(tiny_hf_qwen3_dir), SPEC, device="cpu", fallback=False)


def test_uncached_offline_registry_sae_says_what_to_do(monkeypatch, tmp_path, tiny_hf_qwen3_dir):
    entries = fake_scope_cache(monkeypatch, tmp_path / "hub", 64, [LAYER], model=str(tiny_hf_qwen3_dir))
    shutil.rmtree(tmp_path / "hub")
    (tmp_path / "hub").mkdir()
    use_registry(monkeypatch, entries)
    with pytest.raises(SAELoadError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        load_sae(SPEC, device="cpu")


def test_model_names_compare_by_meaning():
    assert official_model_name("qwen/qwen3-8b-base") == "Qwen/Qwen3-8B-Base"
    assert registry.same_model("qwen3-8b", "Qwen/Qwen3-8B")  # TransformerLens alias vs official name
    assert not registry.same_model("Qwen/Qwen3-8B-Base", "Qwen/Qwen3-8B")


def test_base_model_loads_like_the_post_trained_one(tmp_path, monkeypatch, tiny_hf_qwen3_dir):
    # Qwen/Qwen3-8B-Base is not in TransformerLens's list; it loads through the same path as Qwen/Qwen3-8B.
    populate_hf_cache(tmp_path / "hub", "Qwen/Qwen3-8B-Base", tiny_hf_qwen3_dir)
    use_hf_cache(monkeypatch, tmp_path / "hub", offline=True)
    model = load_model("Qwen/Qwen3-8B-Base", device="cpu", dtype="float32")
    reference = load_model(str(tiny_hf_qwen3_dir), device="cpu", dtype="float32")
    tokens = reference.to_tokens(TINY_TEXTS[0], prepend_bos=False)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens), atol=0, rtol=0)
    assert model.cfg.trust_remote_code is False


@pytest.mark.slow  # parses SAELens's whole pretrained_saes.yaml
def test_real_registry_has_the_readme_examples():
    # SAELens's real pretrained_saes.yaml (parsed once, ~15 s): the releases the README names.
    from sae_lens.loading.pretrained_sae_loaders import get_qwen_scope_config_from_hf

    scope = registry.lookup("qwen-scope-3-8b-base-w64k-l50", "layer20")
    assert scope.model == "Qwen/Qwen3-8B-Base" and scope.path == "layer20.sae.pt"
    cfg = get_qwen_scope_config_from_hf(scope.repo_id, scope.path, "cpu")  # parses the repo id: no network
    assert (cfg["d_in"], cfg["d_sae"], cfg["hook_name"]) == (4096, 65536, "blocks.20.hook_resid_post")
    tc = registry.lookup("mwhanna-qwen3-8b-transcoders", "layer_20")
    assert tc.neuronpedia_id == "qwen3-8b/20-transcoder-hp" and registry.same_model(tc.model, "Qwen/Qwen3-8B")
    assert not registry.same_model(scope.model, "Qwen/Qwen3-8B")
    with pytest.raises(SAELoadError, match="qwen-scope-3-8b-base-w64k-l50"):
        registry.lookup("qwen-scope-3-8b-base-w64k-l5", "layer20")
