"""The workspace: env-configured pair, the embedded default, and the visible fallback."""

from pathlib import Path

import pytest

from sae_lib import constants
from sae_lib.errors import LatentLabError
from sae_lib.workspace import load_workspace, start_warm_up


def test_demo_workspace_describes_itself(demo_workspace, demo_paths):
    info = demo_workspace.describe()
    assert info["hook"] == demo_paths.manifest["hook_name"]
    assert info["d_in"] == demo_workspace.model.cfg.d_model
    assert info["d_sae"] == demo_paths.manifest["config"]["d_sae"]
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    assert info["index"] == "loaded" and demo_workspace.fallback_reason is None
    assert info["engine"] == "Hugging Face (sdpa, eager)" and demo_workspace.engine_notice is None
    assert demo_workspace.warm_up is None and start_warm_up(demo_workspace) is None  # nothing compiles on a CPU


def test_a_compiling_engine_is_warmed_up_in_the_background(demo_paths, monkeypatch):
    """With compiled decoding on (as on a GPU), start_warm_up (the app calls it after loading) returns at
    once; its thread compiles through the model's queue and leaves it free. Loading alone starts nothing
    (scripts and benches time their own first calls)."""
    import torch

    from sae_lib import engine
    from sae_lib.model_queue import queue_for

    compiles = []
    monkeypatch.setattr(engine, "_compile_wanted", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda fn, **k: compiles.append(1) or fn)  # the graphs need a GPU
    ws = load_workspace(str(demo_paths.model), str(demo_paths.sae), device="cpu", dtype="float32", fallback=False)
    assert ws.warm_up is None
    assert start_warm_up(ws) is ws.warm_up and ws.warm_up.name == "latent-lab-warm-up"
    ws.warm_up.join(timeout=120)
    assert not ws.warm_up.is_alive() and compiles == [1]
    assert engine.engine_for(ws.model).compile_failed is None and queue_for(ws.model).ahead_of_new_arrival() == 0


def test_unsupported_architecture_is_served_by_transformerlens_with_a_notice(demo_paths, monkeypatch):
    from sae_lib import engine

    monkeypatch.setattr(engine, "SUPPORTED_ARCHITECTURES", ("OtherForCausalLM",))
    ws = load_workspace(str(demo_paths.model), str(demo_paths.sae), device="cpu", dtype="float32", fallback=False)
    assert ws.describe()["engine"] == "TransformerLens"
    assert "Qwen3ForCausalLM" in ws.engine_notice and "TransformerLens" in ws.engine_notice


def test_missing_configured_model_falls_back_to_demo_with_reason(demo_paths, monkeypatch, tmp_path):
    monkeypatch.setenv(constants.ENV_DEMO_DIR, str(demo_paths.root))
    missing = tmp_path / "no-such-model"
    ws = load_workspace(str(missing), str(demo_paths.sae))
    assert ws.model_source == str(demo_paths.model)
    assert ws.fallback_reason and str(missing) in ws.fallback_reason
    assert constants.ENV_MODEL in ws.fallback_reason  # says what to change


def test_without_fallback_the_error_propagates(demo_paths, tmp_path):
    with pytest.raises(LatentLabError, match="no-such-sae"):
        load_workspace(str(demo_paths.model), str(tmp_path / "no-such-sae"), fallback=False)


def test_half_configured_pair_is_explained(demo_paths, monkeypatch):
    monkeypatch.setenv(constants.ENV_DEMO_DIR, str(demo_paths.root))
    monkeypatch.delenv(constants.ENV_SAE, raising=False)
    monkeypatch.setenv(constants.ENV_MODEL, str(demo_paths.model))
    ws = load_workspace()
    assert constants.ENV_SAE in ws.fallback_reason and "together" in ws.fallback_reason


def test_private_hub_sae_without_token_falls_back_with_a_clear_notice(demo_paths, monkeypatch):
    """A Space started without HF_TOKEN for a private repo: the Hub answers 401 (as 'not found')."""
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def unauthorized(repo_id, **kwargs):  # only the network call is replaced
        request = httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
        raise RepositoryNotFoundError("401 Client Error", response=httpx.Response(401, request=request))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unauthorized)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv(constants.ENV_DEMO_DIR, str(demo_paths.root))
    ws = load_workspace(str(demo_paths.model), "me/private-saes:blocks.2.hook_mlp_out")
    assert ws.sae_source == str(demo_paths.sae)  # the embedded default is serving
    assert "me/private-saes" in ws.fallback_reason and "HF_TOKEN" in ws.fallback_reason
    assert "private" in ws.fallback_reason and constants.ENV_SAE in ws.fallback_reason


def test_when_neither_the_configured_pair_nor_the_demo_loads_both_reasons_are_said(monkeypatch, tmp_path):
    """A configured model that fails and a demo that cannot be built (a read-only image, a full disk):
    one message with both reasons, the configured pair's first, not the demo's alone or a traceback."""
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    monkeypatch.setenv(constants.ENV_DEMO_DIR, str(a_file / "demo"))  # cannot be created
    with pytest.raises(LatentLabError) as err:
        load_workspace(str(tmp_path / "no-such-model"), str(tmp_path / "no-such-sae"))
    message = str(err.value)
    assert message.index("no-such-model") < message.index("The embedded demo could not be built")
    assert constants.ENV_DEMO_DIR in message and constants.ENV_MODEL in message


@pytest.mark.parametrize("repo", ["me/my--saes", "me/saes.git"])
def test_a_hub_sae_whose_repo_id_the_hub_refuses_falls_back_with_a_clear_notice(demo_paths, monkeypatch, tmp_path, repo):
    """A typo the Hub's own id rules refuse ('--', '..', '.git'): huggingface_hub raised HFValidationError,
    which no loader caught, so the app showed Streamlit's generic error instead of falling back."""
    from tests.helpers import use_hf_cache

    use_hf_cache(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv(constants.ENV_DEMO_DIR, str(demo_paths.root))
    ws = load_workspace(str(demo_paths.model), f"{repo}:blocks.2.hook_mlp_out")
    assert Path(ws.sae_source).resolve() == demo_paths.sae.resolve()  # the embedded default is serving
    assert f"{repo!r} is not a valid Hub repo id" in ws.fallback_reason and constants.ENV_SAE in ws.fallback_reason
