"""Build the embedded default: corpus -> tokenizer -> tiny Qwen3 -> JumpReLU SAE (+ evals) -> latent index.

The build is cached and atomic. It writes into a ``<dir>.partial-<pid>`` folder and renames it to
``<dir>`` only once everything (last of all ``build.json``, which records the config hash) is in
place, so an interrupted build never leaves half-written artifacts where the app looks, and the next
run starts clean. A second run with the same config reuses the folder. The SAE is trained through
the ``demo`` training preset (``sae_lib.training.presets.demo``), the same recipe ``train_sae.py
--preset demo`` runs, and ships with its evals on the held-out stories (``evals.json``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sae_lib import constants
from sae_lib.demo.config import BUILD_VERSION, SMALL_DEMO, DemoConfig  # noqa: F401  (re-exported)
from sae_lib.demo.corpus import TOPICS, Corpus, generate_corpus
from sae_lib.demo.lm import train_lm
from sae_lib.packing import pack_texts
from sae_lib.demo.tokenizer import train_tokenizer
from sae_lib.errors import InputError

@dataclass(frozen=True)
class DemoPaths:
    root: Path
    model: Path
    """Hugging Face folder: config.json, model.safetensors, tokenizer files."""
    sae: Path
    """SAELens folder: cfg.json, sae_weights.safetensors, sparsity.safetensors, latent index files."""
    corpus: Path
    """train.jsonl / heldout.jsonl with ``text`` and ``topic``."""
    manifest: dict


def _paths(root: Path, manifest: dict) -> DemoPaths:
    return DemoPaths(
        root=root,
        model=root / constants.DEMO_MODEL_SUBDIR,
        sae=root / constants.DEMO_SAE_SUBDIR,
        corpus=root / constants.DEMO_CORPUS_SUBDIR,
        manifest=manifest,
    )


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / constants.DEMO_BUILD_MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_built(root: Path, cfg: DemoConfig) -> bool:
    manifest = read_manifest(root)
    return manifest is not None and manifest.get("config_digest") == cfg.digest()


def _write_corpus(corpus: Corpus, folder: Path) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "heldout"):
        with open(folder / f"{split}.jsonl", "w") as f:
            for story in getattr(corpus, split):
                f.write(json.dumps({"text": story.text, "topic": story.topic}) + "\n")


def load_corpus_split(root: Path, split: str = "heldout") -> list[dict]:
    """The demo corpus's ``train`` or ``heldout`` stories as dicts with ``text`` and ``topic``."""
    path = root / constants.DEMO_CORPUS_SUBDIR / f"{split}.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f]


DEMO_ENTRIES = frozenset({constants.DEMO_BUILD_MANIFEST, constants.DEMO_CORPUS_SUBDIR, constants.DEMO_MODEL_SUBDIR,
                          constants.DEMO_SAE_SUBDIR})
"""What a demo folder holds at its top level: a build may replace a folder holding only these."""


