"""The one place for Streamlit glue: cached loaders, the shared sidebar, and showing visitor text safely.

Cached objects (model, SAE, latent index) are shared by every visitor of this process: never mutate
them. Steering only ever adds hooks inside a scoped context (see ``sae_lib.steering``).

Anything a visitor typed or put in a URL reaches the page as text, never as Markdown: every
``st.error`` / ``st.caption`` / ``st.markdown`` that includes it passes it through :func:`as_text`.
"""

from __future__ import annotations

import logging
from pathlib import Path
import re
import sys

import streamlit as st

from sae_lib.constants import EXPLANATIONS_FILENAME
from sae_lib.errors import LatentLabError
from sae_lib.limits import LIMITS, check_range
from sae_lib.redact import public_name, redact_paths
from sae_lib.workspace import Workspace, load_workspace, start_warm_up

log = logging.getLogger("latent_lab")
OPERATOR_LOGGERS = ("latent_lab", "sae_lib")
"""Loggers whose records (what was loaded from where, failures with their traces) go to the server's
stderr: the operator's log. Visitors see names and messages; the details are kept here."""


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (as Python's last-resort handler)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _log_to_stderr() -> None:
    # Without a handler, Python prints only warnings and up (and INFO lines such as where the model was
    # loaded from would be lost). Added once per process; records still propagate (tests capture them).
    for name in OPERATOR_LOGGERS:
        logger = logging.getLogger(name)
        if not any(getattr(h, "_latent_lab", False) for h in logger.handlers):
            handler = _Stderr()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            handler._latent_lab = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


_log_to_stderr()

# Every ASCII punctuation character: CommonMark lets each be escaped with a backslash, and each can
# start Markdown ("[", "!", "*", "`", "#", "<", "|") or Streamlit's extensions (":red[...]", "$x$").
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


# Streamlit's renderer turns bare URLs and e-mail addresses into links even when their punctuation is
# escaped (checked in a real browser, tests/e2e). An invisible zero-width space inside the trigger
# ("/​/", "www​.", "@​") keeps them plain text and shows the same characters.
_AUTOLINK_TRIGGERS = re.compile(r"(/)(?=/)|(?i:(www))(?=\.)|(@)")
ZERO_WIDTH_SPACE = "\u200b"


def as_text(value: object) -> str:
    """``value`` as Markdown that shows exactly its characters: no link, image, HTML, formatting."""
    text = _AUTOLINK_TRIGGERS.sub(lambda m: m.group(0) + ZERO_WIDTH_SPACE, str(value))
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def show_error(message: object, where=st) -> None:
    """A red box with ``message`` shown as text (messages quote what the visitor typed)."""
    where.error(as_text(message))


@st.cache_resource(show_spinner="Loading the model and SAE (once per process)...")
def get_workspace() -> Workspace:
    """Model + SAE (+ latent index when present), loaded once per process from the environment."""
    ws = load_workspace()
    start_warm_up(ws)  # compiles the decode step in the background on a GPU; nothing on a CPU
    # The operator's log gets the real places; visitors get names (see loaded_facts).
    log.info("Loaded model %s and SAE %s (SAE files in %s)", ws.model_source, ws.sae_source, ws.sae_dir)
    if ws.fallback_reason:
        log.warning("%s", ws.fallback_reason)
    if ws.index_problem:
        log.warning("No latent index: %s", ws.index_problem)
    return ws


def workspace_or_stop() -> Workspace:
    """The shared workspace; on failure show what went wrong and what to do, then stop the page."""
    try:
        ws = get_workspace()
    except LatentLabError as err:
        log.exception("Loading the workspace failed")
        show_error(redact_paths(str(err)))
        st.stop()
    if ws.fallback_reason:
        st.warning(as_text(redact_paths(ws.fallback_reason)))
    if ws.engine_notice:
        st.info(as_text(redact_paths(ws.engine_notice)))
    return ws


def loaded_facts(ws: Workspace) -> dict[str, object]:
    """What is loaded, as visitors may see it: the sources by name, never the server's folders."""
    info = ws.describe()
    info["model"] = public_name(ws.model_source)
    info["sae"] = public_name(ws.sae_source)
    info["index"] = "loaded" if ws.index is not None else redact_paths(ws.index_problem or "none")
    return info


def sidebar(ws: Workspace) -> None:
    """What is loaded, in the sidebar of every page."""
    info = loaded_facts(ws)
    if ws.index is None and current_index(ws) is not None:
        info["index"] = "built in the app"
    with st.sidebar:
        st.markdown("### Loaded")
        st.markdown(
            "  \n".join(  # two spaces: a Markdown line break
                [
                    f"**Model** {as_text(info['model'])}",
                    f"**SAE** {as_text(info['sae'])}",
                    f"**Hook** `{info['hook']}`"
                    + (f" → writes `{info['hook_out']}`" if info["hook_out"] != info["hook"] else ""),
                    f"**Architecture** {info['architecture']}",
                    f"**d_in** {info['d_in']:,} · **d_sae** {info['d_sae']:,}",
                    f"**Device** {info['device']} · **dtype** {info['dtype']}",
                    f"**Latent index** {as_text(info['index'])}",
                    f"**Generation** {info['engine']}",
                ]
            )
        )


KEPT_ACROSS_PAGES = ("steer_prompt", "lb_view", "lb_latent")
"""Widget keys whose values survive a visit to another page: Streamlit drops a widget's value at the end of
any run that does not draw it, so without this a prompt typed on the Steering page was gone after a trip
to the Latent browser to pick another latent, and the browser was back on its Overview (latent 0) after
"Steer with latent i" and back. Only widgets drawn without a ``value=`` default (their page
sets their state instead): re-setting one that has such a default makes Streamlit show a warning."""


def keep_across_pages(keys: tuple[str, ...] = KEPT_ACROSS_PAGES) -> None:
    """Called by app.py before every page: re-set each kept widget's value as session state (Streamlit's
    documented way to keep a widget's value while another page runs)."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def seed_input(where, key: str, default: int = 0, label: str = "Seed") -> int | None:
    """A seed box that says so when a typed seed is out of range (the box itself would clamp it silently).

    Returns the seed, or None after showing why it cannot be used.
    """
    # No max_value on the widget: the browser would quietly replace 2**31 by the maximum.
    seed = where.number_input(label, min_value=0, value=default, step=1, key=key)
    try:
        return int(check_range(label, int(seed), 0, LIMITS.max_seed))
    except LatentLabError as err:
        show_error(f"{err} Type a smaller seed.", where)
        return None


# --- Theory page: the toy model of superposition, trained one visitor at a time --------------------
# Kept at the end and self-contained so merges with the other pages' glue stay trivial.
import threading  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Callable, Hashable  # noqa: E402
from typing import TypeVar  # noqa: E402

from sae_lib.model_queue import named_queue  # noqa: E402
from sae_lib.toy_model import (  # noqa: E402
    ToyConfig,
    ToyResult,
    TrainingProgress,
    train_toy,
)
from sae_lib.toy_sae import ToySAEConfig, ToySAEResult, train_toy_sae  # noqa: E402

TOY_QUEUE = "theory-training"
"""The queue every Theory-page training run waits in: they all share the server's CPU."""
_TOY_CACHE_ENTRIES = 64
T = TypeVar("T")


class _ResultCache:
    """Results by parameter set, shared by every visitor, least recently used dropped first.

    Not ``st.cache_data``: that cannot tell whether a result is cached without computing it, and the
    queue and progress bar must only appear when training actually runs.
    """

    def __init__(self, max_entries: int) -> None:
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: Hashable, value: object) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)


