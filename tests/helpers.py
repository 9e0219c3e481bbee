"""Test helpers shared by several test modules (no fixtures here: those live in conftest.py)."""

import functools
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import huggingface_hub.constants

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hf_cache(cache_dir: Path, repo_id: str, src: Path, subfolder: str = "", revision: str = "main") -> Path:
    """Lay out ``src``'s files in ``cache_dir`` exactly as huggingface_hub's cache stores a model repo.

    ``models--user--repo/snapshots/<commit>/<subfolder>/...`` plus ``refs/<revision>`` naming the
    commit: what a completed ``snapshot_download`` leaves behind. Returns the snapshot folder.
    """
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / FAKE_COMMIT
    dest = snapshot / subfolder if subfolder else snapshot
    shutil.copytree(src, dest, dirs_exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(FAKE_COMMIT)
    return snapshot


def use_hf_cache(monkeypatch, cache_dir: Path, offline: bool = True) -> None:
    """Point huggingface_hub at ``cache_dir`` and (by default) switch it offline, as the env vars would.

    huggingface_hub reads ``HF_HUB_OFFLINE`` / ``HF_HUB_CACHE`` once at import, so the module
    constants are patched along with the environment.
    """
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)


def make_hub_unreachable(monkeypatch) -> None:
    """Point huggingface_hub at a closed local port: every Hub request fails at once, like no network."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")


def script_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment a test runs a script in: this one, with the repo root put first on PYTHONPATH
    (kept, not replaced, so packages found through PYTHONPATH stay importable)."""
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@functools.cache
def load_script(name: str):
    """``scripts/<name>.py`` as a module (``scripts/`` is not a package), loaded once per session."""
    from sae_lib.constants import REPO_ROOT

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name while the file executes
    spec.loader.exec_module(module)
    return module
