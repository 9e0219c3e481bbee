"""sae_lib.sae: spec parsing, local and Hub (cached, offline) loading, bad input, model checks."""

import copy
import json
import pickle
import shutil

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lib import constants
from sae_lib.errors import CompatibilityError, SAELoadError
from sae_lib.sae import SAESpec, check_sae_matches_model, hook_width, load_sae, parse_sae_spec
from tests.conftest import TINY_HOOK
from tests.helpers import make_hub_unreachable, populate_hf_cache, use_hf_cache

REPO = "someone/tiny-saes"


@pytest.fixture()
def sae_dir(tmp_path, tiny_sae):
    """The tiny SAE in SAELens's layout, with a sparsity file and an extra artifact next to it."""
    folder = tmp_path / "sae"
    tiny_sae.save_model(folder)
    save_file({"sparsity": torch.linspace(-6, -1, tiny_sae.cfg.d_sae)}, folder / constants.SPARSITY_FILENAME)
    (folder / constants.INDEX_META_FILENAME).write_text('{"extra": true}')
    return folder


def _assert_same_sae(loaded, reference):
    assert type(loaded) is JumpReLUSAE
    assert loaded.cfg.metadata.hook_name == reference.cfg.metadata.hook_name
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key].cpu(), value.cpu(), atol=0, rtol=0, msg=key)
    # Compared on one device (the loader puts the SAE on CUDA when there is one): the same kernels
    # give the same bits, so no tolerance is needed.
    device = next(loaded.parameters()).device
    x = torch.randn(5, reference.cfg.d_in, device=device)  # (batch, d_in)
    torch.testing.assert_close(loaded.encode(x), copy.deepcopy(reference).to(device).encode(x), atol=0, rtol=0)


# --- spec parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("user/repo:blocks.28.hook_mlp_out", SAESpec("hub", repo_id="user/repo", sae_id="blocks.28.hook_mlp_out")),
        ("user/repo:layer_28/width_16k@v1.0", SAESpec("hub", repo_id="user/repo", sae_id="layer_28/width_16k", revision="v1.0")),
        ("u-1/r.e_po:sae/", SAESpec("hub", repo_id="u-1/r.e_po", sae_id="sae")),
        ("data/demo/sae", SAESpec("local", path=__import__("pathlib").Path("data/demo/sae"))),
        ("/abs/path/sae", SAESpec("local", path=__import__("pathlib").Path("/abs/path/sae"))),
        ("./runs/x:y", SAESpec("local", path=__import__("pathlib").Path("./runs/x:y"))),
    ],
)
def test_parse_sae_spec(text, expected):
    parsed = parse_sae_spec(text)
    assert parsed == expected
    if parsed.kind == "hub":
        assert parse_sae_spec(str(parsed)) == parsed  # str() is the canonical spec


@pytest.mark.parametrize("text", ["user/repo:", "user/repo:../../etc", "user/repo:a//b", "  "])
def test_parse_sae_spec_rejects_bad_hub_ids(text):
    with pytest.raises(SAELoadError):
        parse_sae_spec(text)


# --- loading ---------------------------------------------------------------------------------


def test_local_folder_loads_through_saelens(sae_dir, tiny_sae):
    loaded = load_sae(str(sae_dir))
    _assert_same_sae(loaded.sae, tiny_sae)
    assert loaded.local_dir == sae_dir.resolve()
    assert loaded.spec.kind == "local"
    assert next(loaded.sae.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_dtype_override(sae_dir, tiny_sae):
    loaded = load_sae(str(sae_dir), device="cpu", dtype="bfloat16")
    assert loaded.sae.W_enc.dtype == torch.bfloat16
    # The saved weights, cast: not just any bfloat16 tensors of the right shape.
    for key, value in tiny_sae.state_dict().items():
        torch.testing.assert_close(loaded.sae.state_dict()[key], value.to(torch.bfloat16), atol=0, rtol=0, msg=key)


def _checkpoint_folder(folder, sae, factor):
    """A SAELens training checkpoint as its trainer writes one mid-run: the weights as trained (on
    activations scaled by ``factor``), cfg.json saying so, and activation_scaler.json holding the factor."""
    ckpt = copy.deepcopy(sae)
    ckpt.cfg.normalize_activations = "expected_average_only_in"
    ckpt.save_model(folder)
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": factor, "has_whitening": False}))
    return folder


def test_a_training_checkpoint_loads_with_its_activation_scaling_folded_in(tmp_path, tiny_sae):
    # A checkpoint's weights expect activations scaled by the factor; loaded as they are, every latent
    # read raw activations (the index and the browser then described a different SAE).
    factor = 2.5
    folder = _checkpoint_folder(tmp_path / "checkpoints" / "ab12" / "40960", tiny_sae, factor)
    loaded = load_sae(str(folder), device="cpu").sae
    x = torch.randn(6, tiny_sae.cfg.d_in, generator=torch.Generator().manual_seed(3)) * 0.4
    with torch.no_grad():
        # What the trainer computed: the SAE as trained, on scaled activations, its output unscaled.
        z_ref = tiny_sae.encode(x * factor)
        out_ref = tiny_sae.decode(z_ref) / factor
        z = loaded.encode(x)
        assert int((z_ref > 0).sum()) > 10  # latents fire: the comparison means something
        torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.decode(z), out_ref, atol=1e-5, rtol=1e-5)
    assert loaded.cfg.normalize_activations == "none"
    # A finished SAE (or final_N: SAELens folds first and records no factor) loads as it is.
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None, "has_whitening": False}))
    _assert_same_sae(load_sae(str(folder), device="cpu").sae, tiny_sae)


