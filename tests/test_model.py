"""sae_lib.model: a HookedTransformer from a local HF folder or a name, equal to Hugging Face's model."""

import pickle
import shutil

import pytest
import torch
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading
from transformers import AutoModelForCausalLM

from sae_lib.errors import InputError, ModelLoadError
from sae_lib.model import load_model, resolve_dtype
from tests.helpers import populate_hf_cache, use_hf_cache

TEXT = "The ship sailed across the ocean while the rocket flew past the moon."


@pytest.fixture(scope="module")
def loaded(tiny_hf_qwen3_dir, device):
    # float32 on the test device: the comparisons below are at 1e-4 (CUDA would default to bfloat16).
    return load_model(str(tiny_hf_qwen3_dir), device=device, dtype="float32")


@pytest.fixture(scope="module")
def hf_reference(tiny_hf_qwen3_dir, device):
    return AutoModelForCausalLM.from_pretrained(tiny_hf_qwen3_dir, dtype=torch.float32).to(device).eval()


def _plain_transformerlens(folder) -> HookedTransformer:
    """TransformerLens's own path with from_pretrained_no_processing flags (it refuses a folder by
    name, so its steps are spelled out): the reference for weight processing."""
    cfg = tl_loading.get_pretrained_model_config(str(folder), device="cpu", dtype=torch.float32)
    state_dict = tl_loading.get_pretrained_state_dict(str(folder), cfg, dtype=torch.float32)
    model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model


def test_local_folder_logits_equal_hugging_face(loaded, hf_reference, device):
    tokens = loaded.to_tokens(TEXT, prepend_bos=False).to(device)  # (1, pos)
    assert tokens.shape[1] > 5
    with torch.no_grad():
        ours = loaded(tokens)  # (1, pos, d_vocab)
        ref = hf_reference(tokens).logits
    assert ours.abs().max() > 1.0  # the fixture's weights give O(1) logits, so 1e-4 is a real bound
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_other_prompt_lengths_match_hugging_face(loaded, hf_reference, device):
    # Other lengths exercise the rotary cache and the causal mask at other sizes.
    texts = ["The band played a loud song.", "She stirred the soup and baked fresh bread in the warm kitchen."]
    for text in texts:
        tokens = loaded.to_tokens(text, prepend_bos=False).to(device)
        with torch.no_grad():
            torch.testing.assert_close(loaded(tokens)[0, -1], hf_reference(tokens).logits[0, -1], atol=1e-4, rtol=0)


def test_weights_equal_transformerlens_no_processing(loaded, tiny_hf_qwen3_dir):
    plain = _plain_transformerlens(tiny_hf_qwen3_dir)
    ours, ref = loaded.state_dict(), plain.state_dict()
    assert ours.keys() == ref.keys()
    for key in ref:
        torch.testing.assert_close(ours[key].cpu(), ref[key], atol=0, rtol=0, msg=key)
    # No folding happened: the RMSNorm gains are still the fixture's (not 1) and still applied.
    assert not torch.allclose(loaded.blocks[0].ln1.w, torch.ones_like(loaded.blocks[0].ln1.w))


def test_loaded_model_is_usable_and_safe(loaded, tiny_hf_qwen3_dir, device):
    assert isinstance(loaded, HookedTransformer)
    assert all(p.device.type == torch.device(device).type and p.dtype == torch.float32 for p in loaded.parameters())
    assert loaded.cfg.trust_remote_code is False
    assert loaded.cfg.n_layers == 2 and loaded.cfg.d_model == 64
    assert "blocks.1.hook_mlp_out" in loaded.hook_dict
    # The tokenizer is the folder's own.
    assert loaded.tokenizer.decode(loaded.to_tokens(TEXT, prepend_bos=False)[0]) == TEXT


