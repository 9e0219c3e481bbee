"""Load an SAE (a local SAELens folder, ``user/repo:sae_id[@revision]`` on the Hub, or a release of
SAELens's registry, ``sae-lens:RELEASE/SAE_ID``) and check it against the model it is meant for.

Both sources end in a local folder in SAELens's layout (``cfg.json``, ``sae_weights.safetensors``,
optional ``sparsity.safetensors``) that SAELens's own ``SAE.load_from_disk`` reads. A Hub SAE is one
folder of a Hub repo, fetched with huggingface_hub's ``snapshot_download`` into its cache (reused
after a restart, served under ``HF_HUB_OFFLINE=1`` once cached); other files in that folder, such as
the latent index, come along and sit next to the SAE's files in ``LoadedSAE.local_dir``.

Weights are read from safetensors only: a folder holding only pickle checkpoints is refused, never
unpickled. The one exception is a registry release whose converter reads ``.pt`` files (Qwen-Scope):
those are read only with torch's restricted ``weights_only=True`` unpickler (:mod:`sae_lib.registry`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from sae_lib import constants, registry, sae_hooks
from sae_lib.errors import CompatibilityError, SAELoadError
from sae_lib.hub import DEFAULT_HINT, download_snapshot, hub_is_offline
from sae_lib.folders import check_folder, check_safetensors_headers, pickle_refusal, read_json
from sae_lib.model import resolve_device, resolve_dtype

_HUB_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+):(?P<sae_id>[^@]*)(?:@(?P<revision>.+))?$")


@dataclass(frozen=True)
class SAESpec:
    """Where an SAE comes from, parsed from the string a user gives (``LATENT_LAB_SAE``, ``--sae``)."""

    kind: Literal["local", "hub", "registry"]
    """``local``: a folder on this machine; ``hub``: a folder inside a Hugging Face Hub repo;
    ``registry``: a release of SAELens's registry (``sae-lens:RELEASE/SAE_ID``, see :mod:`sae_lib.registry`)."""
    path: Path | None = None
    """The local folder (``kind == "local"``)."""
    repo_id: str | None = None
    """``user/repo`` on the Hub (``kind == "hub"``)."""
    sae_id: str | None = None
    """The folder inside the repo that holds the SAE's files (``kind == "hub"``)."""
    revision: str | None = None
    """Branch, tag or commit of the repo; None means ``main`` (``kind == "hub"``)."""
    release: str | None = None
    """The SAELens registry release (``kind == "registry"``; its SAE id is ``sae_id``)."""

    def __str__(self) -> str:
        if self.kind == "local":
            return str(self.path)
        if self.kind == "registry":
            return f"{registry.PREFIX}{self.release}/{self.sae_id}"
        return f"{self.repo_id}:{self.sae_id}" + (f"@{self.revision}" if self.revision else "")


def parse_sae_spec(spec: str) -> SAESpec:
    """Parse ``sae-lens:RELEASE/SAE_ID`` into a registry spec, ``user/repo:sae_id[@revision]`` into a Hub
    spec; anything else is a local folder.

    Pure: it does not look at the disk or the network. Raises :class:`SAELoadError` for a Hub spec
    with an empty or escaping SAE id.
    """
    spec = str(spec).strip()
    if not spec:
        raise SAELoadError(f"No SAE given: set {constants.ENV_SAE} to a folder or user/repo:sae_id, or unset it.")
    if registry.is_registry_spec(spec):
        release, sae_id = registry.parse(spec)
        return SAESpec(kind="registry", release=release, sae_id=sae_id)
    match = _HUB_SPEC.match(spec)
    if match is None:
        return SAESpec(kind="local", path=Path(spec).expanduser())
    sae_id = match["sae_id"].strip("/")
    if not sae_id or any(part in ("", ".", "..") for part in sae_id.split("/")):
        raise SAELoadError(
            f"SAE spec {spec!r}: the SAE id after ':' must name a folder inside the repo (e.g. "
            "user/repo:blocks.28.hook_mlp_out), without empty, '.' or '..' parts."
        )
    return SAESpec(kind="hub", repo_id=match["repo"], sae_id=sae_id, revision=match["revision"])


