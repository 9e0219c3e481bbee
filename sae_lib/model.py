"""Load a language model as a TransformerLens ``HookedTransformer``, from a name or a local folder.

One function, :func:`load_model`, serves the app, the scripts and the tests. It accepts

* a TransformerLens model name (``Qwen/Qwen3-8B``, ``qwen3-0.6b``, ...): the Hugging Face snapshot is
  fetched into huggingface_hub's cache (safetensors, config and tokenizer files only) and then loaded
  as a local folder, so a restarted process reuses it and ``HF_HUB_OFFLINE=1`` works once cached;
* a local Hugging Face folder (``config.json`` + ``*.safetensors`` + tokenizer files), e.g. the
  embedded demo model.

Both go through the same path (:func:`load_model_from_folder`), so the demo exercises exactly the code
that loads Qwen3-8B. The weights get ``from_pretrained_no_processing`` semantics (no LayerNorm folding,
no centering, no value-bias folding, no refactoring): what SAELens uses when it trains, so the
activations the app sees are the ones the SAE was trained on.

Memory: TransformerLens's own path keeps the Hugging Face model and a converted copy alive together
(about two copies of the weights). Here the converted state dict is mostly *views* of the Hugging Face
tensors; the ``HookedTransformer`` is built with its parameters on the meta device and takes those
tensors over with ``load_state_dict(assign=True)``, so one copy of the weights exists (``bench/load.py``
measures it). The Hugging Face module is kept: it is the generation engine (:mod:`sae_lib.engine`,
found with ``engine_for(model)``), and the ``HookedTransformer`` reads the same storage. Many of its
parameters are therefore non-contiguous views (use ``.reshape``/``.contiguous()``, not ``.view``).

Safety: weights are read from safetensors only (a folder holding only pickle checkpoints is refused,
never unpickled) and ``trust_remote_code`` is never enabled (TransformerLens's Qwen3 entry asks for it;
Qwen3 is native in transformers 5 and needs no remote code).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading

from sae_lib import constants
from sae_lib.engine import attach_engine
from sae_lib.errors import InputError, ModelLoadError
from sae_lib.folders import check_folder, check_safetensors_headers, pickle_refusal, read_json
from sae_lib.hub import DEFAULT_HINT, download_snapshot

HF_CONFIG_FILENAME = "config.json"

SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
"""Files fetched for a named model: config, safetensors weights (+ index), tokenizer files. Pickle
checkpoints (``*.bin``) are never downloaded."""

DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as given, else CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"Unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N' (or leave it unset).") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"Device {device!r} was asked for but this machine has no usable CUDA GPU: "
            f"unset {constants.ENV_DEVICE} (or pass device=None) to run on the CPU."
        )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``dtype`` as given (a torch dtype or a name like ``"bfloat16"``), else bfloat16 on CUDA and
    float32 elsewhere (bfloat16 matmuls are slow on most CPUs and float32 is what tests compare in)."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_NAMES.values():
            raise InputError(f"Unsupported dtype {dtype}: use float32, bfloat16 or float16.")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPE_NAMES:
        raise InputError(f"Unknown dtype {dtype!r}: use float32, bfloat16 or float16 (or leave it unset).")
    return DTYPE_NAMES[key]


BASE_MODEL_NAMES = (
    "Qwen/Qwen3-0.6B-Base",
    "Qwen/Qwen3-1.7B-Base",
    "Qwen/Qwen3-4B-Base",
    "Qwen/Qwen3-8B-Base",
    "Qwen/Qwen3-14B-Base",
)
"""Pretrained (base) checkpoints of Qwen3 models TransformerLens lists only in their post-trained form.
Same architecture and config format, so they load exactly like ``Qwen/Qwen3-8B`` (Qwen-Scope's SAEs
were trained on ``Qwen/Qwen3-8B-Base``)."""


def official_model_name(source: str) -> str:
    """TransformerLens's official name for a model name or alias, also for :data:`BASE_MODEL_NAMES`.

    Raises ``ValueError`` for a name neither knows.
    """
    for name in BASE_MODEL_NAMES:
        if source.lower() == name.lower():
            return name
    return tl_loading.get_official_model_name(source)


def _looks_like_path(source: str) -> bool:
    """True for strings that can only be a path (not ``user/repo`` nor a bare alias like ``gpt2``)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def check_hf_folder(folder: Path) -> list[Path]:
    """Raise :class:`ModelLoadError` unless ``folder`` is a loadable Hugging Face model folder.

    Checks, without reading any weights: the folder exists, has ``config.json`` (valid JSON), has
    safetensors weights (a pickle-only folder is refused), whose headers are intact. Returns the
    safetensors files.
    """
    check_folder(
        folder, "Model", ModelLoadError,
        give="Give an existing Hugging Face folder (config.json + *.safetensors + tokenizer) or a "
        f"TransformerLens model name such as Qwen/Qwen3-8B, or {DEFAULT_HINT}.",
        holds="config.json and the weights",
    )  # fmt: skip
    cfg_path = folder / HF_CONFIG_FILENAME
    if not cfg_path.is_file():
        raise ModelLoadError(
            f"Model folder {folder} has no {HF_CONFIG_FILENAME}: it is not a Hugging Face model folder. "
            "Save the model with `save_pretrained(folder)` (transformers)."
        )
    read_json(cfg_path, ModelLoadError, "re-save the model with save_pretrained.")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        refusal = pickle_refusal(
            folder, "Model", "only has", ModelLoadError,
            "Convert them to safetensors (`model.save_pretrained(folder, safe_serialization=True)` in a "
            "trusted environment).",
        )  # fmt: skip
        raise refusal or ModelLoadError(f"Model folder {folder} has no *.safetensors weights.")
    check_safetensors_headers(weights, ModelLoadError, "Re-download or re-save the model.")
    return weights


