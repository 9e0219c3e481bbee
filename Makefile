# The two commands a newcomer needs (see README):  make app   |   make test
# Both create .venv on first use. Where there is no NVIDIA GPU, the CPU build of torch goes in first,
# so requirements.txt's torch range is already satisfied and no multi-GB CUDA build is pulled.

VENV ?= .venv
# The CPU build of torch where there is no NVIDIA GPU. On the project's machines pip finds it in a local
# wheel folder; elsewhere PyPI's torch==2.13.0 is the CUDA build, so pass PyTorch's CPU index:
#   make TORCH_CPU="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" app
TORCH_CPU ?= torch==2.13.0
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: setup browser demo app serve test test-fast bench clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	command -v nvidia-smi >/dev/null 2>&1 || $(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: setup
	$(PY) scripts/build_demo.py

app: demo
	$(PY) -m streamlit run app.py --server.port $(PORT)

# What a Space runs (Dockerfile CMD): the same start script, serving on 0.0.0.0:$(PORT).
serve: demo
	PYTHON=$(PY) PORT=$(PORT) bash scripts/start_space.sh

# Debian's chromium for the real-browser test (tests/e2e), installed with apt-get as root; Playwright
# (requirements-dev.txt) drives it, so no Playwright browser is downloaded. Not root: a note, and the
# real-browser test skips itself.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else \
		echo "NOTE: chromium is not installed and this is not root, so the real-browser test (tests/e2e) will be skipped."; \
		echo "      Install it with: sudo apt-get install chromium"; \
	fi

# Passive OpenMP waiting: tests run the app server, a browser and torch side by side on 2 cores, where
# spinning OpenMP workers slow small-tensor loops by 10x or more.
test: setup browser
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

# The quick tier for every change: no demo build, no server or browser, nothing marked slow
# (markers in pyproject.toml), spread over 2 workers (pytest-xdist). `make test` runs everything, serially.
test-fast: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m "not demo and not e2e and not slow" -n 2

# bench/gpu.py's default is Qwen3-8B's shape on a GPU; without one, its CPU smoke test at the demo's shape.
bench: demo
	for b in bench/*.py; do echo "== $$b"; args=""; \
		if [ "$$b" = bench/gpu.py ] && ! command -v nvidia-smi >/dev/null 2>&1; then args="--preset demo-shape"; fi; \
		$(PY) $$b $$args || exit 1; done

clean-demo:
	rm -rf data/demo data/demo.partial-* data/demo.lock
