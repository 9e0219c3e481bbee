"""Every page on any SAE: a registry SAE in Qwen-Scope's layout (from a fake Hub cache, built index in
the app, reused after a restart) and each SAELens architecture, transcoders included."""

import copy

import pytest
import torch
from streamlit.testing.v1 import AppTest

import lab_ui
from sae_lib import index_builds as ib
from sae_lib import latent_index as li
from sae_lib.constants import REPO_ROOT
from sae_lib.packing import pack_texts
from sae_lib.workspace import Workspace, load_workspace
from tests.conftest import TINY_TEXTS
from tests.registry_helpers import fake_scope_cache, use_registry
from tests.test_architectures import ARCHS, build

BROWSER, STEERING = "app_pages/latent_browser.py", "app_pages/steering.py"


def open_page(page: str, query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(page)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def generate(at: AppTest, latent: int) -> AppTest:
    at.text_input(key="steer_latents").input(str(latent)).run()
    at.slider(key="steer_samples").set_value(2)
    at.slider(key="steer_tokens").set_value(5)
    at.button(key="steer_go").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    return at


@pytest.fixture
def registry_ws(monkeypatch, tmp_path, tiny_hf_qwen3_dir):
    """LATENT_LAB_MODEL / LATENT_LAB_SAE naming a registry SAE, served from a fake Hub cache."""
    entries = fake_scope_cache(
        monkeypatch, tmp_path / "hub", 64, [1], model=str(tiny_hf_qwen3_dir),
        neuronpedia={"layer1": "tiny-qwen3/1-test-res"},
    )
    use_registry(monkeypatch, entries)
    monkeypatch.setenv("LATENT_LAB_MODEL", str(tiny_hf_qwen3_dir))
    monkeypatch.setenv("LATENT_LAB_SAE", "sae-lens:test-scope/layer1")
    monkeypatch.setattr(ib, "BUILDS", ib.BuildRegistry())
    ws = load_workspace(device="cpu", dtype="float32", fallback=False)
    monkeypatch.setattr(lab_ui, "get_workspace", lambda: ws)
    return ws


@pytest.mark.slow
def test_registry_sae_in_every_page_with_an_index_built_in_the_app(registry_ws):
    ws = registry_ws
    assert ws.index is None and ws.sae_source == "sae-lens:test-scope/layer1"

    def home_says_no_index() -> bool:
        home = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
        home.run()
        return any("No latent index ships with this SAE" in i.value for i in home.info)

    assert home_says_no_index()
    at = open_page(BROWSER)
    assert at.radio(key="lb_view").options == ["What fires here"]
    assert any("Reads and writes `blocks.1.hook_resid_post`" in c.value for c in at.caption)
    at.text_area(key="lb_prompt").input("The rocket flew past the moon.")
    at.button[0].click().run()
    assert not at.exception and len(at.dataframe) == 1

    # Build an index from the demo corpus; every visitor's page shows it when done.
    at.select_slider(key="ib_tokens").set_value(10_000).run()
    assert any("32,000 tokens/s" in c.value for c in at.caption)
    at.button(key="ib_start").click().run()
    assert not at.exception
    build = ib.BUILDS.get(ws.sae)
    assert build is not None and build.finished.wait(300) and build.status().state == "done"
    assert not home_says_no_index()  # Home agrees with the sidebar: an index was built in the app
    other_visitor = open_page(BROWSER, {"latent": "5"})
    assert other_visitor.radio(key="lb_view").value == "One latent"
    assert other_visitor.metric[1].value == f"{float(build.index.max_act[5]):.3f}"
    links = other_visitor.get("link_button")
    assert any("neuronpedia.org/tiny-qwen3/1-test-res/5" in str(b.proto) for b in links)

    # A restart (a fresh workspace) finds the index in the persistent cache.
    again = load_workspace(device="cpu", dtype="float32", fallback=False)
    assert again.index is not None and again.index.meta.build_id == build.index.meta.build_id

    at = generate(open_page(STEERING), 5)
    assert any("blocks.1.hook_resid_post" in m.value for m in at.markdown)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_in_every_page(arch, tiny_model, monkeypatch, tmp_path):
    model = copy.deepcopy(tiny_model)
    sae = build(arch, tmp_path)
    from sae_lib.sae import check_sae_matches_model

    check_sae_matches_model(sae, model)
    tokens = pack_texts(TINY_TEXTS, model.tokenizer, context_size=16, n_seq=20).tokens
    index = li.build_index(model, sae, tokens, li.IndexConfig(n_bins=16, top_k=3, n_lower_examples=2, window=8, window_before=4))
    ws = Workspace(model=model, sae=sae, model_source="tiny", sae_source=arch, sae_dir=None, index=index)
    monkeypatch.setattr(lab_ui, "get_workspace", lambda: ws)
    latent = int(index.count.argmax())

    at = open_page(BROWSER)
    assert at.radio(key="lb_view").value == "Overview" and len(at.dataframe[0].value) == int((~index.dead).sum())
    role = " ".join(c.value for c in at.caption)
    if arch == "transcoder":
        assert "reads `blocks.1.mlp.hook_in`" in role and "writes `blocks.1.hook_mlp_out`" in role
    else:
        assert f"Reads and writes `{sae.cfg.metadata.hook_name}`" in role
    at = open_page(BROWSER, {"latent": str(latent)})
    assert at.metric[1].value == f"{float(index.max_act[latent]):.3f}"
    at.radio(key="lb_view").set_value("What fires here").run()
    at.text_area(key="lb_prompt").input("The ship sailed across the ocean.")
    at.button[0].click().run()
    assert not at.exception and not at.error

    at = generate(open_page(STEERING, {"latent": str(latent), "max_act": "1.5"}), latent)
    assert any(sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name in m.value for m in at.markdown)
    assert all(not h.fwd_hooks for h in model.hook_dict.values())
    assert torch.is_tensor(index.max_act)


def test_unreachable_dataset_in_the_page_offers_the_alternatives_as_text(tiny_model, tiny_sae, monkeypatch, tmp_path):
    from tests.helpers import make_hub_unreachable, use_hf_cache

    use_hf_cache(monkeypatch, tmp_path / "hub", offline=True)
    make_hub_unreachable(monkeypatch)
    monkeypatch.setattr(ib, "BUILDS", ib.BuildRegistry())
    ws = Workspace(model=tiny_model, sae=tiny_sae, model_source="tiny", sae_source="tiny", sae_dir=None)
    monkeypatch.setattr(lab_ui, "get_workspace", lambda: ws)
    at = open_page(BROWSER)
    at.radio(key="ib_kind").set_value("Hub dataset").run()
    at.text_input(key="ib_dataset").input("[click](https://evil.example)/data").run()
    at.button(key="ib_start").click().run()
    build = ib.BUILDS.get(tiny_sae)
    assert build.finished.wait(120) and build.status().state == "failed"
    at.run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    # The name stays text: Markdown punctuation escaped, and as_text's zero-width space inside "//" keeps
    # Streamlit from auto-linking the URL.
    assert "demo corpus or upload" in shown and "\\[click\\]\\(https\\:\\/\u200b\\/evil" in shown


def test_qwen_scope_layout_at_the_demo_width_in_every_page(demo_paths, monkeypatch, tmp_path):
    """The issue's fixture: a Qwen-Scope-layout repo (``layer2.sae.pt``: W_enc, W_dec, b_enc, b_dec) at the
    embedded model's width, named by LATENT_LAB_MODEL / LATENT_LAB_SAE and loaded through the registry."""
    import json

    width = json.loads((demo_paths.model / "config.json").read_text())["hidden_size"]
    entries = fake_scope_cache(monkeypatch, tmp_path / "hub", width, [2], model=str(demo_paths.model))
    use_registry(monkeypatch, entries)
    monkeypatch.setenv("LATENT_LAB_MODEL", str(demo_paths.model))
    monkeypatch.setenv("LATENT_LAB_SAE", "sae-lens:test-scope/layer2")
    monkeypatch.setattr(ib, "BUILDS", ib.BuildRegistry())
    ws = load_workspace(device="cpu", dtype="float32", fallback=False)
    assert (ws.sae.cfg.d_in, ws.sae.cfg.d_sae, ws.hook_name) == (width, 1024, "blocks.2.hook_resid_post")
    monkeypatch.setattr(lab_ui, "get_workspace", lambda: ws)
    at = open_page(BROWSER)
    at.text_area(key="lb_prompt").input("The ship sailed across the ocean.")
    at.button[0].click().run()
    assert not at.exception and len(at.dataframe) == 1
    generate(open_page(STEERING), 3)
