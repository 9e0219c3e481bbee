"""The Steering playground page, driven through Streamlit's AppTest on the tiny model and SAE."""

from types import SimpleNamespace

import pytest
import torch
from streamlit.testing.v1 import AppTest

import lab_ui
from sae_lib import steering
from sae_lib.constants import REPO_ROOT
from sae_lib.workspace import Workspace
from tests.test_steering import assert_clean

TIMEOUT = 60


@pytest.fixture
def tiny_workspace(tiny_model, tiny_sae, monkeypatch):
    """The page's shared workspace, made of the tiny fixtures; index max_act[i] = i / 10."""
    index = SimpleNamespace(max_act=torch.arange(96, dtype=torch.float32) / 10)
    ws = Workspace(model=tiny_model, sae=tiny_sae, model_source="tiny", sae_source="tiny", sae_dir=None, index=index)
    monkeypatch.setattr(lab_ui, "get_workspace", lambda: ws)
    return ws


def open_page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/steering.py")
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    return at


def fast(at: AppTest) -> AppTest:
    at.slider(key="steer_samples").set_value(2)
    at.slider(key="steer_tokens").set_value(6)
    return at


def table(at: AppTest) -> str:
    return "".join(m.value for m in at.markdown if "outputs-table" in m.value)


def test_latent_from_url_and_generation(tiny_workspace):
    at = open_page({"latent": "5", "max_act": "2.5"})
    assert at.text_input(key="steer_latents").value == "5"
    assert at.number_input(key="steer_max_5").value == 2.5  # the browser's value wins over the index
    fast(at).button(key="steer_go").click().run()
    assert not at.exception and not at.error
    html = table(at)
    assert "Normal output" in html and html.count("<tr>") == 1 + 1 + 2  # header, normal, 2 steered
    assert steering.WRITEUP_PROMPT.split("?")[0] in html
    assert_clean(tiny_workspace.model)


def test_typed_latents_use_the_index_and_all_methods(tiny_workspace):
    at = open_page()
    at.text_input(key="steer_latents").input("7, 12").run()
    assert at.number_input(key="steer_max_7").value == pytest.approx(0.7)  # from ws.index.max_act
    at.selectbox(key="steer_method_12").set_value("clamp activation").run()
    assert at.slider(key="steer_coeff_12").value == 10.0
    assert at.slider(key="steer_hi_7").value == 10.0 and at.slider(key="steer_lo_7").value == 5.0
    fast(at).button(key="steer_go").click().run()
    assert not at.exception and not at.error
    assert "7, 12" in table(at)


def test_no_index_means_a_note_and_one(tiny_workspace):
    tiny_workspace.index = None
    at = open_page()
    at.text_input(key="steer_latents").input("3").run()
    assert at.number_input(key="steer_max_3").value == 1.0
    assert any("No latent index" in c.value for c in at.caption)


def test_bad_input_shows_errors(tiny_workspace):
    at = open_page()
    at.text_input(key="steer_latents").input("500").run()
    assert "does not exist" in at.error[0].value
    assert at.button(key="steer_go").disabled
    at.text_input(key="steer_latents").input("4").run()
    at.text_area(key="steer_prompt").input("   ").run()
    fast(at).button(key="steer_go").click().run()
    assert not at.exception
    assert "empty" in at.error[0].value
    at.text_area(key="steer_prompt").input("A prompt").run()
    at.number_input(key="steer_max_4").set_value(0.0).run()
    assert "max activation" in at.error[0].value


def test_failure_midway_shows_error_and_leaves_model_clean(tiny_workspace, monkeypatch):
    calls = {"n": 0}
    original = steering.SteeringHook.__call__

    def flaky(self, act, hook=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated device failure")
        return original(self, act, hook)

    monkeypatch.setattr(steering.SteeringHook, "__call__", flaky)
    at = open_page({"latent": "2"})
    fast(at).button(key="steer_go").click().run()
    assert not at.exception
    assert "part-way" in at.error[0].value
    assert not table(at)
    assert_clean(tiny_workspace.model)


def test_dose_response_sweep(tiny_workspace):
    at = open_page({"latent": "9"})
    at.slider(key="sweep_points").set_value(3)
    at.slider(key="sweep_tokens").set_value(4)
    at.button(key="sweep_go").click().run()
    assert not at.exception and not at.error
    chart = at.get("plotly_chart")[0]
    assert "KL, next token" in chart.proto.spec and "activation, latent 9" in chart.proto.spec
    assert len(at.dataframe[0].value) == 3
    assert_clean(tiny_workspace.model)
