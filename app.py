"""Latent Lab: the Streamlit entry point. It frames the pages; each page is thin over ``sae_lib``."""

import streamlit as st

st.set_page_config(page_title="Latent Lab", page_icon=":material/biotech:", layout="wide")

# Each url_path equals its file's stem: Streamlit's front end also knows the pages/ folder by file
# name, and a deep link whose path differs from the stem shows a spurious "Page not found" first.
# Material icons ship with Streamlit, so they render where a browser has no emoji font.
PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True, url_path="home"),
    st.Page("pages/theory.py", title="Theory", icon=":material/school:", url_path="theory"),
    st.Page("pages/latent_browser.py", title="Latent browser", icon=":material/search:", url_path="latent_browser"),
    st.Page("pages/steering.py", title="Steering playground", icon=":material/tune:", url_path="steering"),
]

st.navigation(PAGES).run()
