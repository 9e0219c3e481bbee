"""Latent browser: every latent from the latent index, one latent in depth, and what fires on a prompt.

Everything except "What fires here" reads the precomputed index (no model forward). The selected
latent lives in the URL (``?latent=10``) so a link to a latent can be shared.
"""


import hashlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lab_ui import all_latents, as_text, current_index, get_descriptions, index_build_panel, seed_input, show_description, show_error, show_neighbours, sidebar, workspace_or_stop
from sae_lib import latent_index as li
from sae_lib import probe, registry, sae_hooks
from sae_lib.render import context_html
from sae_lib.errors import LatentLabError
from sae_lib.limits import LIMITS
from sae_lib.redact import redact_paths

ws = workspace_or_stop()
sidebar(ws)
index = current_index(ws)
# Labels and explanations of the loaded index (cached); an index built in the app gets labels now.
descriptions, explanations_problem = get_descriptions(ws)
d_sae = int(ws.sae.cfg.d_sae)
STEERING_PAGE = "app_pages/steering.py"
OVERVIEW, LATENT, FIRES, SAMPLE = "Overview", "One latent", "What fires here", "Random sample"
VIEWS = [OVERVIEW, LATENT, FIRES, SAMPLE] if index is not None else [FIRES]

st.title("Latent browser")
st.caption(sae_hooks.role_caption(ws.sae))


def open_latent(latent: int) -> None:
    """Button callback: show one latent (runs before the widgets are drawn, so it may set their state)."""
    st.session_state["lb_latent"] = int(latent)
    st.session_state["lb_view"] = LATENT


def open_picked(key: str) -> None:
    open_latent(st.session_state[key])


def histogram_figure(latent: int, title: str, height: int = 380) -> go.Figure:
    h = li.latent_histogram(index, latent)
    fig = go.Figure(
        go.Bar(x=(h.edges[:-1] + h.edges[1:]) / 2, y=h.counts, width=np.diff(h.edges), marker_color="darkorange")
    )
    fig.update_layout(
        title=title, xaxis_title="Activation", yaxis_title="count", template="ggplot2",
        bargap=0.02, showlegend=False, height=height,
    )  # fmt: skip
    return fig


def show_contexts(views: list[li.ContextView], scale: float) -> None:
    for v in views:
        # st.html, not Markdown: corpus tokens such as "__init__", "*" or ":fire:" stay as written.
        st.html(f"<small>act <b>{v.activation:.2f}</b> · row {v.row}</small>" + context_html(v.tokens, v.acts, scale))


# --- where we are: the URL's latent, the view ------------------------------------------------
if index is None:
    st.warning(
        f"No latent index for this SAE ({as_text(redact_paths(ws.index_problem or 'none found'))}). "
        "Build one below, or offline with "
        "`python scripts/build_latent_index.py --model <model> --sae <sae> --dataset <hub dataset>` "
        "(add `--preset qwen3-8b` for a full-size model: 1,024-token rows, the attention sink left out, as "
        "below). It writes into a local SAE's folder, or this app's index cache for a Hub or registry SAE; "
        "restart the app to load it. Until then, only 'What fires here' is available."
    )
url_latent = st.query_params.get("latent")
if url_latent is not None and url_latent != st.session_state.get("lb_url_latent"):
    st.session_state["lb_url_latent"] = url_latent
    try:
        st.session_state["lb_latent"] = li.parse_latent(url_latent, d_sae)
        if index is not None:
            st.session_state["lb_view"] = LATENT
    except LatentLabError as err:
        show_error(f"The link asks for a latent that does not exist. {err}")
if st.session_state.get("lb_view") not in VIEWS:
    st.session_state["lb_view"] = VIEWS[0]
view = st.radio("View", VIEWS, key="lb_view", horizontal=True, label_visibility="collapsed")