@st.cache_resource
def _toy_results() -> _ResultCache:
    return _ResultCache(_TOY_CACHE_ENTRIES)


def progress_text(what: str, p: TrainingProgress) -> str:
    """What the progress bar says: the step, and the time this run is expected to take, as measured."""
    return (
        f"{what}: step {p.step:,} of {p.total:,}, about {p.remaining_s:.0f} s left "
        f"(this run is expected to take {p.expected_total_s:.0f} s, measured on its first steps)"
    )


def _train_once(key: Hashable, what: str, train: Callable[[Callable[[TrainingProgress], None]], T]) -> T:
    """``train(progress)`` for ``key`` unless cached; one training run at a time, in arrival order."""
    cache = _toy_results()
    hit = cache.get(key)
    if hit is not None:
        return hit  # type: ignore[return-value]
    status = st.empty()

    def waiting(ahead: int) -> None:
        if ahead:
            status.info(f"Waiting for the server's CPU: {ahead} training run(s) ahead of you. {what} starts after them.")
        else:  # our turn: the progress bar follows
            status.empty()

    def progress(p: TrainingProgress) -> None:
        status.progress(min(p.step / p.total, 1.0), text=progress_text(what, p))

    try:
        with named_queue(TOY_QUEUE).slot(waiting):
            hit = cache.get(key)  # trained by the visitor ahead of us while we waited
            if hit is not None:
                return hit  # type: ignore[return-value]
            status.progress(0.0, text=f"{what}: starting (the expected time shows after the first steps)")
            result = train(progress)
            cache.put(key, result)  # before the slot goes: the next in line, with the same settings, finds it
        return result
    finally:
        status.empty()


