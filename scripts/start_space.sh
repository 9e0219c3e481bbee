#!/usr/bin/env bash
# Start Latent Lab: the ONE start command. The Dockerfile's CMD runs it on a Space, `make serve` runs it
# locally, and tests/test_deploy.py runs it (without Docker) and checks the health endpoint.
#
# Knobs (environment; everything else about the app is configured through LATENT_LAB_* variables,
# see README "Deploying to a Hugging Face Space"):
#   PORT     port to serve on                       (default 8501, the Space's app_port)
#   ADDRESS  address to bind                        (default 0.0.0.0, reachable from outside a container)
#   PYTHON   interpreter with requirements.txt      (default: python3 on PATH)
#   HF_HOME  Hugging Face cache; when unset and the Space has persistent storage mounted at /data,
#            it goes to /data/huggingface so the ~16 GB model survives restarts.
# Extra arguments are passed on to `streamlit run` (the test uses them to enable a script check).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
PORT="${PORT:-8501}"
ADDRESS="${ADDRESS:-0.0.0.0}"

if [ -z "${HF_HOME:-}" ] && [ -d /data ] && [ -w /data ]; then
    export HF_HOME=/data/huggingface
fi
if [ -n "${HF_HOME:-}" ]; then
    mkdir -p "$HF_HOME"
fi

# Fail at start, with the message, if a LATENT_LAB_MAX_* variable is malformed: every page reads the
# limits, so a bad one would otherwise surface as an error on every page instead of in the Space's log.
"$PY" - <<'PYCHECK'
import sys

from sae_lib.errors import LatentLabError

try:
    from sae_lib.limits import LIMITS
except LatentLabError as err:
    sys.exit(f"Latent Lab cannot start: {err}")
print(f"Latent Lab limits: {LIMITS}", flush=True)
PYCHECK

# Headless, no file watcher, no usage stats: .streamlit/config.toml, which `streamlit run` reads here.
exec "$PY" -m streamlit run app.py --server.port "$PORT" --server.address "$ADDRESS" "$@"
