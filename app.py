"""Latent Lab: the Streamlit entry point. It frames the pages; each page is thin over ``sae_lib``."""

import streamlit as st

from lab_ui import keep_across_pages

st.set_page_config(page_title="Latent Lab", page_icon=":material/biotech:", layout="wide")

# The page scripts live in app_pages/, not pages/: Streamlit (1.67) treats a folder named pages/
# next to the entry script as a v1 multipage app and, for a process's first run, lists that folder's
# files ("app", "home", ...) as the menu, where clicking "app" runs the entry script as a page.
# Material icons ship with Streamlit, so they render where a browser has no emoji font.
PAGES = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True, url_path="home"),
    st.Page("app_pages/theory.py", title="Theory", icon=":material/school:", url_path="theory"),
    st.Page("app_pages/latent_browser.py", title="Latent browser", icon=":material/search:", url_path="latent_browser"),
    st.Page("app_pages/steering.py", title="Steering playground", icon=":material/tune:", url_path="steering"),
]

keep_across_pages()  # a prompt typed on one page is still there after a visit to another
st.navigation(PAGES).run()