def test_an_unreadable_checkpoint_scaling_is_a_clear_error(tmp_path, tiny_sae):
    folder = _checkpoint_folder(tmp_path / "ckpt", tiny_sae, 2.0)
    (folder / "activation_scaler.json").write_text("{not json")
    with pytest.raises(SAELoadError, match="activation scaling.*unreadable"):
        load_sae(str(folder), device="cpu")


def test_hub_spec_loads_from_prepopulated_cache_offline(tmp_path, monkeypatch, sae_dir, tiny_sae):
    # What a restarted Space sees: the cache already holds the SAE folder, the Hub is switched off.
    populate_hf_cache(tmp_path / "hub", REPO, sae_dir, subfolder=TINY_HOOK)
    use_hf_cache(monkeypatch, tmp_path / "hub", offline=True)
    loaded = load_sae(f"{REPO}:{TINY_HOOK}", device="cpu")
    _assert_same_sae(loaded.sae, tiny_sae)
    assert loaded.spec == SAESpec("hub", repo_id=REPO, sae_id=TINY_HOOK)
    assert loaded.local_dir.is_relative_to(tmp_path / "hub")
    # Artifacts shipped next to the SAE (the latent index) are found in local_dir.
    assert json.loads((loaded.local_dir / constants.INDEX_META_FILENAME).read_text()) == {"extra": True}


def test_hub_revision_is_honoured(tmp_path, monkeypatch, sae_dir):
    populate_hf_cache(tmp_path / "hub", REPO, sae_dir, subfolder=TINY_HOOK, revision="v2")
    use_hf_cache(monkeypatch, tmp_path / "hub", offline=True)
    assert load_sae(f"{REPO}:{TINY_HOOK}@v2", device="cpu").spec.revision == "v2"
    with pytest.raises(SAELoadError, match="not in the local Hugging Face cache"):
        load_sae(f"{REPO}:{TINY_HOOK}@v3", device="cpu")  # never downloaded


def test_hub_download_asks_only_for_the_sae_folder(tmp_path, monkeypatch, sae_dir, tiny_sae):
    # Only the network call is replaced: it "downloads" by laying the files out in the cache.
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, revision=None, **kwargs):
        calls.append((repo_id, allow_patterns, revision))
        return str(populate_hf_cache(tmp_path / "hub", repo_id, sae_dir, subfolder=TINY_HOOK))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = load_sae(f"{REPO}:{TINY_HOOK}@abc", device="cpu")
    assert calls == [(REPO, [f"{TINY_HOOK}/*"], "abc")]
    _assert_same_sae(loaded.sae, tiny_sae)


# --- bad input -------------------------------------------------------------------------------


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(SAELoadError, match="does not exist") as err:
        load_sae(str(tmp_path / "nowhere"))
    assert constants.ENV_SAE in str(err.value)


def test_hub_id_offline_and_uncached_points_to_default(tmp_path, monkeypatch):
    use_hf_cache(monkeypatch, tmp_path / "empty", offline=True)
    with pytest.raises(SAELoadError, match="HF_HUB_OFFLINE=1") as err:
        load_sae(f"{REPO}:{TINY_HOOK}")
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message
    assert "embedded default" in message and constants.ENV_SAE in message and constants.ENV_MODEL in message


def test_hub_unreachable_uses_cache_else_says_so(tmp_path, monkeypatch, sae_dir, tiny_sae):
    # No HF_HUB_OFFLINE, but no network either: the cached SAE still loads; an uncached one fails clearly.
    populate_hf_cache(tmp_path / "hub", REPO, sae_dir, subfolder=TINY_HOOK)
    use_hf_cache(monkeypatch, tmp_path / "hub", offline=False)
    make_hub_unreachable(monkeypatch)
    _assert_same_sae(load_sae(f"{REPO}:{TINY_HOOK}", device="cpu").sae, tiny_sae)
    with pytest.raises(SAELoadError, match="the Hub cannot be reached") as err:
        load_sae("someone/other-saes:sae")
    assert "embedded default" in str(err.value)


