"""Pushing a trained SAE to the Hugging Face Hub in the layout SAELens's uploader produces (downloads: ``sae_lib.hub``).

``<repo>/<sae_id>/{cfg.json, sae_weights.safetensors, sparsity.safetensors, runner_cfg.json}`` (as
``sae_lens.upload_saes_to_huggingface`` writes them), plus our ``evals.json`` and latent index files
when the folder has them, and a model card. So ``SAE.from_pretrained("user/repo", "<sae_id>")``
loads it, and the app finds its latent index next to it.

Pure helpers (file selection, model card, staging a folder) are separate from the one function
that talks to the Hub (:func:`push_staged`), so everything but the network call is tested as is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sae_lens.constants import RUNNER_CFG_FILENAME

from sae_lib import constants
from sae_lib.errors import CompatibilityError, InputError, SAELoadError
from sae_lib.evals import load_evals
from sae_lib.published import public_cfg
from sae_lib.sae import check_sae_folder as check_loadable_sae_folder
from sae_lib.sae import load_sae, training_scaler

ENV_TOKEN = "HF_TOKEN"

UPLOAD_FILENAMES: tuple[str, ...] = (
    constants.SAE_CFG_FILENAME,
    constants.SAE_WEIGHTS_FILENAME,
    constants.SPARSITY_FILENAME,
    RUNNER_CFG_FILENAME,
    constants.EVALS_FILENAME,
    constants.INDEX_STATS_FILENAME,
    constants.INDEX_CONTEXTS_FILENAME,
    constants.INDEX_META_FILENAME,
    constants.INDEX_COUNTS_FILENAME,
    constants.EXPLANATIONS_FILENAME,
)
"""What goes up from an SAE folder, when present: SAELens's files, our evals and latent index.
Checkpoints and the train job files stay local."""
REQUIRED_FILENAMES = (constants.SAE_CFG_FILENAME, constants.SAE_WEIGHTS_FILENAME)


def check_sae_folder(folder: Path) -> dict[str, Any]:
    """The SAE's ``cfg.json`` if ``folder`` holds an SAE in SAELens's layout, else SAELoadError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SAELoadError(f"{folder} is not a folder. Point --sae-dir at the folder train_sae.py wrote (its --out).")
    missing = [name for name in REQUIRED_FILENAMES if not (folder / name).is_file()]
    if missing:
        raise SAELoadError(
            f"{folder} is not an SAE folder: {', '.join(missing)} missing. Point --sae-dir at a folder in "
            "SAELens's layout (what train_sae.py writes to --out, or SAE.save_model)."
        )
    # The rest (valid cfg.json, readable safetensors, pickle refusal) is the loader's own check, so a
    # folder that pushes is a folder the app can load.
    cfg = check_loadable_sae_folder(folder)
    scaler = training_scaler(folder)
    if scaler is not None:  # the uploaded weights would lack it: everyone loading them would read wrong latents
        raise SAELoadError(
            f"{folder} is a training checkpoint: its weights expect SAELens's activation scaling "
            f"(activation_scaler.json{f', factor {scaler.scaling_factor:.4g}' if scaler.scaling_factor else ''}), "
            "which the published files would not carry. Push the finished SAE (train_sae.py's --out, after the "
            "run ends or --resume finishes it)."
        )
    if "architecture" not in cfg:
        raise SAELoadError(f"{folder / constants.SAE_CFG_FILENAME} lacks 'architecture': not a SAELens SAE config.")
    return cfg


