"""Home's guided tour on the embedded demo, and the Steering page's story prompt there."""

from streamlit.testing.v1 import AppTest

from sae_lib import steering
from sae_lib.constants import REPO_ROOT
from sae_lib.demo.corpus import TOPICS
from sae_lib.demo.guide import DEMO_PROMPT


def _demo_env(monkeypatch, demo_paths):
    monkeypatch.setenv("LATENT_LAB_DEMO_DIR", str(demo_paths.root))
    monkeypatch.delenv("LATENT_LAB_MODEL", raising=False)
    monkeypatch.delenv("LATENT_LAB_SAE", raising=False)


def test_home_lists_the_ten_topics_with_links(demo_paths, monkeypatch):
    _demo_env(monkeypatch, demo_paths)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300).run()
    assert not at.exception
    # AppTest keeps no key on a dataframe without selections: find the guide by its columns.
    guide = next(d.value for d in at.dataframe if "topic" in d.value.columns)
    assert sorted(guide["topic"]) == sorted(TOPICS)
    assert all(b == f"/latent_browser?latent={lat}" for b, lat in zip(guide["browse"], guide["latent"]))
    assert all(s.startswith(f"/steering?latent={lat}&max_act=") for s, lat in zip(guide["steer"], guide["latent"]))
    assert (guide["label"].str.len() > 0).all()
    assert any("cannot write explanations" in m.value for m in at.markdown)


def test_steering_on_the_demo_starts_from_a_story(demo_paths, monkeypatch):
    _demo_env(monkeypatch, demo_paths)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("app_pages/steering.py").run()
    assert not at.exception
    assert at.text_area(key="steer_prompt").value == DEMO_PROMPT
    at.button(key="steer_writeup_prompt").click().run()
    assert at.text_area(key="steer_prompt").value == steering.WRITEUP_PROMPT
