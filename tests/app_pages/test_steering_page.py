"""The Steering playground page, driven through Streamlit's AppTest on the tiny model and SAE."""

from types import SimpleNamespace

import pytest
import torch
from streamlit.testing.v1 import AppTest

import lab_ui
from sae_lib import generation, steering
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
    assert not any("outputs-table" in m.value for m in at.markdown)  # never through Markdown
    return "".join(m.value for m in at.html if "outputs-table" in m.value)


def test_latent_from_url_and_generation(tiny_workspace):
    at = open_page({"latent": "5", "max_act": "2.5"})
    assert at.text_input(key="steer_latents").value == "5"
    assert at.number_input(key="steer_max_5").value == 2.5  # the browser's value wins over the index
    fast(at).button(key="steer_go").click().run()
    assert not at.exception and not at.error
    html = table(at)
    assert "Normal output" in html and html.count("<tr>") == 1 + 2  # header, one row per sample
    assert steering.WRITEUP_PROMPT.split("?")[0] in html
    assert_clean(tiny_workspace.model)


def test_a_links_max_act_belongs_to_its_one_latent(tiny_workspace):
    at = open_page({"latent": " 03", "max_act": "2.5"})  # written another way, still latent 3
    assert at.number_input(key="steer_max_3").value == 2.5
    at = open_page({"latent": "3,5", "max_act": "2.5"})  # whose? neither: the index's values, and why
    assert [at.number_input(key=f"steer_max_{i}").value for i in (3, 5)] == [pytest.approx(0.3), pytest.approx(0.5)]
    assert "The link's max_act='2.5' is for one latent, and the link names 2: each uses the latent index's value." in [
        visible_text(c.value) for c in at.caption]  # shown as text (the module's Markdown check, imported below)


def test_typed_latents_use_the_index_and_all_methods(tiny_workspace):
    at = open_page()
    at.text_input(key="steer_latents").input("7, 12").run()
    assert at.number_input(key="steer_max_7").value == pytest.approx(0.7)  # from ws.index.max_act
    at.selectbox(key="steer_method_12").set_value("clamp activation").run()
    assert at.slider(key="steer_coeff_12").value == 10.0
    assert at.slider(key="steer_hi_7").value == 10.0 and at.slider(key="steer_lo_7").value == 5.0
    fast(at).button(key="steer_go").click().run()
    assert not at.exception and not at.error
    assert "latents 7, 12" in table(at)


def test_no_index_means_a_note_and_one(tiny_workspace):
    tiny_workspace.index = None
    at = open_page()
    at.text_input(key="steer_latents").input("3").run()
    assert at.number_input(key="steer_max_3").value == 1.0
    assert any("No latent index" in c.value for c in at.caption)


def test_bad_input_shows_errors(tiny_workspace):
    at = open_page()
    at.text_input(key="steer_latents").input("500").run()
    assert "does not exist" in shown(at)[0]
    assert at.button(key="steer_go").disabled
    at.text_input(key="steer_latents").input("4").run()
    at.text_area(key="steer_prompt").input("   ").run()
    assert not at.exception
    assert "empty" in shown(at)[0]  # said at once, and Generate cannot run it
    assert at.button(key="steer_go").disabled
    at.text_area(key="steer_prompt").input("A prompt").run()
    at.number_input(key="steer_max_4").set_value(0.0).run()
    assert "max activation" in shown(at)[0]


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
    assert "part-way" in shown(at)[0]
    assert not table(at)
    assert_clean(tiny_workspace.model)


def test_a_result_from_earlier_settings_says_what_changed(tiny_workspace):
    """The table and the sweep stay on screen while a visitor moves sliders: they must not pass for
    the new settings' results."""
    at = open_page({"latent": "5"})
    fast(at).slider(key="sweep_points").set_value(2)
    at.slider(key="sweep_tokens").set_value(2)
    at.button(key="steer_go").click().run()
    at.button(key="sweep_go").click().run()
    stale = lambda: [c.value for c in at.caption if "from earlier settings" in c.value]  # noqa: E731
    assert not at.exception and stale() == []
    at.text_area(key="steer_prompt").input("A different prompt").run()
    assert stale() == [f"This {w} is from earlier settings: the prompt changed since. Run it again to see the "
                       "current ones." for w in ("table", "sweep")]
    at.button(key="steer_go").click().run()  # the table is current again; the sweep is not
    at.slider(key="steer_hi_5").set_value(3.0).run()
    assert stale() == [
        "This table is from earlier settings: the latents or their settings changed since. Run it again to see the current ones.",
        "This sweep is from earlier settings: the prompt, the latents or their settings changed since. Run it again to see the current ones.",
    ]
    at.slider(key="sweep_points").set_value(3).run()  # only the sweep's own inputs: the table stays current
    assert len(stale()) == 2 and "the sweep's range, points or tokens" in stale()[1]
    assert_clean(tiny_workspace.model)