class LoadedSAE(NamedTuple):
    sae: SAE
    """The SAE, as SAELens's own loader built it (its class follows ``cfg.json``'s architecture)."""
    local_dir: Path | None
    """The folder its files were read from (inside the HF cache for a Hub SAE): extra artifacts such as
    the latent index are looked up here. None for a registry SAE (its files are in the converter's layout)."""
    spec: SAESpec
    """Where it came from."""


def _refuse_pickles_or_missing(folder: Path, missing: str) -> SAELoadError:
    refusal = pickle_refusal(
        folder, "SAE", f"has no {missing} but", SAELoadError,
        "Save the SAE with SAELens (`sae.save_model(folder)` writes cfg.json + safetensors) in a trusted environment.",
    )  # fmt: skip
    return refusal or SAELoadError(
        f"SAE folder {folder} has no {missing}: it is not an SAE in SAELens's layout "
        f"({constants.SAE_CFG_FILENAME}, {constants.SAE_WEIGHTS_FILENAME}, optional {constants.SPARSITY_FILENAME})."
    )


def check_sae_folder(folder: Path) -> dict:
    """Raise :class:`SAELoadError` unless ``folder`` holds a readable SAE in SAELens's layout.

    Reads ``cfg.json`` and the safetensors headers only (no weights). Returns the config dict.
    """
    check_folder(
        folder, "SAE", SAELoadError,
        give=f"Give an SAELens folder or user/repo:sae_id[@revision] on the Hub, or {DEFAULT_HINT}.",
        holds=constants.SAE_CFG_FILENAME,
    )  # fmt: skip
    cfg_path = folder / constants.SAE_CFG_FILENAME
    if not cfg_path.is_file():
        raise _refuse_pickles_or_missing(folder, constants.SAE_CFG_FILENAME)
    cfg = read_json(cfg_path, SAELoadError, "re-save the SAE with SAELens.")
    if not isinstance(cfg, dict):
        raise SAELoadError(f"{cfg_path} must hold a JSON object (SAELens's SAE config).")
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
            raise SAELoadError(f"{cfg_path} has no valid {key!r} (a positive integer): {cfg.get(key)!r}.")
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    if not (metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")):
        raise SAELoadError(f"{cfg_path} names no hook (metadata.hook_name): the SAE cannot be placed on the model.")
    weights = folder / constants.SAE_WEIGHTS_FILENAME
    if not weights.is_file():
        raise _refuse_pickles_or_missing(folder, constants.SAE_WEIGHTS_FILENAME)
    check_safetensors_headers((weights, folder / constants.SPARSITY_FILENAME), SAELoadError,
                              "Download or save the SAE again.")
    return cfg


def _hub_folder(spec: SAESpec) -> Path:
    what = f"SAE {spec}"
    snapshot = download_snapshot(spec.repo_id, what, SAELoadError, [f"{spec.sae_id}/*"], spec.revision)
    folder = snapshot / spec.sae_id
    if not folder.is_dir():
        if hub_is_offline():
            raise SAELoadError(
                f"{what} is not in the local Hugging Face cache (other files of {spec.repo_id} are) and "
                f"HF_HUB_OFFLINE=1 is set. Connect once to download it, or {DEFAULT_HINT}."
            )
        raise SAELoadError(
            f"{what}: the Hub repo {spec.repo_id} has no folder {spec.sae_id!r} (or the Hub could not be reached "
            "and only other folders of it are cached). The part after ':' must be a folder of the repo holding "
            "cfg.json and sae_weights.safetensors."
        )
    return folder


def resolve_sae_spec(spec: str) -> SAESpec:
    """What ``spec`` names: an existing folder wins over the Hub or registry reading of the same string."""
    given = str(spec).strip()
    local = Path(given).expanduser()
    return SAESpec(kind="local", path=local) if given and local.exists() else parse_sae_spec(given)


def load_sae(spec: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> LoadedSAE:
    """Load an SAE from a local SAELens folder, ``user/repo:sae_id[@revision]`` or ``sae-lens:RELEASE/SAE_ID``.

    ``device``: None picks CUDA when available, else CPU. ``dtype``: None keeps the dtype in the SAE's
    ``cfg.json``. Every failure a user can fix is an :class:`SAELoadError` saying what to do.
    """
    parsed = resolve_sae_spec(spec)
    if parsed.kind == "registry":
        dev = resolve_device(device)
        dtype_name = None if dtype is None else str(resolve_dtype(dtype, dev)).removeprefix("torch.")
        sae, _ = registry.load(parsed.release, parsed.sae_id, device=str(dev), dtype=dtype_name)
        return LoadedSAE(sae=sae, local_dir=None, spec=parsed)
    folder = _hub_folder(parsed) if parsed.kind == "hub" else parsed.path.resolve()
    check_sae_folder(folder)
    dev = resolve_device(device)
    dtype_name = None if dtype is None else str(resolve_dtype(dtype, dev)).removeprefix("torch.")
    try:
        sae = SAE.load_from_disk(folder, device=str(dev), dtype=dtype_name)
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # SAELens raises bare ValueError/KeyError/RuntimeError on bad configs/weights
        raise SAELoadError(
            f"SAELens could not load the SAE in {folder}: {type(err).__name__}: {str(err)[:500]}. Its cfg.json and "
            "weights do not fit together (or the architecture is unknown to this SAELens version)."
        ) from None
    fold_training_scaler(sae, folder)
    sae.eval()
    return LoadedSAE(sae=sae, local_dir=folder, spec=parsed)


def training_scaler(folder: Path):
    """The activation scaling a SAELens training checkpoint in ``folder`` was trained under (its
    ``activation_scaler.json``: a norm scaling factor, optional whitening), or None when there is none to
    apply (a finished SAE, or ``final_N``, whose weights have it folded in already)."""
    from sae_lens.constants import ACTIVATION_SCALER_CFG_FILENAME
    from sae_lens.training.activation_scaler import ActivationScaler

    path = Path(folder) / ACTIVATION_SCALER_CFG_FILENAME
    if not path.is_file():
        return None
    scaler = ActivationScaler()
    try:
        scaler.load(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SAELoadError(
            f"{path} (a training checkpoint's activation scaling) is unreadable: {type(err).__name__}: {str(err)[:200]}. "
            "Load the finished SAE (train_sae.py's --out) or another checkpoint."
        ) from None
    return scaler if scaler.scaling_factor is not None or scaler.whitening is not None else None


def fold_training_scaler(sae: SAE, folder: Path) -> bool:
    """Fold a training checkpoint's activation scaling into ``sae``'s weights, as SAELens's trainer does
    when training ends (same calls, same order); True when there was one.

    Why: a checkpoint's weights expect the scaled activations the trainer fed them
    (``normalize_activations="expected_average_only_in"``, the presets' setting), and
    ``SAE.load_from_disk`` does not apply that scaling: loaded as it is, a checkpoint read raw activations,
    and its latents fired at the wrong strengths and an index built on it was wrong, silently."""
    scaler = training_scaler(folder)
    if scaler is None:
        return False
    if scaler.scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(scaler.scaling_factor)
    if scaler.whitening is not None:
        sae.fold_activation_whitening(mean=scaler.whitening.mean, whitening_matrix=scaler.whitening.matrix,
                                      unwhitening_matrix=scaler.whitening.inverse_matrix)
    return True


def hook_width(model: HookedTransformer, hook_name: str, head_index: int | None = None) -> int:
    """Width of the activations at ``hook_name`` as an SAE reads them, from a 1-token forward pass.

    Per-head hooks (``hook_z``/``hook_q``/...: (batch, pos, head, d_head)) count all heads flattened,
    as SAELens's hook_z reshaping does, or one head's ``d_head`` when ``head_index`` is set. Names
    that are not plain hook points (``blocks.L.mlp.hook_in``) are mapped by :mod:`sae_lib.sae_hooks`.
    """
    tokens = torch.zeros((1, 1), dtype=torch.long)  # (batch, pos): any token id works for a shape
    with torch.no_grad():
        acts = sae_hooks.read_activations(model, hook_name, tokens)
    if head_index is not None:
        if acts.ndim == 4 and not 0 <= head_index < acts.shape[-2]:
            raise CompatibilityError(
                f"The SAE reads head {head_index} of {hook_name!r} (hook_head_index), but "
                f"{getattr(model.cfg, 'model_name', 'the model')} has heads 0 to {acts.shape[-2] - 1} there. "
                "Load the model this SAE was trained on, or an SAE for this model."
            )
        return int(acts.shape[-1])
    if acts.ndim == 4 and hook_name.rsplit(".", 1)[-1] in ("hook_z", "hook_q", "hook_k", "hook_v", "hook_result"):
        return int(acts.shape[-2] * acts.shape[-1])  # (batch, pos, head, d_head) -> head * d_head
    return int(acts.shape[-1])


def _check_hook(model: HookedTransformer, hook_name: str, role: str) -> None:
    if hook_name in model.hook_dict:
        return
    try:
        sae_hooks.resolve(model, hook_name)
        return
    except CompatibilityError:
        pass
    model_name = getattr(model.cfg, "model_name", "the model")
    names = list(model.hook_dict)
    close = difflib.get_close_matches(str(hook_name), names, n=5, cutoff=0.6)
    suffix = str(hook_name).rsplit(".", 1)[-1]
    same_kind = [n for n in names if n.endswith("." + suffix)]
    suggestions = close or same_kind[:3] + same_kind[-2:] or names[:5]
    raise CompatibilityError(
        f"The SAE {role} hook {hook_name!r}, which {model_name} ({model.cfg.n_layers} layers) does not have. "
        f"Valid hooks include: {', '.join(dict.fromkeys(suggestions))}. Load the model this SAE was trained on, "
        "or an SAE for this model."
    )


def check_sae_matches_model(sae: SAE, model: HookedTransformer) -> None:
    """Raise :class:`CompatibilityError` unless ``sae`` reads a hook of ``model`` of width ``d_in`` (and,
    for a transcoder, writes a hook of width ``d_out``).

    Also switches on the optional hook points the SAE uses (``hook_mlp_in``, ...: see
    :func:`sae_lib.sae_hooks.prepare_model`), so call it while loading, before the model is shared.
    """
    hook_name = sae_hooks.input_hook(sae)
    model_name = getattr(model.cfg, "model_name", "the model")
    _check_hook(model, hook_name, "reads")
    sae_hooks.prepare_model(model, sae)
    width = hook_width(model, hook_name, getattr(sae.cfg.metadata, "hook_head_index", None))
    if width != sae.cfg.d_in:
        raise CompatibilityError(
            f"The SAE's d_in is {sae.cfg.d_in} but hook {hook_name!r} of {model_name} has width {width}. "
            "The SAE was trained on another model: load the model it was trained on, or an SAE for this model."
        )
    if sae_hooks.is_transcoder(sae):
        out = sae_hooks.output_hook(sae)
        _check_hook(model, out, "writes")
        out_width = hook_width(model, out)
        if out_width != sae_hooks.d_out(sae):
            raise CompatibilityError(
                f"The transcoder writes width {sae_hooks.d_out(sae)} (d_out) but its output hook {out!r} of "
                f"{model_name} has width {out_width}: load the model it was trained on."
            )
