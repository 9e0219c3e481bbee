"""What the app works on: one model, one SAE on one of its hooks, and the SAE's latent index.

``load_workspace`` reads ``LATENT_LAB_MODEL`` / ``LATENT_LAB_SAE`` and falls back to the embedded
default (building it if needed) when they are unset. When a configured model or SAE cannot be
loaded (an 8B model with no GPU, no network, a missing token) it also falls back, and says why in
``fallback_reason`` so the app can show it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from sae_lib import constants, sae_hooks
from sae_lib.errors import InputError, LatentLabError

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    model: HookedTransformer
    """The language model, shared by every visitor: never mutate it; steer only through scoped hooks."""
    sae: SAE
    """The SAE on ``sae.cfg.metadata.hook_name`` of ``model``."""
    model_source: str
    """Where the model came from: a TransformerLens name or a local folder."""
    sae_source: str
    """Where the SAE came from: a local folder, ``user/repo:sae_id[@revision]`` or ``sae-lens:RELEASE/SAE_ID``."""
    sae_dir: Path | None
    """Local folder holding the SAE's files (the Hub cache folder for a Hub SAE; None for a registry SAE)."""
    index: object | None = None
    """The latent index (``sae_lib.latent_index.LatentIndex``) when one ships with the SAE."""
    index_dir: Path | None = None
    """The folder the loaded index came from (the SAE's, or the app's index cache); its explanations sit there."""
    index_problem: str | None = None
    """Why no index is loaded (none built, or built for another SAE), for the pages to show."""
    fallback_reason: str | None = None
    """Set when the configured model/SAE failed and the embedded default was loaded instead."""
    warm_up: threading.Thread | None = None
    """The background compilation of the engine's decode step (:func:`start_warm_up`), if one was started."""

    @property
    def engine_notice(self) -> str | None:
        """Why generation runs on TransformerLens instead of the fast engine (an unsupported architecture,
        or an SAE hook the engine has no module for); None when the engine serves."""
        from sae_lib.engine import engine_for, engine_notice
        from sae_lib.generation import engine_serving

        if engine_for(self.model) is None:
            return engine_notice(self.model)
        if engine_serving(self.model, self.sae) is None:  # the rule generation itself follows
            return (
                f"The fast generation engine cannot steer at {self.hook_name!r} (no module there, a hook it can "
                "read but not write, or a transcoder): generation uses TransformerLens (slower, same results)."
            )
        return None

    @property
    def hook_name(self) -> str:
        return self.sae.cfg.metadata.hook_name

    def describe(self) -> dict[str, object]:
        """The facts the sidebar shows."""
        from sae_lib.engine import engine_for

        param = next(self.model.parameters())
        engine = engine_for(self.model)
        return {
            "model": self.model_source,
            "sae": self.sae_source,
            "hook": self.hook_name,
            "hook_out": sae_hooks.output_hook(self.sae),
            "architecture": str(self.sae.cfg.architecture()),
            "d_in": int(self.sae.cfg.d_in),
            "d_sae": int(self.sae.cfg.d_sae),
            "device": str(param.device),
            "dtype": str(param.dtype).removeprefix("torch."),
            "index": "loaded" if self.index is not None else (self.index_problem or "none"),
            "engine": engine.mode if engine is not None and self.engine_notice is None else "TransformerLens",
        }


@dataclass
class PairSource:
    """Which model and SAE to load: the flags shared by the scripts that index and explain latents."""

    model: str = ""
    """TransformerLens model name (Qwen/Qwen3-8B) or local Hugging Face folder; empty: the embedded demo model."""
    sae: str = ""
    """Local SAELens folder, Hub spec user/repo:sae_id[@revision], or SAELens registry sae-lens:RELEASE/SAE_ID; empty: the embedded demo SAE."""
    device: str = ""
    """cuda, cpu, ...; empty: cuda when available."""
    dtype: str = ""
    """Model dtype (float32, bfloat16, ...); empty: the loader's default."""

    def load(self) -> "LoadedPair":
        """Load the pair (the embedded demo's model/SAE where a source is empty), checked as the app's is."""
        model_source, sae_source = self.model, self.sae
        if model_source and not sae_source:  # before loading an 8B model for an SAE that cannot fit it
            raise InputError(f"--model {model_source} was given without --sae: the embedded demo SAE only "
                             "fits the demo model. Name the SAE with --sae (a folder, user/repo:sae_id or "
                             "sae-lens:RELEASE/SAE_ID).")
        if not model_source or not sae_source:
            demo_model, demo_sae = demo_sources()
            model_source, sae_source = model_source or demo_model, sae_source or demo_sae
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, loaded = load_checked_pair(model_source, sae_source, device, self.dtype or None)
        return LoadedPair(model, loaded, model_source, sae_source, device)


class LoadedPair(NamedTuple):
    model: HookedTransformer
    loaded: Any
    """The SAE with where it came from (``sae_lib.sae.LoadedSAE``)."""
    model_source: str
    sae_source: str
    device: str


def load_checked_pair(model_source: str, sae_source: str, device: str | None, dtype: str | None):
    """The model and an SAE for it, loaded and checked against each other (a registry SAE's own model
    first, then the hook and its width). Returns ``(model, LoadedSAE)``; the app's workspace and the
    scripts that index and explain latents all load through here."""
    # Imported here: these modules pull in heavy optional paths only when a workspace is built.
    from sae_lib.model import load_model
    from sae_lib.sae import check_sae_matches_model, load_sae, resolve_sae_spec

    spec = resolve_sae_spec(sae_source)
    if spec.kind == "registry":  # the registry names the model it was trained on: checked before either
        from sae_lib import registry  # is downloaded or loaded (an 8B model, a 2 GB SAE)

        registry.check_model(registry.lookup(spec.release, spec.sae_id), model_source)
    model = load_model(model_source, device=device, dtype=dtype)
    loaded = load_sae(sae_source, device=str(next(model.parameters()).device))
    check_sae_matches_model(loaded.sae, model)
    return model, loaded


