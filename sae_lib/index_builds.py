"""Building a latent index for the loaded SAE: the shared build path, the app's build jobs and index cache.

``scripts/build_latent_index.py`` and the Latent browser build an index the same way: texts from a
corpus (:func:`sae_lib.corpora.source_texts`), packed into rows (``latent_index.pack_texts``), one pass
(:func:`run_build`, i.e. ``latent_index.build_index`` with a cancel check), then
``latent_index.save_index``. The app writes into a persistent cache keyed by the SAE's weight hash
(:func:`cache_dir`, under huggingface_hub's ``HF_HUB_CACHE``, which the start script puts on ``/data``
on a Space with storage), so a restart finds it again and it works for SAEs whose own folder is
read-only (the Hub cache) or absent (registry SAEs); the script writes next to a local SAE and into
that cache for any other (:func:`index_home`), and both read by :func:`index_location`'s rule.

The app's builds are shared by every visitor of the process: :data:`BUILDS` runs at most one build
per SAE, in a background thread; anyone can watch its progress or cancel it. A build writes into a
``.partial-*`` folder and renames it into place only when complete, so a cancelled, failed or
disk-full build leaves nothing a reader could mistake for an index, and a rerun starts clean.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import huggingface_hub.constants
import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from sae_lib import latent_index as li
from sae_lib.constants import EXPLANATIONS_FILENAME, INDEX_META_FILENAME
from sae_lib.corpora import CorpusSource, corpus_tokens
from sae_lib.errors import LatentLabError
from sae_lib.latent_index.build import PassStatistics  # the pass's own per-batch work, for a faithful measurement
from sae_lib.model_queue import queue_for
from sae_lib.probe import encode_tokens
from sae_lib.redact import redact_paths
from sae_lib.sae import LoadedSAE
from sae_lib.timing import sync

log = logging.getLogger(__name__)

CACHE_SUBDIR = "latent-lab-indexes"
"""Folder of app-built indexes inside ``HF_HUB_CACHE``; one subfolder per SAE weight hash."""

H100_TOKENS_PER_S = 32_000
"""Index-pass throughput on one H100 at Qwen3-8B's shape (d_model 4096, 65,536 latents on
``blocks.28.hook_mlp_out``, batches of 32 x 128 tokens, TF32 encode): 32,140 tokens/s streaming in
``bench/gpu.py`` (docs/bench_gpu_h100_run3.json), plus about 7 s per build. What the UI quotes next to
its own measurement (10M tokens: about 5 minutes)."""

class BuildCancelled(LatentLabError):
    """The build was cancelled; nothing was written."""


# --- where app-built indexes live ----------------------------------------------------------------


def cache_root() -> Path:
    """``$HF_HUB_CACHE/latent-lab-indexes`` (read when called, so a changed cache location is honoured)."""
    return Path(huggingface_hub.constants.HF_HUB_CACHE) / CACHE_SUBDIR


_HASHES: "weakref.WeakKeyDictionary[SAE, str]" = weakref.WeakKeyDictionary()
_HASH_LOCK = threading.Lock()


def sae_key(sae: SAE) -> str:
    """The SAE's weight hash (``latent_index.sae_hash``), computed once per loaded SAE."""
    with _HASH_LOCK:
        key = _HASHES.get(sae)
        if key is None:
            key = _HASHES[sae] = li.sae_hash(sae)
        return key


def cache_dir(sae: SAE) -> Path:
    """Where the app keeps this SAE's index."""
    return cache_root() / sae_key(sae)


def index_home(loaded: LoadedSAE, out: str | Path = "") -> Path:
    """Where a new index of this SAE is written (``scripts/build_latent_index.py``): ``out`` when given;
    a local SAE's own folder (the app finds it there, and ``push_to_hub.py`` publishes it with the SAE);
    otherwise the app's index cache, keyed by the weights. A Hub SAE's folder is a snapshot of its repo
    inside the Hugging Face cache: it may be read-only or shared, the next revision's snapshot lacks what
    was written there (even with the same weights), and a file written there passes for the repo's own."""
    if out:
        return Path(out)
    if loaded.spec.kind == "local" and loaded.local_dir is not None:
        return Path(loaded.local_dir)
    return cache_dir(loaded.sae)


