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


def test_toy_limits_set_below_the_defaults_bound_them_instead_of_failing(monkeypatch):
    """An operator may lower LATENT_LAB_MAX_TOY_* below the page's defaults (1,500 steps, 10 levels,
    5 features): the page opens with defaults within them, not Streamlit's error box."""
    import dataclasses

    from sae_lib import limits, toy_model, toy_sae

    low = dataclasses.replace(limits.LIMITS, max_toy_steps=1000, max_toy_levels=8, max_toy_features=4)
    for module in (limits, toy_model, toy_sae):
        monkeypatch.setattr(module, "LIMITS", low)
    assert toy_model.ToyConfig.within_limits() == toy_model.ToyConfig(n_features=4, n_hidden=2, n_levels=8, steps=1000)
    assert toy_sae.ToySAEConfig.within_limits() == toy_sae.ToySAEConfig(steps=400, d_sae=10)
    at = _theory_page()
    assert not at.exception and not at.error
    assert at.slider(key="toy_n_features").value == 4 and at.slider(key="toy_n_features").max == 4


@pytest.mark.slow
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
    monkeypatch.setattr(lab_ui, "train_toy", lambda cfg, progress=None: calls.append(cfg) or real(cfg, progress))
    first = ToyConfig(steps=20, n_levels=2, seed=424242)  # seeds no other test uses: a cold cache
    other = ToyConfig(steps=20, n_levels=2, seed=424243)
    a = lab_ui.toy_sweep(first)
    lab_ui.toy_sweep(other)
    back = lab_ui.toy_sweep(first)  # the slider moved back: served from the cache, not retrained
    assert calls == [first, other]
    assert back.config == first
    assert (back.W == a.W).all()


# --- a hostile first visit (issue 14) ------------------------------------------------------------------

import json  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402


def _chart(at: AppTest, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith(key)).proto.spec)


def _title_lines(fig: dict) -> list[str]:
    """The title as it is drawn: lines split at <br>, Plotly's tags dropped."""
    text = fig["layout"]["title"]["text"]
    return [re.sub(r"<[^>]+>", "", line) for line in text.split("<br>")]


def test_theory_figures_titles_fit_and_read_as_text():
    at = _theory_page()
    heat, bars = _chart(at, "toy_gram"), _chart(at, "toy_bars")
    # Half a page wide (about 600 px at Plotly's 17 px title font): no title line longer than 60 characters.
    for fig in (heat, bars):
        assert all(len(line) <= 60 for line in _title_lines(fig)), _title_lines(fig)
    # No TeX source in a title Plotly cannot typeset; its own <sub> tags instead.
    bar_title = bars["layout"]["title"]["text"]
    assert "_{" not in bar_title and "W_i" not in bar_title and "<sub>j≠i</sub>" in bar_title
    # The "represented" label sits above the plotting area, where no bar is.
    (label,) = [a for a in bars["layout"]["annotations"] if "represented" in a["text"]]
    assert label["yref"] == "paper" and label["y"] >= 1 and label["yanchor"] == "bottom"


def test_theory_seed_out_of_range_says_so():
    at = _theory_page()
    at.number_input(key="toy_seed").set_value(2**31).run()
    assert not at.exception
    assert any(f"{2**31 - 1:,}" in e.value.replace("\\", "") for e in at.error)


def test_toy_training_runs_one_at_a_time_in_a_visible_queue(monkeypatch):
    """Two visitors asking for different settings at once: the second waits, is told how many runs are
    ahead, and trains only when the first is done."""
    import lab_ui
    from sae_lib.model_queue import named_queue
    from sae_lib.toy_model import ToyConfig

    queue = named_queue(lab_ui.TOY_QUEUE)
    first_started, release = threading.Event(), threading.Event()
    running: list[int] = []
    overlaps: list[int] = []
    waits: list[int] = []

    def train(cfg, progress=None):
        running.append(cfg.seed)
        overlaps.append(len(running))
        if cfg.seed == 515151:
            first_started.set()
            assert release.wait(30)
        running.remove(cfg.seed)
        return cfg.seed

    monkeypatch.setattr(lab_ui, "train_toy", train)
    real_slot = queue.slot

    def slot(on_wait=None):
        return real_slot(lambda ahead: waits.append(ahead) or (on_wait and on_wait(ahead)))

    monkeypatch.setattr(queue, "slot", slot)
    results = {}
    a = threading.Thread(target=lambda: results.setdefault("a", lab_ui.toy_sweep(ToyConfig(seed=515151))))
    b = threading.Thread(target=lambda: results.setdefault("b", lab_ui.toy_sweep(ToyConfig(seed=515152))))
    a.start()
    assert first_started.wait(30)
    b.start()
    for _ in range(200):  # b reaches the queue and reports its place
        if waits:
            break
        threading.Event().wait(0.02)
    assert waits and waits[0] == 1 and "b" not in results
    release.set()
    a.join(30)
    b.join(30)
    assert results == {"a": 515151, "b": 515152}
    assert overlaps == [1, 1]  # never two trainings at once
    assert queue.ahead_of_new_arrival() == 0


def test_the_progress_bar_states_the_measured_expected_time():
    import lab_ui
    from sae_lib.toy_model import TrainingProgress

    text = lab_ui.progress_text("Training the toy models", TrainingProgress(step=150, total=1500, elapsed_s=0.9))
    assert "step 150 of 1,500" in text and "about 8 s left" in text and "expected to take 9 s" in text
    assert "few seconds" not in text


def test_visitors_queued_with_the_same_settings_train_them_once(monkeypatch):
    """Ten visitors opening the Theory page at once ask for the same (default) sweep: the first trains it,
    the others wait and reuse it. The result is cached before the slot is released, so the next in line
    never finds the slot free and the cache still empty (a thread switch there retrained it)."""
    import threading
    import time

    import lab_ui
    from sae_lib.toy_model import ToyConfig

    trained = []

    def train(cfg, progress=None):
        trained.append(cfg.seed)
        return cfg.seed

    monkeypatch.setattr(lab_ui, "train_toy", train)
    real_put = lab_ui._ResultCache.put

    def slow_put(self, key, value):  # the thread switch that lets the next visitor in first
        time.sleep(0.05)
        real_put(self, key, value)

    monkeypatch.setattr(lab_ui._ResultCache, "put", slow_put)
    barrier = threading.Barrier(4)
    results = []

    def visitor():
        barrier.wait()
        results.append(lab_ui.toy_sweep(ToyConfig(seed=727272)))

    threads = [threading.Thread(target=visitor) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [727272] * 4
    assert trained == [727272]