def test_hub_id_for_uncached_folder_of_cached_repo_offline(tmp_path, monkeypatch, sae_dir):
    populate_hf_cache(tmp_path / "hub", REPO, sae_dir, subfolder=TINY_HOOK)
    use_hf_cache(monkeypatch, tmp_path / "hub", offline=True)
    with pytest.raises(SAELoadError, match="not in the local Hugging Face cache"):
        load_sae(f"{REPO}:blocks.0.hook_mlp_out")


class _Bomb:
    """Unpickling this creates the file it names: proof that a loader unpickled something."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("keep_cfg", [True, False])
def test_pickle_only_folder_is_refused_unread(tmp_path, sae_dir, keep_cfg):
    (sae_dir / constants.SAE_WEIGHTS_FILENAME).unlink()
    if not keep_cfg:
        (sae_dir / constants.SAE_CFG_FILENAME).unlink()
    marker = tmp_path / "unpickled"
    (sae_dir / "sae_weights.pt").write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(SAELoadError, match="pickle checkpoints \\(sae_weights.pt\\).*refused"):
        load_sae(str(sae_dir))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garble_header"])
@pytest.mark.parametrize("filename", [constants.SAE_WEIGHTS_FILENAME, constants.SPARSITY_FILENAME])
def test_damaged_safetensors_is_a_clear_error(sae_dir, damage, filename):
    path = sae_dir / filename
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 16 + data[16:])
    with pytest.raises(SAELoadError, match=f"{filename} is truncated or corrupted"):
        load_sae(str(sae_dir))


def test_missing_or_invalid_cfg_is_a_clear_error(sae_dir):
    cfg_path = sae_dir / constants.SAE_CFG_FILENAME
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text("{not json")
    with pytest.raises(SAELoadError, match="not valid JSON"):
        load_sae(str(sae_dir))
    cfg_path.write_text(json.dumps({**cfg, "d_in": "wide"}))
    with pytest.raises(SAELoadError, match="no valid 'd_in'"):
        load_sae(str(sae_dir))
    cfg_path.unlink()
    with pytest.raises(SAELoadError, match="no cfg.json: it is not an SAE in SAELens's layout"):
        load_sae(str(sae_dir))


def test_cfg_that_does_not_fit_the_weights_is_a_clear_error(sae_dir):
    cfg_path = sae_dir / constants.SAE_CFG_FILENAME
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "d_sae": cfg["d_sae"] * 2}))
    with pytest.raises(SAELoadError, match="do not fit together"):
        load_sae(str(sae_dir))


# --- SAE vs model ----------------------------------------------------------------------------


def _sae(d_in, hook_name, **metadata):
    return JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=16, metadata=SAEMetadata(hook_name=hook_name, **metadata)))


def test_matching_sae_passes(tiny_model, tiny_sae):
    check_sae_matches_model(tiny_sae, tiny_model)


def test_hook_the_model_lacks_names_it_and_similar_hooks(tiny_model):
    with pytest.raises(CompatibilityError) as err:
        check_sae_matches_model(_sae(32, "blocks.7.hook_mlp_out"), tiny_model)
    message = str(err.value)
    assert "'blocks.7.hook_mlp_out'" in message and "2 layers" in message
    assert "blocks.1.hook_mlp_out" in message  # a valid neighbour is suggested


def test_d_in_mismatch_names_both_widths(tiny_model):
    with pytest.raises(CompatibilityError) as err:
        check_sae_matches_model(_sae(48, TINY_HOOK), tiny_model)
    assert "d_in is 48" in str(err.value) and "width 32" in str(err.value)


def test_head_index_the_model_lacks_is_a_clear_error(tiny_model):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16, metadata=SAEMetadata(hook_name="blocks.1.attn.hook_z", hook_head_index=9)))
    with pytest.raises(CompatibilityError, match=r"head 9 of 'blocks.1.attn.hook_z'.*heads 0 to 3"):
        check_sae_matches_model(sae, tiny_model)


def test_hook_width_against_cache_shapes(tiny_model):
    tokens = torch.zeros((1, 3), dtype=torch.long)
    _, cache = tiny_model.run_with_cache(tokens)
    for name in ["blocks.0.hook_resid_pre", "blocks.1.mlp.hook_post", "blocks.0.attn.hook_z"]:
        shape = cache[name].shape
        expected = shape[-1] if len(shape) == 3 else shape[-2] * shape[-1]
        assert hook_width(tiny_model, name) == expected
    assert hook_width(tiny_model, "blocks.1.mlp.hook_post") == 64
    assert hook_width(tiny_model, "blocks.0.attn.hook_z") == 4 * 8  # heads flattened, as SAELens reshapes
    assert hook_width(tiny_model, "blocks.0.attn.hook_z", head_index=1) == 8
    check_sae_matches_model(_sae(32, "blocks.0.attn.hook_z"), tiny_model)