def index_location(loaded: LoadedSAE, out: str | Path = "") -> Path:
    """Where this SAE's index is read from (``scripts/explain_latents.py``, which writes its explanations
    by :func:`explanation_dirs`): ``out`` when given; the SAE's own folder when it holds an index (a local SAE's, or one
    published with a Hub SAE); otherwise the app's index cache. The app reads by the same rule
    (:func:`sae_lib.workspace.load_workspace`)."""
    if out:
        return Path(out)
    if loaded.local_dir is not None and (Path(loaded.local_dir) / INDEX_META_FILENAME).exists():
        return Path(loaded.local_dir)
    return cache_dir(loaded.sae)


def explanation_dirs(index_dir: str | Path, sae: SAE) -> tuple[Path, ...]:
    """Where the explanations of the index in ``index_dir`` are written (the first) and read: beside the
    index; but for an index published with a Hub SAE, which sits in a snapshot inside the Hugging Face
    cache (read-only or shared, replaced by the next revision, and a file written there passes for the
    repo's own), a folder of the app's cache for that SAE's published index first (beside, not inside,
    the folder of the app's own index for the weights, which a rebuild replaces and whose explanations
    are another index's), then the explanations published beside the index."""
    index_dir = Path(index_dir)
    resolved = index_dir.resolve()
    in_hub = resolved.is_relative_to(Path(huggingface_hub.constants.HF_HUB_CACHE).resolve())
    if in_hub and not resolved.is_relative_to(cache_root().resolve()):
        return cache_root() / f"{sae_key(sae)}.published", index_dir
    return (index_dir,)


def load_cached(sae: SAE) -> li.LatentIndex | None:
    """The app-built index of this SAE, or None when none was built (or it no longer fits the SAE)."""
    folder = cache_dir(sae)
    if not folder.is_dir():
        return None
    try:
        return li.load_index(folder, sae)
    except LatentLabError:
        return None


# --- the pass, shared by the script and the app -------------------------------------------------------


class Settings(NamedTuple):
    """How the app indexes on a given model: the script's presets (``demo`` for small models, the
    ``qwen3-8b`` preset's context, batch and attention-sink skip for full-size ones)."""

    context_size: int
    index: li.IndexConfig


def default_settings(model: HookedTransformer) -> Settings:
    """The script's ``demo`` preset for the embedded model's size, its ``qwen3-8b`` preset for real LLMs
    (whose first position is an attention sink with huge activations, left out of the statistics)."""
    if model.cfg.d_model <= 512:
        return Settings(min(128, model.cfg.n_ctx), li.IndexConfig())
    return Settings(min(1024, model.cfg.n_ctx), li.IndexConfig(batch_size=8, skip_positions=1))


ProgressFn = Callable[[int, int, float], None]