def upload_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that would be uploaded, in ``UPLOAD_FILENAMES`` order."""
    return [Path(folder) / name for name in UPLOAD_FILENAMES if (Path(folder) / name).is_file()]


_INDEX_FILENAMES = (constants.INDEX_META_FILENAME, constants.INDEX_STATS_FILENAME, constants.INDEX_CONTEXTS_FILENAME,
                    constants.INDEX_COUNTS_FILENAME)


def check_index_for_upload(folder: Path) -> None:
    """CompatibilityError unless the latent index and explanations in ``folder`` (when present) are this
    SAE's and this index build's: the checks the app and explain_latents.py make on load, made before
    anything is published (an index of other weights, or another build's explanations, went up as is)."""
    folder = Path(folder)
    build_id = None
    if any((folder / name).exists() for name in _INDEX_FILENAMES):
        from sae_lib.latent_index import load_index

        index = load_index(folder, load_sae(str(folder), device="cpu").sae)
        if index is None:
            raise CompatibilityError(f"The latent index in {folder} is incomplete ({constants.INDEX_META_FILENAME} "
                                     "missing). Rebuild it with scripts/build_latent_index.py, or delete its files.")
        build_id = index.meta.build_id
    explanations = folder / constants.EXPLANATIONS_FILENAME
    if explanations.exists():
        from sae_lib.explain.store import stored_build

        if build_id is None or stored_build(explanations) != build_id:
            raise CompatibilityError(
                f"{explanations.name} in {folder} was not written for the latent index there (another build, "
                "or no index). Run scripts/explain_latents.py on this SAE to explain its index (it keeps the old "
                "file aside), or delete the file."
            )


def check_repo_id(repo_id: str) -> str:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c in repo_id for c in " :@"):
        raise InputError(f"{repo_id!r} is not a Hub repo id; give it as user/repo (or org/repo).")
    return repo_id


def check_sae_id(sae_id: str) -> str:
    if not sae_id or sae_id.startswith("/") or {".", ".."} & set(sae_id.split("/")) or any(c in sae_id for c in " :@"):
        raise InputError(f"{sae_id!r} is not a usable SAE id: a relative folder name such as blocks.28.hook_mlp_out.")
    return sae_id


def default_sae_id(cfg: dict[str, Any]) -> str:
    """The hook name (``blocks.28.hook_mlp_out``): what ``user/repo:<sae_id>`` then reads like."""
    return (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name") or "sae"


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.4g}"


def model_card(repo_id: str, sae_id: str, cfg: dict[str, Any], runner_cfg: dict[str, Any] | None,
               evals: dict[str, Any] | None) -> str:
    """README.md text: base model, hook, width, training tokens, evals, and how to load it."""
    meta = cfg.get("metadata") or {}
    model = meta.get("model_name") or (runner_cfg or {}).get("model_name") or "unknown"
    hook = meta.get("hook_name") or "unknown"
    tokens = (runner_cfg or {}).get("training_tokens")
    lines = [
        "---",
        "library_name: saelens",
        "tags: [sparse-autoencoder, interpretability, latent-lab]",
        "---",
        "",
        f"# {cfg.get('architecture', 'SAE')} SAE on {model} `{hook}`",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{model}` |",
        f"| hook | `{hook}` |",
        f"| architecture | {cfg.get('architecture')} |",
        f"| width | {cfg['d_in']:,} -> {cfg['d_sae']:,} latents ({cfg['d_sae'] / cfg['d_in']:g}x) |",
        f"| training tokens | {tokens:,} |" if isinstance(tokens, int) else "| training tokens | unknown |",
        f"| dataset | `{meta.get('dataset_path') or (runner_cfg or {}).get('dataset_path') or 'unknown'}` |",
        f"| context size | {meta.get('context_size', 'unknown')} |",
        f"| SAELens | {meta.get('sae_lens_training_version') or cfg.get('sae_lens_training_version') or 'unknown'} |",
        "",
        "## Evals",
        "",
    ]
    summary = (evals or {}).get("summary")
    if summary:
        lines += [
            f"SAELens `run_evals` on {summary.get('n_tokens', 0):,} tokens:",
            "",
            "| metric | value |",
            "|---|---|",
            f"| explained variance | {_fmt(summary.get('explained_variance'), pct=True)} |",
            f"| MSE | {_fmt(summary.get('mse'))} |",
            f"| L0 | {_fmt(summary.get('l0'))} |",
            f"| CE loss recovered | {_fmt(summary.get('ce_loss_score'), pct=True)}"
            f"{' (not meaningful: see below)' if summary.get('ce_loss_score_meaningful') is False else ''} |",
            f"| CE loss clean / with SAE / hook zero-ablated (nats) | {_fmt(summary.get('ce_loss_without_sae'))} / "
            f"{_fmt(summary.get('ce_loss_with_sae'))} / {_fmt(summary.get('ce_loss_with_ablation'))} |",
            f"| KL with SAE | {_fmt(summary.get('kl_div_with_sae'))} |",
            f"| dead latents | {_fmt(summary.get('dead_fraction'), pct=True)} |",
            f"| dense latents (> {summary.get('dense_threshold', constants.DENSE_THRESHOLD):g} of tokens) | {_fmt(summary.get('dense_fraction'), pct=True)} |",
        ]
        if summary.get("ce_loss_score_meaningful") is False and summary.get("ce_loss_score_note"):
            lines += ["", summary["ce_loss_score_note"]]
    else:
        lines.append("No evals were saved with this SAE.")
    lines += [
        "",
        "## Load",
        "",
        "```python",
        "from sae_lens import SAE",
        "",
        f'sae = SAE.from_pretrained("{repo_id}", "{sae_id}")',
        "```",
        "",
        f"In Latent Lab: `LATENT_LAB_SAE={repo_id}:{sae_id}`.",
        "",
    ]
    return "\n".join(lines)


