# Latent Lab on a Hugging Face Docker Space (README front matter: sdk: docker, app_port: 8501).
# A thin layer: requirements.txt + the one start command, scripts/start_space.sh (which the tests run
# without Docker). Model, SAE and token come from the Space's variables and secrets at run time:
#   LATENT_LAB_MODEL, LATENT_LAB_SAE (variables), HF_TOKEN (secret). See README, "Deploying".
FROM python:3.11-slim

# Spaces run containers as uid 1000; that user owns the app and the /data persistent storage.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /home/user/app

# On Linux x86-64, PyPI's torch wheel is the CUDA build (CUDA libraries come as pip wheels), so the
# plain requirements give a GPU torch; no CUDA base image is needed, the Space provides the driver.
COPY --chown=user requirements.txt .
RUN pip install --user -r requirements.txt

COPY --chown=user . .
# The project itself (sae_lib), editable so the scripts import it without path tricks; its
# dependencies are the requirements installed above.
RUN pip install --user --no-deps -e .
# The embedded default is built into the image (deterministic, no network, a few CPU minutes), so the
# fallback shown when the configured model cannot load is there at once.
RUN python scripts/build_demo.py

EXPOSE 8501
CMD ["bash", "scripts/start_space.sh"]