def toy_sweep(cfg: ToyConfig) -> ToyResult:
    """The trained sweep for ``cfg``; cached by value, so returning to earlier settings is instant."""
    return _train_once(("sweep", cfg), "Training the toy models", lambda progress: train_toy(cfg, progress=progress))


def toy_sae(cfg: ToyConfig, sae_cfg: ToySAEConfig) -> ToySAEResult:
    """A tiny SAE trained on the hidden activations of the sweep for ``cfg``; cached by both configs."""
    toy = toy_sweep(cfg)
    return _train_once(
        ("sae", cfg, sae_cfg), "Training the tiny SAE", lambda progress: train_toy_sae(toy, sae_cfg, progress=progress)
    )


# --- Latent descriptions (labels, explanations) and the demo's topic guide -----------------------
# Self-contained block, like the Theory one above: loaded once per process, shared, never mutated.
from sae_lib.descriptions import Descriptions  # noqa: E402


def _ws_key(ws: Workspace) -> tuple[str, str, str]:
    """What identifies a workspace's index for the caches below (the workspace itself is not hashed)."""
    return (ws.sae_source, str(ws.sae_dir), ws.index.meta.build_id if ws.index is not None else "")


def get_descriptions(ws: Workspace) -> tuple[Descriptions | None, str | None]:
    """Every latent's label plus the explanations next to the index being browsed (``current_index``:
    the loaded one, or one built in the app), and why none loaded. Computed once per index."""
    index = current_index(ws)
    if index is None:
        return None, None
    # The loaded index's own folder, or the app's cache, where a build in the app (and
    # build_latent_index.py / explain_latents.py for a Hub or registry SAE) put the index and its explanations.
    folder = (ws.index_dir or ws.sae_dir) if index is ws.index else ib.cache_dir(ws.sae)
    if folder:  # an index published with a Hub SAE: explanations written here live in the app's cache
        from sae_lib.explain.store import stored_build

        dirs = ib.explanation_dirs(folder, ws.sae)
        written = [d for d in dirs if (d / EXPLANATIONS_FILENAME).exists()]
        # This index's own first (the published ones may be a newer revision's), else what exists (its
        # message then says it belongs to another build).
        folder = next((d for d in written if stored_build(d / EXPLANATIONS_FILENAME) == index.meta.build_id),
                      written[0] if written else folder)
    return _descriptions(index, str(folder or ""), index.meta.build_id)


def all_latents(index):
    """The Latent browser's table of every latent (``latent_index.all_latents_table``), built once per
    index: its text columns take about a second at 65,536 latents, and the page reruns on every slider move."""
    return _all_latents(index, index.meta.build_id)


@st.cache_resource(show_spinner="Tabulating every latent (once per index)...", max_entries=4)
def _all_latents(_index, build_id: str):
    from sae_lib.latent_index import all_latents_table

    return all_latents_table(_index)  # shared by every session: callers filter it into a copy, never edit it


