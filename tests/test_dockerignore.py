"""The image gets the code, never secrets, local environments or training runs (.dockerignore)."""

import fnmatch

import pytest

from sae_lib.constants import REPO_ROOT


def patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def excluded(path: str) -> bool:
    """Docker's rule: a path is left out when it, or a folder above it, matches a pattern ("**" spans
    folders). No pattern here starts with "!", so the last match does not need tracking."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns():
        assert not pattern.startswith("!")
        for cand in candidates:
            if fnmatch.fnmatchcase(cand, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(cand.rsplit("/", 1)[-1], pattern[3:])
            ):
                return True
    return False


@pytest.mark.parametrize(
    "path",
    [".env", "prod.env", ".env.local", "scripts/.env", ".streamlit/secrets.toml", "runs/qwen3/sae_weights.safetensors",
     "wandb/run-20260101/files/config.yaml", "checkpoints/step_100/state.pt", "runs/demo/checkpoints/x/cfg.json",
     ".venv/bin/python", ".git/config", "data/demo/model/model.safetensors"],
)
def test_secrets_environments_and_runs_stay_out_of_the_image(path):
    assert excluded(path), path


@pytest.mark.parametrize(
    "path",
    ["app.py", "sae_lib/steering.py", "requirements.txt", "scripts/start_space.sh", ".streamlit/config.toml", "README.md"],
)
def test_the_code_goes_in(path):
    assert not excluded(path), path