def test_dose_response_sweep(tiny_workspace):
    at = open_page({"latent": "9"})
    at.slider(key="sweep_points").set_value(3)
    at.slider(key="sweep_tokens").set_value(4)
    at.button(key="sweep_go").click().run()
    assert not at.exception and not at.error
    chart = at.get("plotly_chart")[0]
    assert "KL, next token" in chart.proto.spec and "latent 9 at the hook, steered" in chart.proto.spec
    assert len(at.dataframe[0].value) == 3
    assert_clean(tiny_workspace.model)


# --- a hostile first visit (issue 14) ------------------------------------------------------------------

import re  # noqa: E402
from html.parser import HTMLParser  # noqa: E402

from streamlit.runtime.scriptrunner_utils.exceptions import StopException  # noqa: E402

from sae_lib import render  # noqa: E402
from sae_lib.limits import LIMITS  # noqa: E402
from tests.app_pages.markdown_check import INJECTIONS, assert_shows_as_text, visible_text  # noqa: E402


def raw(at: AppTest, kind: str = "error") -> list[str]:
    """The Markdown bodies of the page's ``kind`` elements (error, warning, caption, ...)."""
    return [e.value for e in getattr(at, kind)]


def shown(at: AppTest, kind: str = "error") -> list[str]:
    """What a visitor reads in them (the Markdown rendered to text)."""
    return [visible_text(m) for m in raw(at, kind)]


def first_part(payload: str) -> str:
    """The part of a latent list that the message quotes: up to the first space or comma."""
    return re.split(r"[\s,;]+", payload.strip())[0]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_url_latent_is_shown_as_text_never_markdown(tiny_workspace, payload):
    at = open_page({"latent": payload})
    errors = raw(at)
    assert errors and at.button(key="steer_go").disabled
    assert any(assert_shows_as_text(e, first_part(payload)) for e in errors)


@pytest.mark.parametrize("payload", INJECTIONS)
def test_url_max_act_is_shown_as_text_never_markdown(tiny_workspace, payload):
    at = open_page({"latent": "5", "max_act": payload})
    notes = [c for c in raw(at, "caption") if "max_act" in visible_text(c)]
    assert len(notes) == 1 and assert_shows_as_text(notes[0], payload[:40])  # quoted up to 40 characters
    assert at.number_input(key="steer_max_5").value == pytest.approx(0.5)  # the index's value instead


@pytest.mark.parametrize("payload", INJECTIONS)
def test_typed_latents_are_shown_as_text_never_markdown(tiny_workspace, payload):
    at = open_page()
    at.text_input(key="steer_latents").input(payload).run()
    assert not at.exception
    assert any(assert_shows_as_text(e, first_part(payload)) for e in raw(at))


def test_huge_max_activation_is_refused_with_a_message(tiny_workspace):
    at = open_page({"latent": "5", "max_act": "1e308"})
    note = next(c for c in shown(at, "caption") if "max_act" in c)
    assert "above this server's limit" in note
    assert at.number_input(key="steer_max_5").value == pytest.approx(0.5)
    # Typed: no silent clamp, a message, and Generate cannot run it.
    at.number_input(key="steer_max_5").set_value(1e308).run()
    assert not at.exception
    assert any("above this server's limit" in e for e in shown(at))
    assert at.button(key="steer_go").disabled and at.button(key="sweep_go").disabled


def test_a_thousand_latents_in_the_url_build_nothing_and_say_so_first(tiny_workspace):
    at = open_page({"latent": ",".join(str(i) for i in range(96))})
    assert not at.exception
    errors = shown(at)
    assert errors and f"at most {LIMITS.max_steered_latents}" in errors[0]
    # Nothing was built for them: no per-latent method box, max activation or multiplier slider.
    assert not [w for w in at.selectbox if w.key.startswith("steer_method_")]
    assert not [w for w in at.number_input if w.key.startswith("steer_max_")]
    assert {w.key for w in at.slider} == {"steer_samples", "steer_tokens", "steer_temp", "steer_freq",
                                          "sweep_range", "sweep_points", "sweep_tokens"}
    # The message is the first thing after the prompt and the latent box.
    main = [type(e).__name__ for e in at.main if type(e).__name__ in ("TextArea", "TextInput", "Error")]
    assert main[:3] == ["TextArea", "TextInput", "Error"]