@st.cache_resource(show_spinner="Labelling the latents (once per index)...")
def _descriptions(_index, folder: str, build_id: str) -> tuple[Descriptions | None, str | None]:
    from sae_lib.constants import EXPLANATIONS_FILENAME
    from sae_lib.explain.store import load_explanations

    problem, table = None, None
    if folder:
        try:
            table = load_explanations(Path(folder) / EXPLANATIONS_FILENAME, build_id)
        except LatentLabError as err:
            problem = str(err)
    return Descriptions(_index, table), problem


def get_topic_guide(ws: Workspace):
    """The demo's topic guide (list of ``TopicLatent``), or None when the loaded pair is not the demo."""
    return _topic_guide(ws, _ws_key(ws))


@st.cache_resource(show_spinner="Finding each planted topic's latent (once per process)...")
def _topic_guide(_ws: Workspace, key: tuple[str, str, str]):
    from sae_lib.demo.guide import demo_guide

    return demo_guide(_ws)


def show_description(ws: Workspace, descriptions: Descriptions, latent: int) -> None:
    """Under a latent's title: its explanation (with scores) or label, as plain text, and 'explain now'."""
    written = st.session_state.get("lb_explained", {}).get((id(ws), latent))
    d = descriptions.describe(latent) if written is None else written
    if not d.text:
        st.caption("Dead latent: nothing to describe.")
        return
    kind = f"Explanation by {d.explainer}" if d.source == "explanation" else "Statistical label (no LM)"
    st.text(f"{kind}: {d.text}")  # st.text: never Markdown or HTML, whatever the explainer wrote
    if d.scores:
        s = d.scores
        def score(name: str) -> str:  # NaN: not scored (no excerpts of one kind)
            value = s.get(name, float("nan"))
            return "n/a" if value != value else f"{value:.2f}"

        st.caption(
            f"Detection {score('detection')} (shuffled explanation: {score('detection_shuffled')}) · "
            f"fuzzing {score('fuzzing')} (shuffled: {score('fuzzing_shuffled')}). "
            "Balanced accuracy; 0.5 is chance, and the shuffled-explanation baseline is what a score is read against; "
            "n/a: not scored (no held-out or no non-activating excerpts)."
        )
    if d.source == "explanation":
        return
    from sae_lib.demo.guide import is_demo

    if is_demo(ws):
        st.caption("The demo's tiny LM cannot write explanations (it only continues stories), so the label stands in.")
        return
    if st.button("Explain this latent now", key=f"lb_explain_{latent}",
                 help="The loaded model reads the latent's contexts and writes one line; queued like a generation."):
        status = st.empty()
        try:
            d = explain_now(ws, descriptions, latent, on_wait=lambda n: status.info(f"Waiting for the model: {n} run(s) ahead.") if n else status.empty())
            st.session_state.setdefault("lb_explained", {})[(id(ws), latent)] = d
            st.rerun()
        except LatentLabError as err:
            show_error(err)
        finally:
            status.empty()


def explain_now(ws: Workspace, descriptions: Descriptions, latent: int, on_wait=None):
    """Explain and score one latent with the loaded model (waiting in the model's queue)."""
    import random

    from sae_lib.descriptions import Description
    from sae_lib.explain.explainer import explain_and_score, model_acts_fn
    from sae_lib.explain.generator import LoadedModelGenerator
    from sae_lib.model_queue import queue_for

    with queue_for(ws.model).slot(on_wait):  # wait our turn visibly; the generator re-enters per batch
        pass
    alive = [i for i, lab in enumerate(descriptions.labels) if lab and i != latent]
    other = random.Random(latent).choice(alive) if alive else None
    row = explain_and_score(
        LoadedModelGenerator(ws.model, name=ws.model_source), descriptions.index, [latent],
        acts_fn=model_acts_fn(ws.model, ws.sae),
        fallback_shuffled=lambda _: descriptions.describe(other).text if other is not None else "",
    )[0]  # fmt: skip
    if not row.explanation:
        raise LatentLabError("The model gave no usable explanation for this latent; the statistical label stays.")
    scores = {k: getattr(row, k) for k in ("detection", "fuzzing", "detection_shuffled", "fuzzing_shuffled")}
    return Description(row.explanation, "explanation", row.explainer, scores)