# --- overview --------------------------------------------------------------------------------
if view == OVERVIEW:
    meta = index.meta
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Latents", f"{index.d_sae:,}")
    c2.metric("Tokens indexed", f"{meta.n_tokens:,}")
    c3.metric("Dead (never fired)", f"{int(index.dead.sum()):,}")
    c4.metric(f"Dense (> {100 * meta.config['dense_threshold']:g}% of tokens)", f"{int(index.dense.sum()):,}")
    corpus = f"of {as_text(meta.description)}" if meta.description else "(its corpus was not recorded)"
    st.caption(f"Index {corpus}, on `{meta.hook_name}`, built {as_text(meta.created)}.")
    log_d = li.log10_densities(index)
    dh = li.density_histogram(index)
    if dh is not None:
        st.plotly_chart(
            go.Figure(go.Bar(x=(dh.edges[:-1] + dh.edges[1:]) / 2, y=dh.counts, width=np.diff(dh.edges),
                             marker_color="darkorange")).update_layout(
                title="log10 density of the latents that fire", xaxis_title="log10 density", yaxis_title="latents",
                template="ggplot2", bargap=0.02, showlegend=False, height=320),
            key="lb_density_hist",
        )  # fmt: skip
    f1, f2, f3 = st.columns([2, 1, 2])
    low = float(np.floor(log_d.min())) if len(log_d) else -6.0
    band = f1.slider("log10 density range", low, 0.0, (low, 0.0), step=0.1, key="lb_band")
    hide_dead = f2.checkbox("Hide dead", value=True, key="lb_hide_dead")
    query = f3.text_input("Search a token (lift tokens, top contexts or logit lens)", key="lb_query", max_chars=LIMITS.max_text_chars)
    text_query = st.text_input("Search explanations and labels (plain text, not a pattern)", key="lb_text_query", max_chars=LIMITS.max_text_chars)
    table = li.latent_table(index, log10_density_range=band, hide_dead=hide_dead, table=all_latents(index))
    try:  # both searches are literal and bounded (sae_lib.descriptions)
        if query.strip():
            table = table[table["latent"].isin(descriptions.search_token(query))]
        if text_query.strip():
            table = table[table["latent"].isin(descriptions.search_text(text_query))]
    except LatentLabError as err:
        show_error(err)  # the message may quote the search
    table.insert(1, "explanation or label", descriptions.texts(table["latent"]))
    if explanations_problem:
        st.warning(f"The explanations next to this index were not loaded: {as_text(redact_paths(explanations_problem))}")
    st.caption(f"{len(table):,} latents match. Click a row, then open it.")
    # A row selection is a position in the rows shown, and Streamlit keeps it when the rows change: the
    # table's key follows the filters, so a new filter starts a new selection instead of keeping a row
    # number that now points at another latent, or past the end.
    # The index's build too: an index rebuilt in the app reorders the rows under the same filters.
    filters = hashlib.sha1(repr((index.meta.build_id, band, hide_dead, query, text_query)).encode()).hexdigest()[:12]
    event = st.dataframe(
        table, hide_index=True, on_select="rerun", selection_mode="single-row", key=f"lb_table_{filters}", height=420,
        column_config={"density": st.column_config.NumberColumn(format="%.2e"),  # rare latents: not 0.0000
                       "log10 density": st.column_config.NumberColumn(format="%.2f"),
                       "max": st.column_config.NumberColumn(format="%.3f"),
                       "mean": st.column_config.NumberColumn(format="%.3f")},
    )  # fmt: skip
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(table):
        picked = int(table.iloc[rows[0]]["latent"])
        st.button(f"Open latent {picked}", key="lb_open_row", on_click=open_latent, args=(picked,))

