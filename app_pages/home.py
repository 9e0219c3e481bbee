"""Home: what Latent Lab is, what is loaded, where to go."""

import streamlit as st

from lab_ui import as_text, loaded_facts, sidebar, workspace_or_stop

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
st.markdown(f"The SAE reads `{info['hook']}` of **{cfg.model_name}** ({info['device']}, {info['dtype']}).")

st.subheader("Where to go")
st.page_link("app_pages/theory.py", label="Theory: superposition in a toy model, and the SAE equations", icon=":material/school:")
st.page_link("app_pages/latent_browser.py", label="Latent browser: every latent's density, histogram, contexts and logit lens", icon=":material/search:")
st.page_link("app_pages/steering.py", label="Steering playground: clamp a latent and compare normal vs steered text", icon=":material/tune:")
if ws.index is None:
    st.info(
        f"No latent index ships with this SAE ({as_text(info['index'])}). The Latent browser still offers "
        "'What fires here'; build an index with `python scripts/build_latent_index.py`."
    )
