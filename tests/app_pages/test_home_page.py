from streamlit.testing.v1 import AppTest

from sae_lib.constants import REPO_ROOT


def test_home_page_shows_what_is_loaded(demo_paths, monkeypatch):
    monkeypatch.setenv("LATENT_LAB_DEMO_DIR", str(demo_paths.root))
    monkeypatch.delenv("LATENT_LAB_MODEL", raising=False)
    monkeypatch.delenv("LATENT_LAB_SAE", raising=False)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Latent Lab"
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert demo_paths.manifest["hook_name"] in sidebar and "1,024" in sidebar
    assert "loaded" in sidebar  # the latent index ships with the demo
    assert "**Generation** Hugging Face" in sidebar and "eager" in sidebar  # the engine generates, not TransformerLens
    assert not at.info  # no fallback notice: the demo's architecture is the engine's
    # The page names the model as the sidebar does (its source's public name, not TransformerLens's
    # model_name, which for a folder is just the folder's name: "model").
    reads = next(m.value for m in at.main.markdown if m.value.startswith("The SAE reads"))
    assert "of **embedded demo \\(model\\)**" in reads and "**Model** embedded demo \\(model\\)" in sidebar
