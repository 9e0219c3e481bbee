"""The Theory page opens from the app's navigation, retrains when a slider moves, and refuses nonsense."""

import pytest
from streamlit.testing.v1 import AppTest

TIMEOUT = 120  # seconds: generous, the machine running tests may be shared


def _theory_page() -> AppTest:
    at = AppTest.from_file("../../app.py", default_timeout=TIMEOUT)
    # Short training and few levels keep the test fast; the paper's result with the defaults is
    # tested in tests/test_toy_model.py. Widgets read these keys on their first run.
    at.session_state["toy_steps"] = 200
    at.session_state["toy_levels"] = 3
    # Switched before the first run so the Home page (which loads the language model) never runs:
    # the page's file name matches its url_path, so navigation finds it.
    at.switch_page("app_pages/theory.py")
    at.run()
    return at


@pytest.mark.slow
def test_theory_page_opens_and_a_slider_retrains():
    at = _theory_page()
    assert not at.exception
    assert at.title[0].value == "Superposition, and why SAEs"
    assert not at.error
    table = at.dataframe[0].value
    assert table["feature probability"].tolist() == [1.0, pytest.approx(0.05**0.5), pytest.approx(0.05)]
    assert table["features represented"].between(0, 5).all()
    assert len(at.get("plotly_chart")) == 5  # arrows, W^T W, norms, SAE cosines, SAE overlay

    at.slider(key="toy_levels").set_value(4).run()
    assert not at.exception
    assert not at.error
    assert len(at.dataframe[0].value) == 4  # retrained with one panel more


def test_theory_page_answers_nonsense_with_a_message():
    at = _theory_page()
    at.number_input(key="toy_n_hidden").set_value(6).run()  # more neurons than the 5 features
    assert not at.exception
    assert "fewer than the features" in at.error[0].value
    at.number_input(key="toy_n_hidden").set_value(2)
    at.select_slider(key="toy_prob_range").set_value((0.2, 0.2)).run()  # an empty range
    assert not at.exception
    assert "range is empty" in at.error[0].value


def test_toy_results_are_cached_per_parameter_set(monkeypatch):
    import lab_ui
    from sae_lib.toy_model import ToyConfig

    calls = []
    real = lab_ui.train_toy
    monkeypatch.setattr(lab_ui, "train_toy", lambda cfg: calls.append(cfg) or real(cfg))
    first = ToyConfig(steps=20, n_levels=2, seed=424242)  # seeds no other test uses: a cold cache
    other = ToyConfig(steps=20, n_levels=2, seed=424243)
    a = lab_ui.toy_sweep(first)
    lab_ui.toy_sweep(other)
    back = lab_ui.toy_sweep(first)  # the slider moved back: served from the cache, not retrained
    assert calls == [first, other]
    assert back.config == first
    assert (back.W == a.W).all()
