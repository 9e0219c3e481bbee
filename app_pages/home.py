"""Home: what Latent Lab is, what is loaded, where to go."""

import streamlit as st

from lab_ui import as_text, current_index, loaded_facts, sidebar, workspace_or_stop

ws = workspace_or_stop()
sidebar(ws)
info = loaded_facts(ws)  # names, never the server's folders

st.title("Latent Lab")
st.markdown(
    "Sparse-autoencoder (SAE) interpretability for language models. An SAE rewrites one hook's "
    "activations as a sparse sum of learned directions (*latents*); many latents match a concept a "
    "person can name, and adding a latent's direction back into the model *steers* what it writes."
)
cfg = ws.model.cfg
c1, c2, c3, c4 = st.columns(4)
c1.metric("Model layers", cfg.n_layers, help=f"Loaded from {as_text(info['model'])}")
c2.metric("Residual width (d_model)", f"{cfg.d_model:,}")
c3.metric("SAE latents (d_sae)", f"{info['d_sae']:,}", help=f"Loaded from {as_text(info['sae'])}")
c4.metric("Latents per dimension", f"{info['d_sae'] / info['d_in']:.0f}x")
st.markdown(f"The SAE reads `{info['hook']}` of **{as_text(info['model'])}** ({info['device']}, {info['dtype']}).")

st.subheader("Where to go")
st.page_link("app_pages/theory.py", label="Theory: superposition in a toy model, and the SAE equations", icon=":material/school:")
st.page_link("app_pages/latent_browser.py", label="Latent browser: every latent's density, histogram, contexts and logit lens", icon=":material/search:")
st.page_link("app_pages/steering.py", label="Steering playground: clamp a latent and compare normal vs steered text", icon=":material/tune:")
if current_index(ws) is None:  # none shipped, and none built in the app since
    st.info(
        f"No latent index ships with this SAE ({as_text(info['index'])}). The Latent browser still offers "
        "'What fires here'; build an index there (Build a latent index, below the notice), or offline with "
        "`python scripts/build_latent_index.py --model <model> --sae <sae>` (README: Latent index)."
    )

# --- the guided demo: one latent per planted topic ------------------------------------------------
from lab_ui import get_descriptions, get_topic_guide  # noqa: E402

guide = get_topic_guide(ws)
if guide:
    import pandas as pd

    from sae_lib.demo.corpus import TOPICS
    from sae_lib.demo.guide import N_CANDIDATES
    from sae_lib.latent_index import steering_query

    descriptions, _ = get_descriptions(ws)
    st.subheader(f"Guided tour: {len(guide)} planted topics")
    st.markdown(
        f"The demo's stories each stay on one of {len(TOPICS)} planted topics; {len(guide)} have a latent selective for "
        "them. For each, this is the latent most selective for it (mean activation on that topic's stories minus "
        "its largest mean on any other topic), picked "
        f"among the {N_CANDIDATES} most selective for the one whose direction promotes the topic's words. Its label is "
        "statistical: the tokens it fires on far above their base rate, and what it promotes. The demo's tiny "
        "LM cannot write explanations (it only tells stories), so the labels stand in for them."
    )
    rows = []
    for g in guide:
        q = steering_query(ws.index, g.latent)
        rows.append({
            "topic": g.topic,
            "latent": g.latent,
            "label": descriptions.describe(g.latent).text if descriptions else "",
            "selectivity": g.selectivity,
            "browse": f"/latent_browser?latent={g.latent}",
            "steer": f"/steering?latent={q['latent']}&max_act={q['max_act']}",
        })  # fmt: skip
    st.dataframe(
        pd.DataFrame(rows), hide_index=True, key="home_guide",
        column_config={
            "browse": st.column_config.LinkColumn("browse", display_text="open in the browser"),
            "steer": st.column_config.LinkColumn("steer", display_text="steer with it"),
            "selectivity": st.column_config.NumberColumn(format="%.3f"),
        },
    )  # fmt: skip