def show_neighbours(ws: Workspace, descriptions: Descriptions, latent: int) -> None:
    """The 10 closest decoder directions and the 10 latents firing with it most, each a link."""
    import pandas as pd

    from sae_lib.neighbours import cofiring_neighbours, decoder_neighbours

    def table(nb, score_name: str, key: str) -> None:
        frame = pd.DataFrame({
            "latent": [f"/latent_browser?latent={i}" for i in nb.latents],
            score_name: nb.scores,
            "explanation or label": descriptions.texts(nb.latents),
        })  # fmt: skip
        st.dataframe(frame, hide_index=True, key=key, column_config={
            "latent": st.column_config.LinkColumn("latent", display_text=r"latent=(\d+)"),
            score_name: st.column_config.NumberColumn(format="%.3f"),
        })  # fmt: skip

    st.subheader("Neighbours")
    left, right = st.columns(2)
    with left:
        st.caption("Closest decoder directions (cosine of W_dec rows)")
        table(decoder_neighbours(ws.sae, latent), "cosine", "lb_nb_decoder")
    with right:
        st.caption("Fires where it fires (Jaccard of the tokens they fire on, counted in the index pass)")
        if descriptions.index.counts is None:
            st.caption("This index predates co-firing counts: rebuild it with scripts/build_latent_index.py.")
        else:
            table(cofiring_neighbours(descriptions.index.counts, latent), "jaccard", "lb_nb_cofire")



# --- Latent browser: building a latent index in the app ------------------------------------------
# Self-contained like the Theory glue above. Builds are shared by every visitor of this process
# (sae_lib.index_builds.BUILDS: one per SAE); this section only draws them.
from sae_lib import corpora  # noqa: E402
from sae_lib import index_builds as ib  # noqa: E402
from sae_lib.errors import InputError  # noqa: E402
from sae_lib.model_queue import queue_for  # noqa: E402

TOKEN_CHOICES = (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000)
"""What the token slider offers (a log scale): up to 30M, about 16 minutes at the H100 rate."""


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
            "Writing the index..." if s.state == "writing" else f"Indexing {as_text(s.message)}: {_status_line(s)}"
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
        (st.info if status.state == "cancelled" else st.error)(as_text(status.message))
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
        source = corpora.CorpusSource("hub", name=name.strip(), split=split.strip() or "train", text_column=column.strip())
        if not name.strip():
            problem = "Type a dataset name."
    elif kind == "Upload a file":
        file = st.file_uploader("Text, jsonl or parquet", type=["txt", "jsonl", "parquet"], key="ib_file")
        if file is None:
            problem = "Choose a file."
        else:
            source = corpora.CorpusSource("upload", name=file.name, data=file.getvalue())
    else:
        source = corpora.CorpusSource("demo")
    choices = [n for n in TOKEN_CHOICES if n >= settings.context_size]
    default = 100_000 if settings.context_size <= 128 else 10_000_000
    n_tokens = st.select_slider("Tokens to index", choices, value=default if default in choices else choices[0],
                                key="ib_tokens", format_func=lambda n: f"{n:,}")
    st.caption(ib.estimate_text(int(n_tokens), measured_tokens_per_s(ws)))
    if st.button("Build the index", key="ib_start", type="primary", disabled=problem is not None,
                 help=problem):
        try:
            if source.kind == "upload":  # checked now, so a bad file is refused before a job starts
                corpora.upload_texts(source.name, source.data, source.text_column)
            _, started = ib.BUILDS.start(ws.model, ws.sae, source, int(n_tokens), settings)
        except InputError as err:
            show_error(err)
            return
        if not started:
            st.info("A build for this SAE was already running: showing it.")
        _build_progress(ws)