def _load_pair(model_source: str, sae_source: str, device: str | None, dtype: str | None) -> Workspace:
    model, loaded = load_checked_pair(model_source, sae_source, device, dtype)
    ws = Workspace(
        model=model,
        sae=loaded.sae,
        model_source=model_source,
        sae_source=sae_source,
        sae_dir=loaded.local_dir,
    )
    _attach_index(ws)
    return ws


def start_warm_up(ws: Workspace) -> threading.Thread | None:
    """Compile the engine's decode step in the background (``generation.warm_up``), when it compiles
    (CUDA): the pages are usable at once, and a generation asked for meanwhile waits in the model's
    queue instead of compiling. The app calls this once after loading; scripts and benches, which time
    their own first calls or never decode through the compiled step, do not. Sets ``ws.warm_up``."""
    from sae_lib.generation import engine_serving, warm_up

    engine = engine_serving(ws.model, ws.sae)
    if engine is None or not engine.compile_decode:
        return None

    def run() -> None:
        try:
            warm_up(ws.model, ws.sae)
        except Exception:  # the first generation then compiles (or falls back to eager) on its own
            log.exception("Warming up compiled decoding failed; the first generation will compile instead")

    thread = threading.Thread(target=run, name="latent-lab-warm-up", daemon=True)
    thread.start()
    ws.warm_up = thread
    return thread


def _attach_index(ws: Workspace) -> None:
    try:
        from sae_lib.latent_index import load_index
    except ImportError:  # the latent index module is optional for the app frame
        ws.index_problem = "not available"
        return
    try:
        ws.index = None if ws.sae_dir is None else load_index(ws.sae_dir, ws.sae)
        if ws.index is None:
            ws.index_problem = "none shipped with this SAE"
        else:
            ws.index_dir = ws.sae_dir
    except LatentLabError as err:
        ws.index_problem = str(err)
    if ws.index is None:  # one built in the app earlier (persistent cache keyed by the weights' hash)
        from sae_lib.index_builds import cache_dir, load_cached

        cached = load_cached(ws.sae)
        if cached is not None:
            ws.index, ws.index_problem, ws.index_dir = cached, None, cache_dir(ws.sae)


def demo_sources(build: bool = True) -> tuple[str, str]:
    """Model and SAE folders of the embedded default, building it first when ``build`` and missing."""
    from sae_lib.demo.build import ensure_demo

    try:
        paths = ensure_demo(constants.demo_dir()) if build else None
    except OSError as err:  # a read-only image, a full disk: the app says so instead of a traceback
        raise InputError(
            f"The embedded demo could not be built in {constants.demo_dir()} ({err.strerror or type(err).__name__}). "
            f"Set {constants.ENV_DEMO_DIR} to a writable folder with about 100 MB free, or build it there first "
            "(python scripts/build_demo.py)."
        ) from err
    root = paths.root if paths else constants.demo_dir()
    return str(root / constants.DEMO_MODEL_SUBDIR), str(root / constants.DEMO_SAE_SUBDIR)


def load_workspace(
    model_source: str | None = None,
    sae_source: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    fallback: bool = True,
) -> Workspace:
    """Load the configured model + SAE (arguments, else environment), else the embedded default.

    With ``fallback`` a failure to load a configured pair loads the embedded default instead and
    records the reason; without it, the :class:`LatentLabError` propagates.
    """
    model_source = model_source or os.environ.get(constants.ENV_MODEL) or None
    sae_source = sae_source or os.environ.get(constants.ENV_SAE) or None
    device = device or os.environ.get(constants.ENV_DEVICE) or None
    dtype = dtype or os.environ.get(constants.ENV_DTYPE) or None
    if model_source is None and sae_source is None:
        return _load_pair(*demo_sources(), device=device, dtype=dtype)
    if model_source is None or sae_source is None:
        missing = constants.ENV_SAE if sae_source is None else constants.ENV_MODEL
        err: LatentLabError = LatentLabError(
            f"{constants.ENV_MODEL} and {constants.ENV_SAE} must be set together; {missing} is unset."
        )
    else:
        try:
            return _load_pair(model_source, sae_source, device=device, dtype=dtype)
        except LatentLabError as exc:
            err = exc
        except torch.OutOfMemoryError:
            err = LatentLabError(
                f"Out of memory while loading {model_source}: this machine is too small for it."
            )
    if not fallback:
        raise err
    try:
        ws = _load_pair(*demo_sources(), device=device, dtype=dtype)
    except LatentLabError as demo_err:  # neither loads: say why for both, the configured pair's first
        raise LatentLabError(
            f"The configured model/SAE could not be loaded ({err}), and neither could the embedded demo it falls "
            f"back to ({demo_err}). Fix {constants.ENV_MODEL} / {constants.ENV_SAE} and restart."
        ) from demo_err
    ws.fallback_reason = (
        f"The configured model/SAE could not be loaded, so the embedded demo is shown instead. "
        f"Reason: {err} To fix it, change {constants.ENV_MODEL} / {constants.ENV_SAE} "
        "(or the Space's variables and secrets) and restart."
    )
    return ws
