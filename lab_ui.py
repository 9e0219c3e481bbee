"""The one place for Streamlit glue: cached loaders, the shared sidebar, and showing visitor text safely.

Cached objects (model, SAE, latent index) are shared by every visitor of this process: never mutate
them. Steering only ever adds hooks inside a scoped context (see ``sae_lib.steering``).

Anything a visitor typed or put in a URL reaches the page as text, never as Markdown: every
``st.error`` / ``st.caption`` / ``st.markdown`` that includes it passes it through :func:`as_text`.
"""

from __future__ import annotations

import logging
import re
import sys

import streamlit as st

from sae_lib.errors import LatentLabError
from sae_lib.limits import LIMITS, check_range
from sae_lib.redact import public_name, redact_paths
from sae_lib.workspace import Workspace, load_workspace

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
# Escaping ":", "/" and "." too breaks bare-URL autolinks ("https://...", "www.x.y").
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def as_text(value: object) -> str:
    """``value`` as Markdown that shows exactly its characters: no link, image, HTML, formatting."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(value))


def show_error(message: object, where=st) -> None:
    """A red box with ``message`` shown as text (messages quote what the visitor typed)."""
    where.error(as_text(message))


@st.cache_resource(show_spinner="Loading the model and SAE (once per process)...")
def get_workspace() -> Workspace:
    """Model + SAE (+ latent index when present), loaded once per process from the environment."""
    ws = load_workspace()
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
    with st.sidebar:
        st.markdown("### Loaded")
        st.markdown(
            "  \n".join(  # two spaces: a Markdown line break
                [
                    f"**Model** {as_text(info['model'])}",
                    f"**SAE** {as_text(info['sae'])}",
                    f"**Hook** `{info['hook']}`",
                    f"**d_in** {info['d_in']:,} · **d_sae** {info['d_sae']:,}",
                    f"**Device** {info['device']} · **dtype** {info['dtype']}",
                    f"**Latent index** {as_text(info['index'])}",
                    f"**Generation** {as_text(info['engine'])}",
                ]
            )
        )


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
    ToySAEConfig,
    ToySAEResult,
    TrainingProgress,
    train_toy,
    train_toy_sae,
)

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
        status.info(f"Waiting for the server's CPU: {ahead} training run(s) ahead of you. {what} starts after them.")

    def progress(p: TrainingProgress) -> None:
        status.progress(min(p.step / p.total, 1.0), text=progress_text(what, p))

    try:
        with named_queue(TOY_QUEUE).slot(waiting):
            hit = cache.get(key)  # trained by the visitor ahead of us while we waited
            if hit is not None:
                return hit  # type: ignore[return-value]
            status.progress(0.0, text=f"{what}: starting (the expected time shows after the first steps)")
            result = train(progress)
        cache.put(key, result)
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