def _check_weights_complete(folder: Path, weights: list[Path]) -> None:
    """A sharded checkpoint lists its shards in an index: every one of them must be present."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (json.JSONDecodeError, KeyError, AttributeError):
        raise ModelLoadError(f"{index} is not a valid safetensors index; re-save the model.") from None
    missing = sorted(shards - {p.name for p in weights})
    if missing:
        raise ModelLoadError(
            f"Model folder {folder} is missing weight shards {', '.join(missing[:3])}: the download or copy "
            "was interrupted. Download it again."
        )


def load_model_from_folder(
    folder: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    config_name: str | None = None,
) -> HookedTransformer:
    """Load a local Hugging Face folder as a ``HookedTransformer`` (no weight processing), with the
    Hugging Face module sharing its weights registered as its generation engine.

    ``config_name``: the TransformerLens name to build the config from, when the folder is the
    snapshot of a named model (TransformerLens special-cases some families by name); None reads the
    folder's ``config.json``. Peak memory is about one copy of the weights (see the module docstring).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder).expanduser().resolve()  # absolute: TransformerLens matches names by prefix
    weights = check_hf_folder(folder)
    _check_weights_complete(folder, weights)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)

    try:
        cfg = tl_loading.get_pretrained_model_config(config_name or str(folder), device=str(dev), dtype=dt)
    except Exception as err:  # TransformerLens raises bare ValueError/KeyError for unsupported configs
        raise ModelLoadError(
            f"TransformerLens cannot build a config for {folder}: {type(err).__name__}: {err}. "
            "Use a model architecture TransformerLens supports (e.g. Qwen3ForCausalLM)."
        ) from None
    cfg.trust_remote_code = False  # TransformerLens's Qwen3 entry sets it; transformers 5 has Qwen3 natively
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as err:
        raise ModelLoadError(
            f"No usable tokenizer in {folder} ({type(err).__name__}: {err}). Save the tokenizer next to the "
            "model with `tokenizer.save_pretrained(folder)`."
        ) from None

    hf_kwargs: dict = {"dtype": dt, "use_safetensors": True, "trust_remote_code": False}
    if dev.type != "cpu":
        hf_kwargs["device_map"] = {"": str(dev)}  # straight onto the GPU, no CPU copy first
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(str(folder), **hf_kwargs)
    except torch.OutOfMemoryError:
        raise
    except Exception as err:
        raise ModelLoadError(
            f"Could not load the weights in {folder} ({type(err).__name__}: {err}). Check that the folder is "
            "complete and was saved with save_pretrained."
        ) from None
    hf_model.eval()
    hf_model.requires_grad_(False)

    return hooked_transformer_over(hf_model, cfg, tokenizer, str(folder))