def test_a_megabyte_paste_into_the_prompt_says_why(tiny_workspace):
    at = open_page({"latent": "5"})
    paste = "It was a dark and stormy night. " * (1_000_000 // 32)  # 1,000,000 characters
    # AppTest, like the browser, drops a value longer than the box's max_chars without a word.
    at.text_area(key="steer_prompt").input(paste).run()
    assert at.text_area(key="steer_prompt").value == paste
    assert any(f"{len(paste):,} characters; the limit is {LIMITS.max_prompt_chars:,}" in e for e in shown(at))
    assert at.button(key="steer_go").disabled


def test_every_text_box_has_a_length_bound(tiny_workspace):
    at = open_page()
    boxes = list(at.text_input) + list(at.text_area)
    assert boxes and all(b.max_chars == LIMITS.max_text_chars for b in boxes), [(b.key, b.max_chars) for b in boxes]
    assert LIMITS.max_text_chars >= 1_000_000 > LIMITS.max_prompt_chars  # a 1 MB paste arrives and is refused


def test_a_seed_above_the_range_is_not_clamped_silently(tiny_workspace):
    at = open_page({"latent": "5"})
    at.number_input(key="steer_seed").set_value(2**31).run()
    assert not at.exception
    assert any(f"Seed must be between 0 and {2**31 - 1:,}, got {2**31:,}" in e for e in shown(at))
    assert at.button(key="steer_go").disabled


def test_stop_leaves_a_note_on_the_previous_result(tiny_workspace, monkeypatch):
    at = fast(open_page({"latent": "5"}))
    at.button(key="steer_go").click().run()
    first = table(at)
    assert first and not shown(at, "warning")

    def stopped(*args, **kwargs):  # what Streamlit raises in the script when the visitor presses Stop
        raise StopException()

    monkeypatch.setattr(generation, "generate", stopped)
    at.button(key="steer_go").click().run()
    at.button(key="steer_stop").click().run()
    assert not at.exception
    assert any("stopped before it finished" in w and "from the run before it" in w for w in shown(at, "warning"))
    assert table(at) == first
    at.run()  # said once, not forever
    assert not any("stopped" in w for w in shown(at, "warning"))


class _Rows(HTMLParser):
    """The comparison table's body as text cells, and each cell's marked words."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.marks: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._in_mark = self._in_body = False

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
            self.marks.append([])
        elif self._in_body and tag == "td":
            self._cell = []
            self.marks[-1].append([])
        elif tag == "mark":
            self._in_mark = True

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "mark":
            self._in_mark = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
            if self._in_mark:
                self.marks[-1][-1].append(data)


def test_each_steered_sample_sits_beside_the_normal_it_is_highlighted_against(tiny_workspace):
    at = open_page({"latent": "5"})
    at.slider(key="steer_samples").set_value(3)
    at.slider(key="steer_tokens").set_value(8)
    at.button(key="steer_go").click().run()
    assert not at.exception
    result, _, _ = at.session_state["steer_result"]
    parsed = _Rows()
    parsed.feed(table(at))
    assert len(parsed.rows) == 3
    for i, (cells, marks) in enumerate(zip(parsed.rows, parsed.marks)):
        number, normal, steered = cells
        assert number == str(i + 1)
        assert normal == render.show_newlines(result.normal[i])  # every normal sample is shown
        assert steered == render.show_newlines(result.steered[i])
        # The marks are exactly the words that differ from the normal output in the same row.
        expected = [render.show_newlines(w) for w, changed in render.word_diff(result.normal[i], result.steered[i]) if changed]
        assert marks[2] == expected


def test_dose_response_panels_have_their_own_axes(tiny_workspace):
    import json

    at = open_page({"latent": "9"})
    at.slider(key="sweep_points").set_value(3)
    at.slider(key="sweep_tokens").set_value(4)
    at.button(key="sweep_go").click().run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    layout = spec["layout"]
    assert not any(ax.get("overlaying") for name, ax in layout.items() if name.startswith("yaxis"))
    assert layout["yaxis"]["rangemode"] == layout["yaxis2"]["rangemode"] == "tozero"
    names = [t["name"] for t in spec["data"]]
    assert names == ["KL, next token", "KL, mean over text", "latent 9 at the hook, steered", "latent 9 on the text, unsteered"]
    assert [t.get("yaxis", "y") for t in spec["data"]] == ["y", "y", "y2", "y2"]


def test_a_warm_up_in_progress_is_said_on_the_page(tiny_workspace):
    import threading

    release = threading.Event()
    tiny_workspace.warm_up = threading.Thread(target=release.wait, daemon=True)
    tiny_workspace.warm_up.start()
    try:
        at = open_page()
        assert any("compiling its decode step" in c.value for c in at.caption)
    finally:
        release.set()
    tiny_workspace.warm_up.join()
    at = open_page()
    assert not any("compiling its decode step" in c.value for c in at.caption)


def test_a_typed_prompt_survives_a_visit_to_another_page(tiny_workspace):
    """Streamlit drops a widget's value in a run that does not draw it: the prompt a visitor typed was
    back to the default after a trip to the Latent browser to pick another latent."""
    at = open_page({"latent": "5", "max_act": "2.5"})
    at.text_area(key="steer_prompt").input("The knight rode to the").run()
    at.switch_page("app_pages/theory.py")
    at.query_params.clear()
    at.run()
    at.switch_page("app_pages/steering.py").run()
    assert not at.exception
    assert at.text_area(key="steer_prompt").value == "The knight rode to the"
