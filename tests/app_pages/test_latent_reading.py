"""The Latent browser's reading aids: explanation or label under the title, search, neighbours, explain now."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import lab_ui
from sae_lib import latent_index as li
from sae_lib.constants import EXPLANATIONS_FILENAME
from sae_lib.explain.explainer import Explanation
from sae_lib.explain.store import save_explanations
from sae_lib.labels import all_labels
from sae_lib.neighbours import decoder_neighbours
from sae_lib.workspace import Workspace
from tests.conftest import TINY_TEXTS

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "**bold** <script>alert(1)</script> [link](http://x)"


@pytest.fixture(scope="module")
def tiny_index(tiny_model, tiny_sae):
    tokens = li.pack_texts(TINY_TEXTS, tiny_model.tokenizer, context_size=16, n_seq=40).tokens
    cfg = li.IndexConfig(n_bins=16, top_k=5, n_lower_examples=3, window=8, window_before=5, batch_size=16)
    return li.build_index(tiny_model, tiny_sae, tokens, cfg, description="tiny texts")


@pytest.fixture
def workspace(tiny_model, tiny_sae, tiny_index, monkeypatch, tmp_path):
    alive = (~tiny_index.dead).nonzero().squeeze(1).tolist()
    save_explanations(tmp_path / EXPLANATIONS_FILENAME, tiny_index.meta.build_id,
                      [Explanation(alive[0], HOSTILE, "m", "tiny-explainer", 0.9, 0.8, 0.5, 0.45, ""),
                       Explanation(alive[2], "dense", "m", "tiny-explainer", float("nan"), 0.8, float("nan"), 0.45, "")])
    ws = Workspace(model=tiny_model, sae=tiny_sae, model_source="tiny", sae_source=f"tiny-{tmp_path.name}",
                   sae_dir=tmp_path, index=tiny_index)  # fmt: skip
    monkeypatch.setattr(lab_ui, "get_workspace", lambda: ws)
    return ws


def open_page(query=None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/latent_browser.py")
    if query:
        at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def test_explanation_shown_as_text_with_scores(workspace, tiny_index):
    latent = int((~tiny_index.dead).nonzero()[0])
    at = open_page({"latent": str(latent)})
    texts = [t.value for t in at.text]
    assert f"Explanation by tiny-explainer: {HOSTILE}" in texts  # st.text: verbatim, never rendered
    assert not any("<script>" in m.value for m in at.markdown)
    assert any("Detection 0.90 (shuffled explanation: 0.50)" in c.value for c in at.caption)
    dense = int((~tiny_index.dead).nonzero()[2])  # scored without negatives: not a number to read
    at = open_page({"latent": str(dense)})
    assert any("Detection n/a (shuffled explanation: n/a) · fuzzing 0.80" in c.value for c in at.caption)


def test_label_and_explain_now_for_an_unexplained_latent(workspace, tiny_index):
    latent = int((~tiny_index.dead).nonzero()[1])
    at = open_page({"latent": str(latent)})
    assert f"Statistical label (no LM): {all_labels(tiny_index)[latent]}" in [t.value for t in at.text]
    at.button(key=f"lb_explain_{latent}").click().run()
    assert not at.exception
    # The tiny random model writes junk: either an explanation line or a clear message, never a traceback.
    assert any(t.value.startswith("Explanation by tiny:") for t in at.text) or any("no usable" in e.value for e in at.error)


def test_neighbours_are_links(workspace, tiny_index, tiny_sae):
    latent = int(tiny_index.count.argmax())
    at = open_page({"latent": str(latent)})
    frames = {n: df.value for n, df in enumerate(at.dataframe)}
    decoder = next(v for v in frames.values() if "cosine" in v.columns)
    want = decoder_neighbours(tiny_sae, latent).latents
    assert decoder["latent"].tolist() == [f"/latent_browser?latent={i}" for i in want]
    cofire = next(v for v in frames.values() if "jaccard" in v.columns)
    assert 0 < len(cofire) <= 10 and (cofire["jaccard"] > 0).all()


def test_table_column_and_searches(workspace, tiny_index):
    at = open_page()
    table = at.dataframe[0].value
    assert "explanation or label" in table.columns
    assert HOSTILE in table["explanation or label"].tolist()
    at.text_input(key="lb_text_query").input("<script>alert(1)").run()
    assert not at.exception and len(at.dataframe[0].value) == 1
    at.text_input(key="lb_text_query").input(".*").run()
    assert not at.exception and len(at.dataframe[0].value) == 0  # literal, not a pattern
    at.text_input(key="lb_text_query").input("").run()
    at.text_input(key="lb_query").input("(").run()
    assert not at.exception
