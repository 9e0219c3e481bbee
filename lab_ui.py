"""The one place for Streamlit glue: cached loaders and the shared sidebar.

Cached objects (model, SAE, latent index) are shared by every visitor of this process: never mutate
them. Steering only ever adds hooks inside a scoped context (see ``sae_lib.steering``).
"""

from __future__ import annotations

import streamlit as st

from sae_lib.errors import LatentLabError
from sae_lib.workspace import Workspace, load_workspace


@st.cache_resource(show_spinner="Loading the model and SAE (once per process)...")
def get_workspace() -> Workspace:
    """Model + SAE (+ latent index when present), loaded once per process from the environment."""
    return load_workspace()


def workspace_or_stop() -> Workspace:
    """The shared workspace; on failure show what went wrong and what to do, then stop the page."""
    try:
        ws = get_workspace()
    except LatentLabError as err:
        st.error(str(err))
        st.stop()
    if ws.fallback_reason:
        st.warning(ws.fallback_reason)
    return ws


def sidebar(ws: Workspace) -> None:
    """What is loaded, in the sidebar of every page."""
    info = ws.describe()
    with st.sidebar:
        st.markdown("### Loaded")
        st.markdown(
            "  \n".join(  # two spaces: a Markdown line break
                [
                    f"**Model** `{info['model']}`",
                    f"**SAE** `{info['sae']}`",
                    f"**Hook** `{info['hook']}`",
                    f"**d_in** {info['d_in']:,} · **d_sae** {info['d_sae']:,}",
                    f"**Device** {info['device']} · **dtype** {info['dtype']}",
                    f"**Latent index** {info['index']}",
                ]
            )
        )


# --- Theory page: the toy model of superposition, cached per parameter set ----------------------
# Kept at the end and self-contained so merges with the other pages' glue stay trivial.
from sae_lib.toy_model import (  # noqa: E402
    ToyConfig,
    ToyResult,
    ToySAEConfig,
    ToySAEResult,
    train_toy,
    train_toy_sae,
)


@st.cache_data(show_spinner="Training the toy models (a few seconds)...", max_entries=64)
def toy_sweep(cfg: ToyConfig) -> ToyResult:
    """The trained sweep for ``cfg``; cached by value, so returning to earlier settings is instant."""
    return train_toy(cfg)


@st.cache_data(show_spinner="Training the tiny SAE...", max_entries=64)
def toy_sae(cfg: ToyConfig, sae_cfg: ToySAEConfig) -> ToySAEResult:
    """A tiny SAE trained on the hidden activations of the sweep for ``cfg``; cached by both configs."""
    return train_toy_sae(toy_sweep(cfg), sae_cfg)


# --- Latent descriptions (labels, explanations) and the demo's topic guide -----------------------
# Self-contained block, like the Theory one above: loaded once per process, shared, never mutated.
from sae_lib.descriptions import Descriptions  # noqa: E402


def _ws_key(ws: Workspace) -> tuple[str, str, str]:
    """What identifies a workspace's index for the caches below (the workspace itself is not hashed)."""
    return (ws.sae_source, str(ws.sae_dir), ws.index.meta.build_id if ws.index is not None else "")


def get_descriptions(ws: Workspace) -> tuple[Descriptions | None, str | None]:
    """Every latent's label plus the explanations shipped next to the index, and why none loaded."""
    return _descriptions(ws, _ws_key(ws))


@st.cache_resource(show_spinner="Labelling the latents (once per process)...")
def _descriptions(_ws: Workspace, key: tuple[str, str, str]) -> tuple[Descriptions | None, str | None]:
    from sae_lib.constants import EXPLANATIONS_FILENAME
    from sae_lib.explain.store import load_explanations

    if _ws.index is None:
        return None, None
    problem, table = None, None
    if _ws.sae_dir is not None:
        try:
            table = load_explanations(_ws.sae_dir / EXPLANATIONS_FILENAME, _ws.index.meta.build_id)
        except LatentLabError as err:
            problem = str(err)
    return Descriptions(_ws.index, table), problem


def get_topic_guide(ws: Workspace):
    """The demo's topic guide (list of ``TopicLatent``), or None when the loaded pair is not the demo."""
    return _topic_guide(ws, _ws_key(ws))


@st.cache_resource(show_spinner="Finding each planted topic's latent (once per process)...")
def _topic_guide(_ws: Workspace, key: tuple[str, str, str]):
    from sae_lib.demo.guide import demo_guide

    return demo_guide(_ws)


