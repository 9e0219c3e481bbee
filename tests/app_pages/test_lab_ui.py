"""The Streamlit glue's safety helpers: visitor text as text, names instead of server paths, config."""

import tomllib

import pytest
from streamlit import config as st_config

import lab_ui
from sae_lib.constants import REPO_ROOT
from sae_lib.redact import public_name, redact_paths
from tests.app_pages.markdown_check import INJECTIONS, assert_shows_as_text, render, visible_text

AWKWARD = [
    *INJECTIONS,
    "a\\b \\[x\\](y)",  # backslashes that would undo an escape
    "1. list\n- item\n> quote\n---\n| a | b |\n|---|---|",
    "&lt;b&gt; &amp; &#x3C;script&#x3E;",  # entities must stay as typed
    "שלום 🔬 :smile: ~~strike~~ <https://evil.example>",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_as_text_shows_exactly_the_characters(text):
    md = lab_ui.as_text(text)
    assert assert_shows_as_text(md, text)
    assert visible_text(md) == " ".join(text.split()) or visible_text(md).split() == text.split()


def test_as_text_is_what_the_unescaped_markdown_would_have_broken():
    payload = "![x](https://evil.example/pixel.png)"
    assert "<img" in render(payload)  # without the helper: an image every visitor's browser fetches
    assert "<img" not in render(lab_ui.as_text(payload))


@pytest.mark.parametrize(
    "source, name",
    [
        ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B"),
        ("me/qwen3-8b-saes:blocks.28.hook_mlp_out@v2", "me/qwen3-8b-saes:blocks.28.hook_mlp_out@v2"),
        ("/srv/models/my-qwen", "my-qwen"),
        ("/srv/models/my-qwen/", "my-qwen"),
    ],
)
def test_sources_are_named_without_server_folders(source, name):
    assert public_name(source) == name


def test_the_embedded_demo_is_named_as_such(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENT_LAB_DEMO_DIR", str(tmp_path / "demo"))
    assert public_name(str(tmp_path / "demo" / "sae")) == "embedded demo (sae)"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("No model at /srv/app/data/demo.partial-5912/model: build it.", "No model at …/model: build it."),
        ("cannot read '/home/op/.cache/huggingface/hub/x/cfg.json'", "cannot read '…/cfg.json'"),
        ("see https://huggingface.co/me/repo and Qwen/Qwen3-8B", "see https://huggingface.co/me/repo and Qwen/Qwen3-8B"),
        ("a / b and 1/2", "a / b and 1/2"),
    ],
)
def test_paths_in_messages_are_cut_to_their_names(text, shown):
    assert redact_paths(text) == shown


def test_the_sidebar_names_what_is_loaded_without_paths(demo_paths, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LATENT_LAB_DEMO_DIR", str(demo_paths.root))
    monkeypatch.delenv("LATENT_LAB_MODEL", raising=False)
    monkeypatch.delenv("LATENT_LAB_SAE", raising=False)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    sidebar = " ".join(visible_text(m.value) for m in at.sidebar.markdown)
    assert "embedded demo (model)" in sidebar and "embedded demo (sae)" in sidebar
    assert str(demo_paths.root) not in sidebar and "/" + demo_paths.root.name not in sidebar
    helps = " ".join(m.help or "" for m in at.metric)
    assert str(demo_paths.root) not in helps and "embedded demo" in helps


def test_uncaught_errors_show_visitors_no_details():
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    value = config["client"]["showErrorDetails"]
    assert value == st_config.ShowErrorDetailsConfigOptions.NONE  # Streamlit 1.67's "none": no message, type or trace
    assert value in {o.value for o in st_config.ShowErrorDetailsConfigOptions}


def test_the_operators_log_gets_info_and_traces(capsys):
    import logging

    logging.getLogger("sae_lib.steering").info("loaded from /srv/models/x")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("latent_lab").exception("Generation failed")
    err = capsys.readouterr().err
    assert "loaded from /srv/models/x" in err  # paths go to the operator's log ...
    assert "Traceback" in err and "ValueError: boom" in err  # ... with the trace
