"""Run the app as a real server for tests: the Space's start script on a free local port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sae_lib.constants import REPO_ROOT

START_SCRIPT = "scripts/start_space.sh"
"""The one start command (the Dockerfile's CMD runs it too)."""
HEALTH_PATH = "/_stcore/health"
# Variables that would point the app away from the embedded default (or change its limits).
APP_VARS = ("LATENT_LAB_MODEL", "LATENT_LAB_SAE", "LATENT_LAB_DEVICE", "LATENT_LAB_DTYPE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """HTTP GET: (status, body); (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


@dataclass
class Server:
    url: str
    """Base URL, e.g. ``http://127.0.0.1:51234``."""
    process: subprocess.Popen
    log: Path
    """stdout + stderr of the server."""

    def health(self, timeout: float = 5.0) -> tuple[int, str]:
        return get(self.url + HEALTH_PATH, timeout)


@contextmanager
def serve(
    demo_root: Path,
    log: Path,
    extra_env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    startup_timeout: float = 90.0,
) -> Iterator[Server]:
    """Start ``scripts/start_space.sh`` on the embedded default at ``demo_root``; stop it on exit."""
    env = {k: v for k, v in os.environ.items() if k not in APP_VARS and not k.startswith("LATENT_LAB_MAX_")}
    env.update(
        PYTHON=sys.executable,
        PORT=str(free_port()),
        ADDRESS="127.0.0.1",
        LATENT_LAB_DEMO_DIR=str(demo_root),
        # One thread per torch op: the server shares this machine with the test process.
        OMP_NUM_THREADS="1",
        **(extra_env or {}),
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", START_SCRIPT, *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stopping it stops streamlit too
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{env['PORT']}", proc, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while server.health(timeout=2)[0] != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"the start script exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no healthy server after {startup_timeout:.0f}s:\n{log.read_text()}")
            time.sleep(0.3)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
