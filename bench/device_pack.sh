#!/bin/bash
# Packs what the lent GPU machine's image lacks into .whl/site312.tar.xz, for bench/device_run.sh.
#
# The device image (the `device` tool) has Python 3.12, torch, numpy, pandas, pyarrow and an older
# transformers / huggingface_hub, no network, and no SAELens, TransformerLens or Streamlit. This
# downloads those packages (and the pure dependencies the image lacks) as Python 3.12 manylinux
# wheels, at the versions this checkout's .venv has, installs them into one folder without
# dependencies (so no CUDA torch is pulled), drops what no test or bench reads (wandb's service
# binary, Streamlit's web assets, plotly's JupyterLab extension), and compresses it: about 19 MB,
# under the 64 MiB a device call carries. .whl/ is git-ignored: name it in the call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NAMES="annotated-types beartype better-abc datasets defusedxml dill distro docstring-parser fancy-einsum
googleapis-common-protos httpcore2 httpx2 huggingface-hub importlib-resources itsdangerous multiprocess
opentelemetry-api opentelemetry-exporter-http-transport opentelemetry-exporter-otlp-common
opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-proto-http opentelemetry-proto
opentelemetry-sdk opentelemetry-semantic-conventions platformdirs plotly plotly-express pydantic
pydantic-core python-dotenv python-multipart sae-lens simple-parsing sniffio starlette streamlit tenacity
transformer-lens transformers truststore typeguard typing-inspection tzdata uvicorn wandb watchdog websockets
pytest-xdist execnet"
FREEZE=$($PY -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-')
SPECS=()
for name in $NAMES; do
  pin=$(grep -E "^${name}==" <<<"$FREEZE" || true)
  SPECS+=("${pin:-$name}")  # this venv's version where it has the package
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
$PY -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --target "$WORK/site" "${SPECS[@]}"
rm -rf "$WORK/site/wandb/bin" "$WORK/site/streamlit/static/static" "$WORK/site/plotly/labextension" "$WORK/site/bin"
find "$WORK/site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p .whl
tar -C "$WORK/site" -cJf .whl/site312.tar.xz .
ls -la .whl/site312.tar.xz