def check_replaceable(out: Path) -> None:
    """Refuse (:class:`InputError`) to build over anything but nothing, an empty folder or a demo build
    (a complete, stale or damaged one): a build replaces ``out`` whole, and ``--out`` or
    ``LATENT_LAB_DEMO_DIR`` pointed at a folder of one's own must not delete it."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out} is a file, not a folder: give a new or empty folder for the demo.")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5:,} more" if len(foreign) > 5 else "")
        raise InputError(f"{out} holds files that are not the demo's ({shown}); building there would replace "
                         "them. Give a new or empty folder for the demo, or the demo's own folder.")


def build_demo(out: Path, cfg: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> DemoPaths:
    """Build everything into ``out`` (replacing it atomically; only nothing or a demo build, see
    :func:`check_replaceable`). Prefer :func:`ensure_demo`."""
    out = Path(out)
    check_replaceable(out)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _build_into(tmp, cfg, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing behind
        raise
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, out)
    log(f"demo ready in {out} ({manifest['seconds']} s)")
    return _paths(out, manifest)


def _build_into(tmp: Path, cfg: DemoConfig, log: Callable[[str], None]) -> dict:
    from sae_lib.model import load_model

    t0 = time.perf_counter()
    stamp = lambda: f"[{time.perf_counter() - t0:5.1f}s]"  # noqa: E731

    # 1. corpus
    corpus = generate_corpus(cfg.seed, cfg.n_train, cfg.n_heldout)
    _write_corpus(corpus, tmp / constants.DEMO_CORPUS_SUBDIR)
    log(f"{stamp()} corpus: {len(corpus.train)} train / {len(corpus.heldout)} held-out stories, {len(TOPICS)} topics")

    # 2. tokenizer
    model_dir = tmp / constants.DEMO_MODEL_SUBDIR
    tokenizer = train_tokenizer([s.text for s in corpus.train], cfg.vocab_size)
    log(f"{stamp()} tokenizer: byte-level BPE, {len(tokenizer)} tokens")
    train_rows = pack_texts([s.text for s in corpus.train], tokenizer, cfg.lm.context).tokens
    heldout_rows = pack_texts([s.text for s in corpus.heldout], tokenizer, cfg.lm.context).tokens

    # 3. language model
    every = max(1, cfg.lm.steps // 10)

    def lm_progress(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            log(f"{stamp()} LM step {step}/{steps}  loss {loss:.3f}")

    lm = train_lm(cfg.lm, tokenizer, train_rows, heldout_rows, progress=lm_progress)
    lm.model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    log(
        f"{stamp()} LM: held-out loss {lm.heldout_loss:.3f} nats vs unigram entropy "
        f"{lm.unigram_entropy:.3f} nats ({lm.tokens_seen:,} tokens, {lm.tokens_seen / lm.seconds:,.0f} tok/s)"
    )
    lm_stats = {"heldout_loss": round(lm.heldout_loss, 4), "unigram_entropy": round(lm.unigram_entropy, 4),
                "tokens_seen": lm.tokens_seen}
    del lm

    # 4. SAE, through the same loader the app uses and the demo training preset
    model = load_model(str(model_dir), device="cpu", dtype="float32")
    sae_dir = tmp / constants.DEMO_SAE_SUBDIR
    evals = _train_sae(model, sae_dir, cfg)
    s = evals["summary"]
    log(f"{stamp()} SAE: JumpReLU {model.cfg.d_model} -> {cfg.d_sae} on {cfg.hook_name}, {cfg.sae_training_tokens:,} tokens; "
        f"held-out L0 {s['l0']:.1f}, explained variance {100 * s['explained_variance']:.1f}%, "
        f"{100 * s['dead_fraction']:.0f}% dead")

    # 5. latent index over the held-out split
    _build_index(model, sae_dir, heldout_rows, cfg, log, stamp)

    manifest = {
        "config_digest": cfg.digest(),
        "config": dataclasses.asdict(cfg),
        "hook_name": cfg.hook_name,
        "lm": lm_stats,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (tmp / constants.DEMO_BUILD_MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: marks completion
    return manifest


def _train_sae(model, sae_dir: Path, cfg: DemoConfig) -> dict:
    """Train the demo SAE with the ``demo`` preset into ``sae_dir``; returns its evals on every held-out row."""
    from sae_lens import SAE

    from sae_lib.demo.data import as_dataset, demo_corpus_rows
    from sae_lib.evals import evaluate_sae, save_evals
    from sae_lib.training.artifacts import finish_sae_folder
    from sae_lib.training.config import configure_run
    from sae_lib.training.presets import demo as demo_preset
    from sae_lib.training.runner import run_training

    rows = demo_corpus_rows(model.tokenizer, cfg.sae_context, seed=cfg.seed, n_train=cfg.n_train, n_heldout=cfg.n_heldout)
    # The build keeps no checkpoints: it is redone from scratch when interrupted.
    run_cfg = configure_run(demo_preset(cfg), d_in=model.cfg.d_model, out=sae_dir, checkpoints=False, log=lambda _: None)
    run_training(run_cfg, model=model, dataset=as_dataset(rows.train), log=lambda _: None)
    sae = SAE.load_from_disk(str(sae_dir))
    evals = evaluate_sae(sae, model, run_cfg, dataset=as_dataset(rows.heldout), n_batches=None)
    save_evals(evals, sae_dir)
    finish_sae_folder(sae_dir, evals)
    return evals


def _build_index(model, sae_dir: Path, rows: torch.Tensor, cfg: DemoConfig, log, stamp) -> None:
    from sae_lens import SAE

    from sae_lib.corpora import CorpusSource
    from sae_lib.latent_index import IndexConfig, build_index, save_index

    sae = SAE.load_from_disk(str(sae_dir))
    # Named as the app and build_latent_index.py name the same corpus (the Latent browser shows it).
    index = build_index(model, sae, rows, IndexConfig(top_k=cfg.index_top_k), description=CorpusSource("demo").describe())
    save_index(index, sae_dir)
    log(f"{stamp()} latent index: {rows.numel():,} held-out tokens")
    from sae_lib.demo.guide import write_demo_guide  # the Home page's topic guide, tied to this index

    guide = write_demo_guide(model, sae, sae_dir, sae_dir.parent, index.meta.build_id)
    log(f"{stamp()} topic guide: " + ", ".join(f"{g.topic} -> {g.latent}" for g in guide))


def ensure_demo(out: Path | None = None, cfg: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> DemoPaths:
    """The demo at ``out`` (default: ``constants.demo_dir()``), building it first if missing or stale.

    Safe to call from several processes at once: a file lock lets one build while the others wait.
    """
    out = Path(out) if out is not None else constants.demo_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    if is_built(out, cfg):
        return _paths(out, read_manifest(out) or {})
    with open(out.with_name(f"{out.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(out, cfg):  # another process built it while we waited
            return _paths(out, read_manifest(out) or {})
        for leftover in out.parent.glob(f"{out.name}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # an interrupted build: never reused
        log(f"Building the embedded demo in {out} (a few minutes on 2 CPU cores, once)...")
        return build_demo(out, cfg, log)