def show_description(ws: Workspace, descriptions: Descriptions, latent: int) -> None:
    """Under a latent's title: its explanation (with scores) or label, as plain text, and 'explain now'."""
    written = st.session_state.get("lb_explained", {}).get((id(ws), latent))
    d = descriptions.describe(latent) if written is None else written
    if not d.text:
        st.caption("Dead latent: nothing to describe.")
        return
    kind = f"Explanation by {d.explainer}" if d.source == "explanation" else "Statistical label (no LM)"
    st.text(f"{kind}: {d.text}")  # st.text: never Markdown or HTML, whatever the explainer wrote
    if d.scores:
        s = d.scores
        st.caption(
            f"Detection {s.get('detection', float('nan')):.2f} (shuffled explanation: {s.get('detection_shuffled', float('nan')):.2f}) · "
            f"fuzzing {s.get('fuzzing', float('nan')):.2f} (shuffled: {s.get('fuzzing_shuffled', float('nan')):.2f}). "
            "Balanced accuracy; 0.5 is chance, and the shuffled-explanation baseline is what a score is read against."
        )
    if d.source == "explanation":
        return
    from sae_lib.demo.guide import is_demo

    if is_demo(ws):
        st.caption("The demo's tiny LM cannot write explanations (it only continues stories), so the label stands in.")
        return
    if st.button("Explain this latent now", key=f"lb_explain_{latent}",
                 help="The loaded model reads the latent's contexts and writes one line; queued like a generation."):
        status = st.empty()
        try:
            d = explain_now(ws, descriptions, latent, on_wait=lambda n: status.info(f"Waiting for the model: {n} run(s) ahead."))
            st.session_state.setdefault("lb_explained", {})[(id(ws), latent)] = d
            st.rerun()
        except LatentLabError as err:
            st.error(str(err))
        finally:
            status.empty()


def explain_now(ws: Workspace, descriptions: Descriptions, latent: int, on_wait=None):
    """Explain and score one latent with the loaded model (waiting in the model's queue)."""
    import random

    from sae_lib.descriptions import Description
    from sae_lib.explain.explainer import explain_and_score, model_acts_fn
    from sae_lib.explain.generator import LoadedModelGenerator
    from sae_lib.model_queue import queue_for

    with queue_for(ws.model).slot(on_wait):  # wait our turn visibly; the generator re-enters per batch
        pass
    alive = [i for i, lab in enumerate(descriptions.labels) if lab and i != latent]
    other = random.Random(latent).choice(alive) if alive else None
    row = explain_and_score(
        LoadedModelGenerator(ws.model, name=ws.model_source), ws.index, [latent],
        acts_fn=model_acts_fn(ws.model, ws.sae),
        fallback_shuffled=lambda _: descriptions.describe(other).text if other is not None else "",
    )[0]  # fmt: skip
    if not row.explanation:
        raise LatentLabError("The model gave no usable explanation for this latent; the statistical label stays.")
    scores = {k: getattr(row, k) for k in ("detection", "fuzzing", "detection_shuffled", "fuzzing_shuffled")}
    return Description(row.explanation, "explanation", row.explainer, scores)


def show_neighbours(ws: Workspace, descriptions: Descriptions, latent: int) -> None:
    """The 10 closest decoder directions and the 10 latents firing with it most, each a link."""
    import pandas as pd

    from sae_lib.neighbours import cofiring_neighbours, decoder_neighbours

    def table(nb, score_name: str, key: str) -> None:
        frame = pd.DataFrame({
            "latent": [f"/latent_browser?latent={i}" for i in nb.latents],
            score_name: nb.scores,
            "explanation or label": descriptions.texts(nb.latents),
        })  # fmt: skip
        st.dataframe(frame, hide_index=True, key=key, column_config={
            "latent": st.column_config.LinkColumn("latent", display_text=r"latent=(\d+)"),
            score_name: st.column_config.NumberColumn(format="%.3f"),
        })  # fmt: skip

    st.subheader("Neighbours")
    left, right = st.columns(2)
    with left:
        st.caption("Closest decoder directions (cosine of W_dec rows)")
        table(decoder_neighbours(ws.sae, latent), "cosine", "lb_nb_decoder")
    with right:
        st.caption("Fires with it most (Jaccard of the tokens they fire on, counted in the index pass)")
        if ws.index.counts is None:
            st.caption("This index predates co-firing counts: rebuild it with scripts/build_latent_index.py.")
        else:
            table(cofiring_neighbours(ws.index.counts, latent), "jaccard", "lb_nb_cofire")
