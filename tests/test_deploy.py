"""Deployment: the Dockerfile's steps, the Space's README front matter, and the one start command
(run here without Docker) serving a healthy app on the embedded default."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml
from huggingface_hub import SpaceHardware

from sae_lib.constants import ENV_MODEL, ENV_SAE, REPO_ROOT
from sae_lib.limits import Limits, env_var
from tests.server import START_SCRIPT, serve

APP_PORT = 8501


def dockerfile_steps() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    steps, pending = [], ""
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            instruction, _, rest = pending.strip().partition(" ")
            steps.append((instruction.upper(), rest.strip()))
            pending = ""
    return steps


def front_matter() -> dict:
    text = (REPO_ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "the Space's configuration must open README.md"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_dockerfile_steps():
    steps = dockerfile_steps()
    kinds = [k for k, _ in steps]
    assert kinds[0] == "FROM" and "python:3.11" in steps[0][1]
    # Non-root: the last USER is a named non-root user, set before anything is installed or run.
    users = [i for i, (k, _) in enumerate(steps) if k == "USER"]
    assert users and steps[users[-1]][1] not in ("root", "0", "0:0")
    runs = [(i, a) for i, (k, a) in enumerate(steps) if k == "RUN"]
    install = [i for i, a in runs if "pip install" in a and "-r requirements.txt" in a]
    assert len(install) == 1 and install[0] > users[-1]
    assert all(i > users[-1] for i, a in runs if "useradd" not in a)
    # requirements.txt is copied on its own before the install (a code change keeps the install layer).
    copy_reqs = [i for i, (k, a) in enumerate(steps) if k == "COPY" and a.split()[-2:] == ["requirements.txt", "."]]
    assert copy_reqs and copy_reqs[0] < install[0]
    # The project installs (sae_lib importable from scripts/) after the code is copied, before the demo build.
    copy_all = [i for i, (k, a) in enumerate(steps) if k == "COPY" and a.split()[-2:] == [".", "."]]
    project = [i for i, a in runs if "pip install" in a and "--no-deps -e ." in a]
    demo = [i for i, a in runs if "scripts/build_demo.py" in a]
    assert copy_all and project and demo and copy_all[0] < project[0] < demo[0]
    assert ("EXPOSE", str(APP_PORT)) in steps
    # One start command, the script the health test below runs.
    cmds = [a for k, a in steps if k in ("CMD", "ENTRYPOINT")]
    assert len(cmds) == 1 and json.loads(cmds[0]) == ["bash", START_SCRIPT]
    assert (REPO_ROOT / START_SCRIPT).is_file()
    # Nothing secret or model-specific is baked in: model, SAE and token come from the Space at run time.
    env_lines = " ".join(a for k, a in steps if k in ("ENV", "ARG"))
    for var in ("HF_TOKEN", ENV_MODEL, ENV_SAE):
        assert var not in env_lines


def test_dockerignore_keeps_local_artifacts_out():
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", "test-artifacts"} <= ignored


def test_readme_configures_a_docker_space():
    meta = front_matter()
    assert meta["sdk"] == "docker"
    assert meta["app_port"] == APP_PORT
    assert meta["suggested_hardware"] in {h.value for h in SpaceHardware}
    assert len(meta.get("short_description", "")) <= 60  # the Hub's limit


def test_readme_deployment_section_covers_what_an_operator_sets():
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Deploying to a Hugging Face Space") :]
    hardware = front_matter()["suggested_hardware"]
    for needed in (hardware, "16.4 GB", "HF_TOKEN", ENV_MODEL, ENV_SAE, "/data", "first start"):
        assert needed in section, needed
    # Every bound a Space can change is documented under its variable's name.
    for field in dataclasses.fields(Limits):
        assert env_var(field.name) in text, field.name


def run_start_script(env_updates: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **env_updates}
    return subprocess.run(
        ["bash", START_SCRIPT, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_start_script_refuses_a_bad_limit_with_the_message():
    done = run_start_script({"LATENT_LAB_MAX_SAMPLES": "lots"})
    assert done.returncode != 0
    assert "Latent Lab cannot start: LATENT_LAB_MAX_SAMPLES='lots' is not a whole number" in done.stderr
    assert "Traceback" not in done.stderr


def test_start_script_puts_the_hf_cache_on_persistent_storage_when_present(tmp_path):
    # The script's /data rule, exercised on a stand-in path: the script up to its limits check, then echo.
    script = (REPO_ROOT / START_SCRIPT).read_text()
    assert "HF_HOME=/data/huggingface" in script
    body = script.replace("/data", str(tmp_path / "data")).split('"$PY" - <<')[0] + 'echo "HF_HOME=${HF_HOME:-}"\n'
    env = {k: v for k, v in os.environ.items() if k != "HF_HOME"} | {"PYTHON": sys.executable}
    run = lambda: subprocess.run(  # noqa: E731
        ["bash", "-c", body, "start"], cwd=REPO_ROOT / "scripts", env=env, capture_output=True, text=True, timeout=60
    )
    assert run().stdout.strip().endswith("HF_HOME=")  # no /data: the default cache
    (tmp_path / "data").mkdir()
    out = run()
    assert out.stdout.strip().endswith(f"HF_HOME={tmp_path}/data/huggingface"), out.stderr
    assert (tmp_path / "data" / "huggingface").is_dir()
    env["HF_HOME"] = str(tmp_path / "mine")  # an explicit HF_HOME wins
    assert run().stdout.strip().endswith(f"HF_HOME={tmp_path}/mine")


@pytest.mark.e2e
def test_start_script_serves_a_healthy_app_that_stays_healthy_while_busy(demo_paths, tmp_path):
    """The start command serves on the embedded default; /_stcore/health answers "ok" also while the
    first script run loads the model (seconds of work on the server), and that run succeeds."""
    log = tmp_path / "server.log"
    with serve(demo_paths.root, log, args=("--server.scriptHealthCheckEnabled", "true")) as server:
        assert server.health() == (200, "ok")
        # The script check runs app.py in a session on the server: the first run loads the workspace.
        result: dict[str, object] = {}

        def run_app_once() -> None:
            from tests.server import get

            result["script"] = get(server.url + "/_stcore/script-health-check", timeout=120)

        busy = threading.Thread(target=run_app_once)
        busy.start()
        latencies = []
        while busy.is_alive():
            start = time.monotonic()
            assert server.health(timeout=10) == (200, "ok")
            latencies.append(time.monotonic() - start)
            time.sleep(0.2)
        busy.join()
        assert result["script"] == (200, "ok"), log.read_text()
        assert len(latencies) >= 3, "the app's first run was too short to check health during it"
        assert max(latencies) < 5.0  # answered while busy, not after
    text = log.read_text()
    assert "Latent Lab limits:" in text and "Traceback" not in text