# --- one latent ------------------------------------------------------------------------------
elif view == LATENT:
    latent = int(st.number_input("Latent", 0, d_sae - 1, step=1, key="lb_latent"))
    st.query_params["latent"] = str(latent)
    st.session_state["lb_url_latent"] = str(latent)
    show_description(ws, descriptions, latent)
    max_act = float(index.max_act[latent])
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Density", li.density_text(float(index.density[latent]), 4))
    c2.metric("Max activation", f"{max_act:.3f}")
    c3.metric("Mean (when firing)", f"{float(index.mean_act[latent]):.3f}")
    c4.metric("Status", "dead" if index.dead[latent] else ("dense" if index.dense[latent] else "sparse"))
    if bool(index.dead[latent]):
        st.info(f"Latent {latent} never fired on the {index.meta.n_tokens:,} indexed tokens: it is dead.")
    else:
        st.plotly_chart(histogram_figure(latent, li.histogram_title(index, latent)), key="lb_latent_hist")
    neuronpedia = registry.neuronpedia_url(ws.sae, latent)
    if neuronpedia:
        st.link_button(f"Latent {latent} on Neuronpedia", neuronpedia)
    if st.button(
        f"Steer with latent {latent} (max activation {max_act:.3g})",
        key="lb_to_steering",
        disabled=bool(index.dead[latent]),
        help="A dead latent has no max activation to steer with." if bool(index.dead[latent]) else None,
    ):
        st.switch_page(STEERING_PAGE, query_params=li.steering_query(index, latent))
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Top activating contexts")
        top = li.latent_contexts(index, latent, li.KIND_TOP)
        show_contexts(top, max_act) if top else st.caption("None: the latent never fired.")
        st.subheader("Typical (lower-range) examples")
        st.caption("A random sample of the contexts where it fires, shaded on the same scale as the top ones.")
        samples = li.latent_contexts(index, latent, li.KIND_SAMPLE)
        show_contexts(samples, max_act) if samples else st.caption("None.")
    with right:
        st.subheader("Logit lens")
        if index.logit_top_ids.shape[1]:
            st.dataframe(li.logit_lens_table(index, latent), hide_index=True, key="lb_logit_lens")
        st.caption(f"Computed as {index.meta.logit_lens}.")
    show_neighbours(ws, descriptions, latent)

# --- what fires here (live model + SAE) --------------------------------------------------------
elif view == FIRES:
    with st.form("lb_fires_form"):
        prompt = st.text_area(
            f"Prompt (up to {LIMITS.max_prompt_chars:,} characters)", key="lb_prompt",
            placeholder="Type a few sentences.", max_chars=LIMITS.max_text_chars,
        )  # fmt: skip
        top_n = st.slider("Latents shown per token", 1, 10, 5, key="lb_top_n")
        run = st.form_submit_button("Find the latents that fire")
    if run:
        status = st.empty()  # the model is shared: say so while other visitors' runs go first
        try:
            st.session_state["lb_firing"] = probe.what_fires(
                ws.model, ws.sae, prompt, top_n=top_n,
                on_wait=lambda n: status.info(f"Waiting for the model: {n} run(s) ahead of you.") if n else status.empty(),
            )
        except LatentLabError as err:
            st.session_state.pop("lb_firing", None)
            show_error(err)
        finally:
            status.empty()
    firing = st.session_state.get("lb_firing")
    if firing is not None:
        st.dataframe(probe.firing_table(firing), hide_index=True, key="lb_firing_table")
        fired = probe.firing_latents(firing)
        if fired and index is not None:
            c1, c2 = st.columns([3, 1])
            c1.selectbox("Latent to open", fired, key="lb_fire_pick")
            c2.button("Open", key="lb_fire_open", on_click=open_picked, args=("lb_fire_pick",))
        elif not fired:
            st.caption("No latent fires on this prompt.")

# --- the write-up's random sample ----------------------------------------------------------------
elif view == SAMPLE:
    seed = seed_input(st, "lb_seed")
    if seed is None:
        st.stop()
    picked = li.sample_latents(d_sae, 20, seed)
    st.caption(
        "20 random latents, as in the write-up: dense latents spread over many values and fire often; "
        "sparse ones fire rarely."
    )
    fig = make_subplots(
        rows=4, cols=5,
        subplot_titles=[li.sample_title(index, i) for i in picked],
    )  # fmt: skip
    for n, i in enumerate(picked):
        h = li.latent_histogram(index, i)
        fig.add_trace(
            go.Bar(x=(h.edges[:-1] + h.edges[1:]) / 2, y=h.counts, marker_color="darkorange"),
            row=n // 5 + 1, col=n % 5 + 1,
        )  # fmt: skip
    fig.update_layout(template="ggplot2", showlegend=False, bargap=0.02, height=820)
    fig.update_annotations(font_size=11)
    st.plotly_chart(fig, key="lb_sample_grid")
    st.selectbox("Open one", picked, key="lb_sample_pick")
    st.button("Open", key="lb_sample_open", on_click=open_picked, args=("lb_sample_pick",))

# --- no index yet: build one here (shared by every visitor, kept on disk for this SAE) -----------------
if index is None:
    with st.expander("Build a latent index here", expanded=True):
        index_build_panel(ws)
