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
    if ws.index is None and current_index(ws) is not None:
        info["index"] = "built in the app"
    with st.sidebar:
        st.markdown("### Loaded")
        st.markdown(
            "  \n".join(  # two spaces: a Markdown line break
                [
                    f"**Model** `{info['model']}`",
                    f"**SAE** `{info['sae']}`",
                    f"**Hook** `{info['hook']}`"
                    + (f" → writes `{info['hook_out']}`" if info["hook_out"] != info["hook"] else ""),
                    f"**Architecture** {info['architecture']}",
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


# --- Latent browser: building a latent index in the app ------------------------------------------
# Self-contained like the Theory glue above. Builds are shared by every visitor of this process
# (sae_lib.index_builds.BUILDS: one per SAE); this section only draws them.
import re  # noqa: E402

from sae_lib import index_builds as ib  # noqa: E402
from sae_lib.errors import InputError  # noqa: E402
from sae_lib.model_queue import queue_for  # noqa: E402

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def _plain(message: object) -> str:
    """``message`` as Markdown that shows exactly its characters (it may quote a dataset or file name a
    visitor gave): every ASCII punctuation character backslash-escaped, as CommonMark allows."""
    return _PUNCTUATION.sub(r"\\\1", str(message))


TOKEN_CHOICES = (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000)
"""What the token slider offers (a log scale): up to 30M, 27 minutes at the H100 rate."""


def current_index(ws: Workspace):
    """The index to browse: the one loaded with the SAE, else one built in this process for it."""
    if ws.index is not None:
        return ws.index
    build = ib.BUILDS.get(ws.sae)
    return build.index if build is not None else None


_RATES: dict[str, float] = {}
"""Measured index-pass tokens/s per SAE weight hash (process-wide, like the model)."""


def measured_tokens_per_s(ws: Workspace) -> float | None:
    """Tokens/s of the index pass here, measured once per SAE (a few rows); None while the model is busy
    (measuring would wait for a generation or build to finish) or if the measurement failed."""
    key = ib.sae_key(ws.sae)
    if key not in _RATES and queue_for(ws.model).ahead_of_new_arrival() == 0:
        try:
            with st.spinner("Measuring the index pass on this machine (a few rows)..."):
                _RATES[key] = ib.measure_tokens_per_s(ws.model, ws.sae, ib.default_settings(ws.model))
        except Exception:  # a failed measurement only costs the local estimate
            return None
    return _RATES.get(key)


def _status_line(s: ib.BuildStatus) -> str:
    left = "" if s.seconds_left is None else f", about {ib._duration(s.seconds_left)} left"
    rate = f", {s.tokens_per_s:,.0f} tokens/s" if s.tokens_per_s else ""
    return f"{s.tokens_done:,} of {s.tokens_total:,} tokens{rate}{left}"


@st.fragment(run_every=1.0)
def _build_progress(ws: Workspace) -> None:
    build = ib.BUILDS.get(ws.sae)
    if build is None:
        return
    s = build.status()
    if s.active:
        label = "Reading the corpus..." if s.state == "reading" else (
            "Writing the index..." if s.state == "writing" else f"Indexing {_plain(s.message)}: {_status_line(s)}"
        )
        st.progress(min(s.fraction, 1.0), text=label)
        st.button("Cancel the build", key="ib_cancel", on_click=build.cancel,
                  help="Stops after the current batch; nothing is written.")
    else:
        st.rerun()  # the whole page: it now has an index, or shows why not


def index_build_panel(ws: Workspace) -> None:
    """Offer to build an index for the loaded SAE, or show the build that is running (anyone's)."""
    build = ib.BUILDS.get(ws.sae)
    status = build.status() if build is not None else None
    st.subheader("Build a latent index")
    if status is not None and status.active:
        st.info("An index is being built for this SAE (started by a visitor); you can browse as soon as it is done.")
        _build_progress(ws)
        return
    if status is not None and status.state in ("cancelled", "failed"):
        (st.info if status.state == "cancelled" else st.error)(_plain(status.message))
    settings = ib.default_settings(ws.model)
    st.caption(
        f"One pass over a corpus through the model (up to `{ws.hook_name}`) and the SAE's encoder, "
        f"in rows of {settings.context_size} tokens. The result is kept on this server's disk (under the "
        "Hugging Face cache) for this SAE's weights, so it survives a restart, and every visitor can use it."
    )
    kind = st.radio("Corpus", ["Demo corpus", "Hub dataset", "Upload a file"], key="ib_kind", horizontal=True)
    source = None
    problem = None
    if kind == "Hub dataset":
        c1, c2, c3 = st.columns([3, 1, 1])
        name = c1.text_input("Dataset name", key="ib_dataset", placeholder="HuggingFaceFW/fineweb", max_chars=200)
        split = c2.text_input("Split", "train", key="ib_split", max_chars=50)
        column = c3.text_input("Text column (empty: detect)", "", key="ib_column", max_chars=100)
        source = ib.CorpusSource("hub", name=name.strip(), split=split.strip() or "train", text_column=column.strip())
        if not name.strip():
            problem = "Type a dataset name."
    elif kind == "Upload a file":
        file = st.file_uploader("Text, jsonl or parquet", type=["txt", "jsonl", "parquet"], key="ib_file")
        if file is None:
            problem = "Choose a file."
        else:
            source = ib.CorpusSource("upload", name=file.name, data=file.getvalue())
    else:
        source = ib.CorpusSource("demo")
    choices = [n for n in TOKEN_CHOICES if n >= settings.context_size]
    default = 100_000 if settings.context_size <= 128 else 10_000_000
    n_tokens = st.select_slider("Tokens to index", choices, value=default if default in choices else choices[0],
                                key="ib_tokens", format_func=lambda n: f"{n:,}")
    st.caption(ib.estimate_text(int(n_tokens), measured_tokens_per_s(ws)))
    if st.button("Build the index", key="ib_start", type="primary", disabled=problem is not None,
                 help=problem):
        try:
            if source.kind == "upload":  # checked now, so a bad file is refused before a job starts
                ib.upload_texts(source.name, source.data, source.text_column)
            _, started = ib.BUILDS.start(ws.model, ws.sae, source, int(n_tokens), settings)
        except InputError as err:
            st.error(_plain(err))
            return
        if not started:
            st.info("A build for this SAE was already running: showing it.")
        _build_progress(ws)