def test_dtype_override_and_defaults(tiny_hf_qwen3_dir, loaded):
    model = load_model(str(tiny_hf_qwen3_dir), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    tokens = loaded.to_tokens(TEXT, prepend_bos=False)
    with torch.no_grad():
        low, full = model(tokens).float(), loaded(tokens).cpu()
    # bfloat16 keeps ~3 significant digits: same predictions, logits within a few percent.
    assert (low.argmax(-1) == full.argmax(-1)).float().mean() > 0.9
    assert (low - full).abs().max() < 0.1 * full.abs().max()

    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu")) == torch.float16
    with pytest.raises(InputError, match="Unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_defaults_to_bfloat16(tiny_hf_qwen3_dir):
    model = load_model(str(tiny_hf_qwen3_dir))
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cuda", torch.bfloat16)}
    # One copy on the GPU: the HookedTransformer's weights are views of the engine's (Hugging Face) tensors.
    from sae_lib.engine import engine_for

    hf = {p.untyped_storage().data_ptr() for p in engine_for(model).hf.parameters()}
    assert model.W_U.untyped_storage().data_ptr() in hf and model.blocks[0].attn.W_Q.untyped_storage().data_ptr() in hf


def test_named_model_loads_from_cache_offline(tmp_path, monkeypatch, tiny_hf_qwen3_dir, loaded):
    # A name TransformerLens knows, served from a pre-populated HF cache with the Hub switched off:
    # the path a restarted Space takes. The tiny weights stand in for Qwen3-0.6B's.
    populate_hf_cache(tmp_path / "hub", "Qwen/Qwen3-0.6B", tiny_hf_qwen3_dir)
    use_hf_cache(monkeypatch, tmp_path / "hub", offline=True)
    model = load_model("Qwen/Qwen3-0.6B", device=next(loaded.parameters()).device, dtype="float32")
    assert model.cfg.trust_remote_code is False
    assert model.cfg.model_name == "Qwen3-0.6B"  # as TransformerLens names it, not the snapshot's commit hash
    tokens = loaded.to_tokens(TEXT, prepend_bos=False)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), loaded(tokens), atol=0, rtol=0)
    # TransformerLens's lower-case alias resolves to the same cached snapshot.
    assert load_model("qwen3-0.6b").cfg.d_model == model.cfg.d_model


# --- bad input -------------------------------------------------------------------------------


def _copy(src, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(src, dest)
    return dest


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as err:
        load_model(str(tmp_path / "nowhere"))
    assert "LATENT_LAB_MODEL" in str(err.value)


def test_named_model_offline_and_uncached_points_to_default(tmp_path, monkeypatch):
    use_hf_cache(monkeypatch, tmp_path / "empty-cache", offline=True)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE=1") as err:
        load_model("Qwen/Qwen3-8B")
    assert "embedded default" in str(err.value) and "LATENT_LAB_MODEL" in str(err.value)


@pytest.mark.parametrize("source", ["nobody/no-such-model", "no-such-alias", "relative/missing"])
def test_unknown_name_is_a_clear_error(source):
    with pytest.raises(ModelLoadError, match="neither an existing local folder nor a model name"):
        load_model(source)


class _Bomb:
    """Unpickling this creates the file it names: proof that a loader unpickled something."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_only_folder_is_refused_unread(tmp_path, tiny_hf_qwen3_dir):
    folder = _copy(tiny_hf_qwen3_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(ModelLoadError, match="pickle") as err:
        load_model(str(folder))
    assert "pytorch_model.bin" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garble_header"])
def test_damaged_safetensors_is_a_clear_error(tmp_path, tiny_hf_qwen3_dir, damage):
    folder = _copy(tiny_hf_qwen3_dir, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 16 + data[16:])
    with pytest.raises(ModelLoadError, match="truncated or corrupted"):
        load_model(str(folder))


def test_missing_config_is_a_clear_error(tmp_path, tiny_hf_qwen3_dir):
    folder = _copy(tiny_hf_qwen3_dir, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(folder))


def test_missing_shard_is_a_clear_error(tmp_path, tiny_hf_qwen3_dir):
    folder = _copy(tiny_hf_qwen3_dir, tmp_path)
    (folder / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    with pytest.raises(ModelLoadError, match="missing weight shards model-00002"):
        load_model(str(folder))