def stage_upload(sae_dir: Path, repo_id: str, sae_id: str | None, dest: Path) -> Path:
    """Write into ``dest`` exactly the folder that would be uploaded; returns ``dest/<sae_id>``."""
    cfg = check_sae_folder(sae_dir)
    check_repo_id(repo_id)
    check_index_for_upload(sae_dir)
    sae_id = check_sae_id(sae_id or default_sae_id(cfg))
    dest = Path(dest)
    target = dest / sae_id
    if target.exists() and any(target.iterdir()):
        raise InputError(f"{target} already has files; give --dry-run an empty or new folder.")
    target.mkdir(parents=True, exist_ok=True)
    evals = load_evals(sae_dir)
    summary = (evals or {}).get("summary")
    # SAELens's JSON goes up without local paths and with measured (or no) L0 / dead counts, also
    # for folders written before train_sae.py cleaned them (sae_lib.published).
    cfg = public_cfg(cfg, summary)
    runner_cfg = _read_json(Path(sae_dir) / RUNNER_CFG_FILENAME)
    runner_cfg = public_cfg(runner_cfg, summary) if runner_cfg is not None else None
    for path in upload_files(sae_dir):
        if path.name == constants.SAE_CFG_FILENAME:
            (target / path.name).write_text(json.dumps(cfg, indent=2))
        elif path.name == RUNNER_CFG_FILENAME and runner_cfg is not None:
            (target / path.name).write_text(json.dumps(runner_cfg, indent=2))
        else:
            shutil.copy2(path, target / path.name)
    card = model_card(repo_id, sae_id, cfg, runner_cfg, evals)
    (dest / "README.md").write_text(card)
    (target / "README.md").write_text(card)  # kept with the SAE when the repo's README is someone else's
    return target


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def token_from_env(environ: dict[str, str] | None = None) -> str:
    """``HF_TOKEN`` from the environment (the only place a token is read from)."""
    token = (os.environ if environ is None else environ).get(ENV_TOKEN, "").strip()
    if not token:
        raise InputError(
            f"{ENV_TOKEN} is not set. Create a write token at https://huggingface.co/settings/tokens and "
            f"export {ENV_TOKEN}=... before pushing (it is read from the environment only, never printed)."
        )
    return token


def push_staged(staged: Path, repo_id: str, token: str, revision: str = "main", private: bool = False,
                sae_id: str | None = None) -> str:
    """Upload a staged folder (from :func:`stage_upload`) to ``repo_id``; the only network call.

    Creates the repo (and branch) when missing; keeps a README the repo already has (this SAE's card
    is in its own folder then). Returns the commit URL.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    ignore = ["README.md"] if api.file_exists(repo_id, "README.md", revision=revision) else None
    commit = api.upload_folder(
        folder_path=str(staged),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=f"Upload SAE {sae_id}" if sae_id else "Upload SAE",
        ignore_patterns=ignore,
    )
    return str(getattr(commit, "commit_url", commit))
