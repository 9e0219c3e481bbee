"""Latent Lab: the Streamlit entry point. It frames the pages; each page is thin over ``sae_lib``."""

import streamlit as st

st.set_page_config(page_title="Latent Lab", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True, url_path="home"),
    st.Page("pages/latent_browser.py", title="Latent browser", icon="🔎", url_path="latents"),
    st.Page("pages/steering.py", title="Steering playground", icon="🎛️", url_path="steering"),
]

st.navigation(PAGES).run()
