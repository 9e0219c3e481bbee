"""Home: what Latent Lab is, what is loaded, where to go."""

import streamlit as st

from lab_ui import sidebar, workspace_or_stop

ws = workspace_or_stop()
sidebar(ws)
info = ws.describe()

st.title("Latent Lab")
st.markdown(
    "Sparse-autoencoder (SAE) interpretability for language models. An SAE rewrites one hook's "
    "activations as a sparse sum of learned directions (*latents*); many latents match a concept a "
    "person can name, and adding a latent's direction back into the model *steers* what it writes."
)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Model", info["model"].rstrip("/").split("/")[-1])
c2.metric("Hook", info["hook"])
c3.metric("SAE width (d_sae)", f"{info['d_sae']:,}")
c4.metric("Residual width (d_in)", f"{info['d_in']:,}")

st.subheader("Where to go")
st.page_link("pages/theory.py", label="Theory: superposition in a toy model, and the SAE equations", icon=":material/school:")
st.page_link("pages/latent_browser.py", label="Latent browser: every latent's density, histogram, contexts and logit lens", icon=":material/search:")
st.page_link("pages/steering.py", label="Steering playground: clamp a latent and compare normal vs steered text", icon=":material/tune:")
if ws.index is None:
    st.info(
        f"No latent index ships with this SAE ({info['index']}). The Latent browser still offers "
        "'What fires here'; build an index with `python scripts/build_latent_index.py`."
    )
