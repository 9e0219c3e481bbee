"""Latent Lab: the Streamlit entry point. It frames the pages; each page is thin over ``sae_lib``."""

import streamlit as st

st.set_page_config(page_title="Latent Lab", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True, url_path="home"),
    st.Page("pages/theory.py", title="Theory", icon="📐", url_path="theory"),
]

st.navigation(PAGES).run()