def hooked_transformer_over(
    hf_model: torch.nn.Module, cfg: HookedTransformerConfig, tokenizer: object | None, source: str
) -> HookedTransformer:
    """A ``HookedTransformer`` whose parameters are views of ``hf_model``'s tensors (no weight
    processing), with ``hf_model`` registered as its generation engine (:func:`sae_lib.engine.engine_for`).

    ``cfg`` is TransformerLens's config for the model (``get_pretrained_model_config``); ``source`` names
    the model in error messages and lets TransformerLens pick its weight converter.
    """
    from accelerate import init_empty_weights

    dt = next(hf_model.parameters()).dtype
    with torch.no_grad():
        try:
            # Mostly views of hf_model's tensors (rearranges and transposes), plus small zero biases.
            state_dict = tl_loading.get_pretrained_state_dict(source, cfg, hf_model=hf_model, dtype=dt)
        except (NotImplementedError, ValueError) as err:
            raise ModelLoadError(f"TransformerLens cannot convert the weights in {source}: {err}") from None
        with init_empty_weights(include_buffers=False):  # parameters on meta, buffers (rotary) real
            model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        result = model.load_state_dict(state_dict, strict=False, assign=True)
    del state_dict  # the HookedTransformer's parameters are now views of hf_model's tensors

    left_on_meta = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if left_on_meta or result.unexpected_keys:
        raise ModelLoadError(
            f"The weights in {source} do not fill this TransformerLens model: missing "
            f"{left_on_meta[:5]}, unexpected {list(result.unexpected_keys)[:5]}."
        )
    # The parameters stay views of the Hugging Face tensors, on every device: the Hugging Face module is
    # the one that generates (sae_lib.engine) and both must read one copy of the weights, not two.
    model.move_model_modules_to_device()  # the zero biases and buffers; the weights are already there
    model.eval()
    attach_engine(model, hf_model, getattr(tokenizer, "eos_token_id", None))
    return model


def snapshot_for_name(official_name: str) -> Path:
    """The Hugging Face snapshot folder of a named model, from huggingface_hub's cache or the Hub.

    Only config, safetensors and tokenizer files are fetched (never pickle checkpoints).
    """
    return download_snapshot(official_name, f"Model {official_name}", ModelLoadError, SNAPSHOT_PATTERNS)


def load_model(
    source: str,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> HookedTransformer:
    """A ``HookedTransformer`` from a local Hugging Face folder or a TransformerLens model name.

    ``device``: None picks CUDA when available, else CPU. ``dtype``: None picks bfloat16 on CUDA and
    float32 on CPU; a torch dtype or a name (``"float32"``, ``"bfloat16"``, ``"float16"``) overrides.
    Every failure a user can fix is a :class:`ModelLoadError` saying what to do.
    """
    source = str(source).strip()
    if not source:
        raise ModelLoadError(f"No model given: set {constants.ENV_MODEL} to a folder or a model name, or unset it.")
    path = Path(source).expanduser()
    if path.exists():
        return load_model_from_folder(path, device=device, dtype=dtype)
    try:
        official = official_model_name(source)
    except ValueError:
        if _looks_like_path(source):
            return load_model_from_folder(path, device=device, dtype=dtype)  # raises "does not exist"
        raise ModelLoadError(
            f"{source!r} is neither an existing local folder nor a model name TransformerLens supports "
            "(e.g. Qwen/Qwen3-8B, Qwen/Qwen3-8B-Base, Qwen/Qwen3-0.6B). Check the spelling, or give a local Hugging Face folder."
        ) from None
    if official in tl_loading.NON_HF_HOSTED_MODEL_NAMES:
        raise ModelLoadError(f"{official} is not hosted on the Hugging Face Hub; give a local folder instead.")
    # TransformerLens forces trust_remote_code=True when it reads the config of some names (Qwen3
    # among them): read those from the downloaded folder instead. Other families (Llama, Gemma) are
    # configured by name in TransformerLens and must keep their name.
    config_name = None if official.startswith(tl_loading.NEED_REMOTE_CODE_MODELS) else official
    folder = snapshot_for_name(official)
    model = load_model_from_folder(folder, device=device, dtype=dtype, config_name=config_name)
    # Read from the snapshot, the config names the model after its folder: the snapshot's commit hash.
    # Messages ("..., which Qwen3-8B (36 layers) does not have") and the index's metadata name it as
    # TransformerLens does a named model.
    model.cfg.model_name = official.split("/")[-1]
    return model