def run_build(
    model: HookedTransformer,
    sae: SAE,
    tokens: torch.Tensor,
    cfg: li.IndexConfig,
    description: str = "",
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> li.LatentIndex:
    """One index pass (``latent_index.build_index``) that stops with :class:`BuildCancelled` after the
    batch during which ``cancel`` was set."""

    def report(done: int, total: int, elapsed: float) -> None:
        if progress is not None:
            progress(done, total, elapsed)
        if cancel is not None and cancel.is_set():
            raise BuildCancelled("The index build was cancelled; nothing was written.")

    return li.build_index(model, sae, tokens, cfg, progress=report, description=description)


def write_atomic_folder(index: li.LatentIndex, final: Path) -> Path:
    """Write ``index`` into ``final`` (a folder of its own) all at once: a ``.partial-*`` sibling is
    filled and renamed into place, so ``final`` is either absent or complete. A full disk is a
    :class:`LatentLabError` saying so, with the partial folder removed."""
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(final)
        li.save_index(index, partial)
        if final.exists():  # an older index for the same weights (a rebuild): replaced as a whole
            # ... but explanations written for it (hours of explainer work) come along, kept aside.
            from sae_lib.explain.store import set_aside_stale

            for kept in final.glob(f"{Path(EXPLANATIONS_FILENAME).stem}*{Path(EXPLANATIONS_FILENAME).suffix}"):
                os.replace(kept, partial / kept.name)
            set_aside_stale(partial / EXPLANATIONS_FILENAME, index.meta.build_id)
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(partial, final)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise LatentLabError(
                f"The disk is too full to write the latent index into the index cache under HF_HUB_CACHE "
                f"({os.strerror(err.errno)}). Nothing was written. Free some space (or give the Space more "
                "storage), or index fewer tokens."
            ) from None
        raise _unwritable(err) from None
    return final


def _remove_stale_partials(final: Path) -> None:
    """Remove the ``.partial-*`` folders of ``final`` whose writer is gone: a process stopped while it
    wrote (a Space restart, an OOM kill) leaves one as large as an index, which nothing else removes.
    A partial named with this process's id is stale too (one write per index at a time here, and a
    restarted container's server often has the id its predecessor had); another live process's is kept."""
    for folder in final.parent.glob(f".{final.name}.partial-*"):
        pid = folder.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if not pid.isdigit():
            continue
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # its writer is alive (another process writing this index now)
            except ProcessLookupError:
                pass
            except OSError:  # alive, another user's
                continue
        shutil.rmtree(folder, ignore_errors=True)


def _unwritable(err: OSError) -> LatentLabError:
    return LatentLabError(
        f"Could not write the latent index into the index cache under HF_HUB_CACHE ({err.strerror or type(err).__name__}). "
        "Nothing was written. Make HF_HUB_CACHE (or HF_HOME) a writable folder and restart."
    )


def check_writable(final: Path) -> None:
    """Raise the message :func:`write_atomic_folder` would give when ``final``'s folder cannot be written
    (a read-only cache): checked before a build's pass, not after it."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(final.parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as err:
        raise _unwritable(err) from None


def measure_tokens_per_s(model: HookedTransformer, sae: SAE, settings: Settings, n_rows: int = 2) -> float:
    """Index-pass throughput on this machine from ``n_rows`` rows of random tokens (after a warm-up row):
    the model to the SAE's hook, the encoder, the per-latent statistics and the co-occurrence counts,
    as in the pass itself (the one-off logit lens and hashing are left out). The basis of the UI's time
    estimate."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, int(model.cfg.d_vocab), (n_rows + 1, settings.context_size), generator=gen)
    stats = PassStatistics(int(sae.cfg.d_sae), int(model.cfg.d_vocab), settings.index, sae.device)
    device = next(model.parameters()).device
    with queue_for(model).slot():
        stats.update(tokens[:1], encode_tokens(model, sae, tokens[:1], settings.index.tf32), 0)  # warm-up: first-call allocations, kernels
        sync(device)
        t0 = time.perf_counter()
        for row in range(1, n_rows + 1):
            stats.update(tokens[row : row + 1], encode_tokens(model, sae, tokens[row : row + 1], settings.index.tf32), row)
        sync(device)
    return n_rows * settings.context_size / max(time.perf_counter() - t0, 1e-9)


def estimate_text(n_tokens: int, tokens_per_s: float | None) -> str:
    """The time estimate the page shows: this machine's measured rate and the H100 reference."""
    h100 = n_tokens / H100_TOKENS_PER_S
    ref = f"On one H100 at Qwen3-8B's shape the pass runs at about {H100_TOKENS_PER_S:,} tokens/s ({_duration(h100)} for this)."
    if not tokens_per_s:
        return ref
    return f"About {_duration(n_tokens / tokens_per_s)} here (measured: {tokens_per_s:,.0f} tokens/s). {ref}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- the app's shared build jobs -------------------------------------------------------------------


class BuildStatus(NamedTuple):
    """A snapshot of one build, for any visitor's page."""

    state: Literal["reading", "running", "writing", "done", "cancelled", "failed"]
    tokens_done: int
    tokens_total: int
    elapsed_s: float
    tokens_per_s: float
    """0 until the first batch is done."""
    seconds_left: float | None
    """None until a rate is known."""
    message: str
    """What the source was, or why it failed."""

    @property
    def active(self) -> bool:
        return self.state in ("reading", "running", "writing")

    @property
    def fraction(self) -> float:
        return self.tokens_done / self.tokens_total if self.tokens_total else 0.0


class IndexBuild:
    """One build of one SAE's index, running in a background thread."""

    def __init__(self, key: str, description: str) -> None:
        self.key = key
        self.cancel_event = threading.Event()
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._status = BuildStatus("reading", 0, 0, 0.0, 0.0, None, description)
        self.index: li.LatentIndex | None = None
        self.thread: threading.Thread | None = None

    def status(self) -> BuildStatus:
        with self._lock:
            return self._status

    def _set(self, **changes) -> None:
        with self._lock:
            self._status = self._status._replace(**changes)

    def cancel(self) -> None:
        """Ask the build to stop after its current batch."""
        self.cancel_event.set()

    def progress(self, done: int, total: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else None
        self._set(state="running", tokens_done=done, tokens_total=total, elapsed_s=elapsed, tokens_per_s=rate, seconds_left=left)

    def run(
        self,
        model: HookedTransformer,
        sae: SAE,
        source: CorpusSource,
        n_tokens: int,
        settings: Settings,
        folder: Path,
    ) -> None:
        """The thread's body: read the corpus, index it, write it; every failure ends in the status."""
        try:
            check_writable(folder)  # a read-only cache fails now, not after the whole pass
            tokens = corpus_tokens(source, model.tokenizer, n_tokens, settings.context_size)
            if self.cancel_event.is_set():
                raise BuildCancelled("The index build was cancelled; nothing was written.")
            self._set(state="running", tokens_total=int(tokens.numel()))
            index = run_build(model, sae, tokens, settings.index, source.describe(), self.progress, self.cancel_event)
            self._set(state="writing")
            write_atomic_folder(index, folder)
            self.index = index
            self._set(state="done", seconds_left=0.0)
        except BuildCancelled as err:
            self._set(state="cancelled", message=str(err))
        # Every visitor sees a build's message: paths (the Hugging Face cache, a dataset's files) are cut
        # to names there; the operator's log keeps the whole error.
        except LatentLabError as err:
            self._set(state="failed", message=redact_paths(str(err)))
        except torch.OutOfMemoryError:
            self._set(state="failed", message="Out of memory during the index pass: index fewer tokens.")
        except Exception as err:  # a bug: shown, never a dead thread holding the SAE's slot
            log.exception("The index build failed")
            self._set(state="failed", message=redact_paths(f"The build failed: {type(err).__name__}: {str(err)[:300]}"))
        finally:
            self.finished.set()


class BuildRegistry:
    """The process's builds: at most one active build per SAE, shared by every visitor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builds: dict[str, IndexBuild] = {}

    def get(self, sae: SAE) -> IndexBuild | None:
        """The latest build of this SAE in this process (active or finished), if any."""
        with self._lock:
            return self._builds.get(sae_key(sae))

    def start(
        self,
        model: HookedTransformer,
        sae: SAE,
        source: CorpusSource,
        n_tokens: int,
        settings: Settings | None = None,
    ) -> tuple[IndexBuild, bool]:
        """Start a build unless one is active for this SAE; returns (the build, whether this call started it).

        A second visitor asking while a build runs gets the running one: one build per SAE.
        """
        key = sae_key(sae)
        settings = settings or default_settings(model)
        with self._lock:
            current = self._builds.get(key)
            if current is not None and current.status().active:
                return current, False
            build = IndexBuild(key, source.describe())
            build.thread = threading.Thread(
                target=build.run,
                args=(model, sae, source, int(n_tokens), settings, cache_root() / key),
                name=f"latent-index-{key[:8]}",
                daemon=True,
            )
            self._builds[key] = build
            build.thread.start()
            return build, True


BUILDS = BuildRegistry()
"""The process-wide builds the app's pages share."""
