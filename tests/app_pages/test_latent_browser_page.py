"""The Latent browser page, run by AppTest from app.py on the tiny model, SAE and an index built on them."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import lab_ui
from sae_lib import latent_index as li
from sae_lib import probe
from sae_lib.packing import pack_texts
from sae_lib.workspace import Workspace
from tests.conftest import TINY_TEXTS

REPO = Path(__file__).resolve().parents[2]
PAGE = "app_pages/latent_browser.py"


@pytest.fixture(scope="module")
def tiny_index(tiny_model, tiny_sae):
    tokens = pack_texts(TINY_TEXTS, tiny_model.tokenizer, context_size=16, n_seq=40).tokens
    cfg = li.IndexConfig(n_bins=16, top_k=5, n_lower_examples=3, window=8, window_before=5, batch_size=16)
    return li.build_index(tiny_model, tiny_sae, tokens, cfg, description="tiny texts")


@pytest.fixture
def workspace(tiny_model, tiny_sae, tiny_index, monkeypatch, tmp_path):
    ws = Workspace(
        model=tiny_model, sae=tiny_sae, model_source="tiny", sae_source="tiny", sae_dir=tmp_path, index=tiny_index
    )
    # AppTest runs the scripts in this process: the page gets the tiny workspace through lab_ui.
    monkeypatch.setattr(lab_ui, "get_workspace", lambda: ws)
    return ws


def open_page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page(PAGE)
    if query:
        at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_overview_table_filters_and_open(workspace, tiny_index):
    at = open_page()
    assert at.radio(key="lb_view").value == "Overview"
    assert metric(at, "Latents") == f"{tiny_index.d_sae:,}"
    assert metric(at, "Dead (never fired)") == f"{int(tiny_index.dead.sum()):,}"
    table = at.dataframe[0].value
    assert len(table) == int((~tiny_index.dead).sum())  # dead hidden by default
    at.checkbox(key="lb_hide_dead").uncheck().run()
    assert len(at.dataframe[0].value) == tiny_index.d_sae
    at.text_input(key="lb_query").input("zzz-not-a-token").run()
    assert not at.exception and len(at.dataframe[0].value) == 0


def test_a_selected_row_is_dropped_when_a_filter_changes_the_rows(workspace, tiny_index):
    """Streamlit keeps a table's row selection (a position) when its rows change: after a search, the
    old position must not open another latent, or point past the end of the shorter table."""
    at = open_page()
    table = at.dataframe[0]
    last = len(table.value) - 1
    at.session_state[table.key] = {"selection": {"rows": [last], "columns": [], "cells": []}}
    at.run()
    picked = int(table.value.iloc[last]["latent"])
    assert [b.label for b in at.button if b.key == "lb_open_row"] == [f"Open latent {picked}"]
    at.text_input(key="lb_text_query").input("zzz-no-such-label").run()  # no row left
    assert not at.exception and len(at.dataframe[0].value) == 0
    assert not [b for b in at.button if b.key == "lb_open_row"]
    at.text_input(key="lb_text_query").input("").run()
    at.checkbox(key="lb_hide_dead").uncheck().run()  # more rows, in other positions
    assert not at.exception and not [b for b in at.button if b.key == "lb_open_row"]


def test_overview_builds_its_table_once_per_index(workspace, tiny_index, monkeypatch):
    # The text columns loop over every latent (seconds at 65,536): built on the first visit, then every
    # slider move, checkbox and search only filters them.
    built = []
    monkeypatch.setattr(li, "all_latents_table", lambda index: built.append(1) or li.query.all_latents_table(index))
    lab_ui._all_latents.clear()
    at = open_page()
    at.checkbox(key="lb_hide_dead").uncheck().run()
    at.slider(key="lb_band").set_value((-1.0, 0.0)).run()
    assert not at.exception and built == [1]
    ld = li.log10_densities(tiny_index)
    shown = at.dataframe[0].value
    assert len(shown) == int(((ld >= -1.0) & (ld <= 0.0)).sum()) + int(tiny_index.dead.sum())
    lab_ui._all_latents.clear()


@pytest.mark.parametrize("threshold, label", [(0.1, "10%"), (0.005, "0.5%"), (0.015, "1.5%")])
def test_the_dense_count_names_the_indexs_threshold(workspace, tiny_index, threshold, label):
    # A threshold below 0.5% was labelled "Dense (> 0% of tokens)", and 1.5% "> 2%".
    import dataclasses

    meta = tiny_index.meta
    workspace.index = dataclasses.replace(
        tiny_index, meta=dataclasses.replace(meta, config={**meta.config, "dense_threshold": threshold})
    )
    at = open_page()
    assert metric(at, f"Dense (> {label} of tokens)") == f"{int(workspace.index.dense.sum()):,}"


def test_density_histogram_is_binned_before_it_is_sent(workspace, tiny_index):
    # 50 bars that count every latent that fires, not one point per latent (65,536 at the flagship).
    import base64
    import json

    import numpy as np

    at = open_page()
    spec = json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith("lb_density_hist")).proto.spec)
    (bars,) = spec["data"]

    def values(v):  # plotly writes numpy arrays as base64 typed arrays
        return np.asarray(v) if isinstance(v, list) else np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])

    ld = li.log10_densities(tiny_index)
    y, x = values(bars["y"]), values(bars["x"])
    assert bars["type"] == "bar" and len(y) == 50 and y.sum() == len(ld) == int((~tiny_index.dead).sum())
    counts, edges = np.histogram(ld, bins=50)
    assert y.tolist() == counts.tolist() and np.allclose(x, (edges[:-1] + edges[1:]) / 2)
    assert spec["layout"]["title"]["text"] == "log10 density of the latents that fire"


def test_url_latent_opens_that_latent(workspace, tiny_index):
    i = int(tiny_index.count.argmax())
    at = open_page({"latent": str(i)})
    assert at.radio(key="lb_view").value == "One latent"
    assert at.number_input(key="lb_latent").value == i
    assert metric(at, "Max activation") == f"{float(tiny_index.max_act[i]):.3f}"
    assert at.query_params["latent"] == str(i)
    html = "".join(m.value for m in at.html)  # st.html: contexts never go through Markdown
    assert "rgba(255,140,0,1.00)" in html  # the top context's max token is fully shaded
    assert not any("rgba(255,140,0" in m.value for m in at.markdown)
    steer = at.button(key="lb_to_steering")
    assert not steer.disabled
    # Changing the latent updates the URL, so the link can be shared.
    at.number_input(key="lb_latent").set_value(3).run()
    assert at.query_params["latent"] == "3" and metric(at, "Max activation") == f"{float(tiny_index.max_act[3]):.3f}"


def test_the_latent_being_read_survives_a_visit_to_the_steering_page(workspace, tiny_index):
    """Streamlit drops a widget's value in a run that does not draw it: after 'Steer with latent i' and
    back through the sidebar, the browser was on its Overview and 'One latent' showed latent 0."""
    i = int(tiny_index.count.argmax())
    at = open_page({"latent": str(i)})
    at.button(key="lb_to_steering").click().run()  # switches to the Steering page (latent and max_act in the URL)
    at.query_params.clear()  # the sidebar's link to the browser carries no latent
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.radio(key="lb_view").value == "One latent"
    assert at.number_input(key="lb_latent").value == i
    assert at.query_params["latent"] == str(i)


@pytest.mark.parametrize("bad, message", [("abc", "not a number"), ("9999", "out of range")])
def test_bad_url_latent_is_refused_with_a_message(workspace, bad, message):
    at = open_page({"latent": bad})
    assert any(message in e.value for e in at.error)
    assert at.radio(key="lb_view").value == "Overview"


def test_what_fires_and_click_through(workspace, tiny_model, tiny_sae):
    at = open_page()
    at.radio(key="lb_view").set_value("What fires here").run()
    prompt = "The rocket flew past the moon."
    at.text_area(key="lb_prompt").input(prompt)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception and not at.error
    fired = probe.what_fires(tiny_model, tiny_sae, prompt)
    assert at.dataframe[0].value["token"].tolist() == fired.tokens
    first = probe.firing_latents(fired)[0]
    assert at.selectbox(key="lb_fire_pick").value == first
    at.button(key="lb_fire_open").click().run()
    assert at.radio(key="lb_view").value == "One latent" and at.number_input(key="lb_latent").value == first


@pytest.mark.parametrize("prompt, message", [("   ", "empty"), ("word " * 600, "characters")])
def test_what_fires_bad_prompts(workspace, prompt, message):
    at = open_page()
    at.radio(key="lb_view").set_value("What fires here").run()
    at.text_area(key="lb_prompt").input(prompt)
    at.button[0].click().run()
    assert not at.exception and any(message in e.value for e in at.error)


def test_random_sample_grid(workspace, tiny_index):
    at = open_page()
    at.radio(key="lb_view").set_value("Random sample").run()
    assert not at.exception
    assert at.selectbox(key="lb_sample_pick").options == [str(i) for i in li.sample_latents(tiny_index.d_sae, 20, 0)]
    at.number_input(key="lb_seed").set_value(5).run()
    assert at.selectbox(key="lb_sample_pick").options == [str(i) for i in li.sample_latents(tiny_index.d_sae, 20, 5)]


def test_without_index_explains_and_offers_what_fires(workspace):
    workspace.index, workspace.index_problem = None, "none shipped with this SAE"
    at = open_page({"latent": "3"})
    assert any("build_latent_index.py" in w.value for w in at.warning)
    assert at.radio(key="lb_view").options == ["What fires here"]
    at.text_area(key="lb_prompt").input("The ship sailed.")
    at.button[0].click().run()
    assert not at.exception and len(at.dataframe) == 1


# --- a hostile first visit (issue 14) ------------------------------------------------------------------

from sae_lib.limits import LIMITS  # noqa: E402
from tests.app_pages.markdown_check import INJECTIONS, assert_shows_as_text, visible_text  # noqa: E402


@pytest.mark.parametrize("payload", INJECTIONS)
def test_url_latent_is_shown_as_text_never_markdown(workspace, payload):
    at = open_page({"latent": payload})
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "not a number" in visible_text(errors[0])
    assert assert_shows_as_text(errors[0], payload)


def test_text_boxes_have_a_length_bound_and_a_paste_says_why(workspace):
    at = open_page()
    assert at.text_input(key="lb_query").max_chars == LIMITS.max_text_chars
    at.radio(key="lb_view").set_value("What fires here").run()
    assert at.text_area(key="lb_prompt").max_chars == LIMITS.max_text_chars
    paste = "x" * 1_000_000
    at.text_area(key="lb_prompt").input(paste)
    at.button[0].click().run()
    assert any(f"{len(paste):,} characters" in visible_text(e.value) for e in at.error)


def test_index_caption_names_its_corpus_in_words(workspace, tiny_index):
    at = open_page()
    caption = next(visible_text(c.value) for c in at.caption if "Index" in c.value)
    assert caption.startswith("Index of tiny texts, on blocks.1.hook_mlp_out, built ")
    import dataclasses

    workspace.index = dataclasses.replace(tiny_index, meta=dataclasses.replace(tiny_index.meta, description=""))
    at = open_page()
    caption = next(visible_text(c.value) for c in at.caption if "Index" in c.value)
    assert "a corpus" not in caption and "its corpus was not recorded" in caption


def test_random_sample_seed_out_of_range_says_so(workspace):
    at = open_page()
    at.radio(key="lb_view").set_value("Random sample").run()
    at.number_input(key="lb_seed").set_value(2**31).run()
    assert not at.exception
    assert any(f"Seed must be between 0 and {2**31 - 1:,}" in visible_text(e.value) for e in at.error)


def test_the_overview_table_never_shows_a_firing_latents_density_as_zero(workspace, tiny_index):
    """The density column is formatted in the browser: a fixed '%.4f' showed every latent firing on fewer
    than 1 in 20,000 tokens as 0.0000, like a dead one. Whatever the format, a firing latent's density
    must keep a non-zero digit, checked here by applying the column's printf format to the rarest."""
    import json
    import re

    at = open_page()
    config = json.loads(at.dataframe[0].proto.columns)
    fmt = config["density"]["type_config"]["format"]
    assert re.fullmatch(r"%\.\d[eg]", fmt), fmt  # printf-style, as the browser applies it
    rarest = min(float(d) for d in tiny_index.density if d > 0)
    for density in (rarest, 3.2e-5, 1e-7):  # the tiny index's rarest, the demo's latent 6, one in 10M
        assert re.search(r"[1-9]", (fmt % density).split("e")[0]), (fmt, density)
