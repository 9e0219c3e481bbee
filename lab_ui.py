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
    if ws.engine_notice:
        st.info(ws.engine_notice)
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
                    f"**Generation** {info['engine']}",
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
