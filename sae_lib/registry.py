"""SAEs from SAELens's registry (``pretrained_saes.yaml``), named ``sae-lens:RELEASE/SAE_ID``.

SAELens ships a directory of published SAEs: a *release* (``qwen-scope-3-8b-base-w64k-l50``,
``mwhanna-qwen3-8b-transcoders``) names a Hub repo, the model it was trained on, a converter for its
file layout, and its SAE ids (``layer0`` ... ``layer35``), some with a Neuronpedia id. Such an SAE is
loaded with SAELens's own ``SAE.from_pretrained(release, sae_id)``, which downloads through
huggingface_hub's cache (reused after a restart, served under ``HF_HUB_OFFLINE=1`` once cached).

Why ``sae-lens:`` in front: a Hub SAE is ``user/repo:sae_id``, whose repo has a ``/`` *before* the
colon. ``sae-lens:`` has none, so no Hub spec reads as a registry spec or back, and a release name
alone (``gpt2-small-res-jb``) could also be a local folder. Release names never contain ``/``, so the
first ``/`` after the prefix splits release from SAE id, and SAE ids may contain ``/`` themselves
(``sae-lens:gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71``).

Safety: some converters read pickled ``.pt`` checkpoints with ``torch.load`` (Qwen-Scope's
``layerN.sae.pt``). While SAELens loads, :func:`weights_only_torch_load` forces every ``torch.load``
to the restricted ``weights_only=True`` unpickler, which rebuilds tensors and plain containers and
refuses any other global (so a checkpoint that would run code is refused, and runs nothing); an
explicit ``weights_only=False`` or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot loosen it.
"""

from __future__ import annotations

import difflib
import json
import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from sae_lens import SAE

from sae_lib.errors import CompatibilityError, SAELoadError
from sae_lib.hub import DEFAULT_HINT, hub_is_offline

PREFIX = "sae-lens:"
"""What marks an SAE spec as a registry release: ``sae-lens:RELEASE/SAE_ID``."""

NEURONPEDIA_URL = "https://www.neuronpedia.org"


class RegistryEntry(NamedTuple):
    """One SAE of SAELens's registry."""

    release: str
    sae_id: str
    repo_id: str
    """The Hub repo holding its files."""
    path: str
    """Its file or folder inside the repo."""
    model: str
    """The model it was trained on, as the registry names it (``Qwen/Qwen3-8B-Base``, ``qwen3-8b``)."""
    neuronpedia_id: str | None
    """``model/sae`` on Neuronpedia, when it is hosted there."""


def is_registry_spec(spec: str) -> bool:
    return str(spec).strip().startswith(PREFIX)


def parse(spec: str) -> tuple[str, str]:
    """``sae-lens:RELEASE/SAE_ID`` -> (release, sae_id); :class:`SAELoadError` when a part is missing."""
    body = str(spec).strip().removeprefix(PREFIX)
    release, _, sae_id = body.partition("/")
    if not release or not sae_id:
        raise SAELoadError(
            f"SAE spec {spec!r}: a SAELens registry SAE is written {PREFIX}RELEASE/SAE_ID, e.g. "
            f"{PREFIX}qwen-scope-3-8b-base-w64k-l50/layer20 or {PREFIX}mwhanna-qwen3-8b-transcoders/layer_20."
        )
    return release, sae_id


def _directory() -> dict:
    # Looked up through the module each call (not imported by name) so it is SAELens's current one.
    from sae_lens.loading import pretrained_saes_directory

    return pretrained_saes_directory.get_pretrained_saes_directory()


def _close(word: str, choices: list[str], n: int = 5) -> list[str]:
    return difflib.get_close_matches(word, choices, n=n, cutoff=0.5)


def lookup(release: str, sae_id: str) -> RegistryEntry:
    """The registry's entry; an unknown release or SAE id is a :class:`SAELoadError` listing close matches."""
    directory = _directory()
    info = directory.get(release)
    if info is None:
        close = _close(release, list(directory))
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise SAELoadError(
            f"{release!r} is not a release in SAELens's registry ({len(directory)} releases).{hint} The list is at "
            "https://decoderesearch.github.io/SAELens/latest/pretrained_saes/ ."
        )
    if sae_id not in info.saes_map:
        ids = list(info.saes_map)
        close = _close(sae_id, ids)
        some = ", ".join(close or ids[:5])
        raise SAELoadError(
            f"Release {release!r} has no SAE id {sae_id!r}; it has {len(ids)} ids, "
            f"{'close matches' if close else 'e.g.'}: {some}."
        )
    return RegistryEntry(
        release=release,
        sae_id=sae_id,
        repo_id=info.repo_id,
        path=info.saes_map[sae_id],
        model=info.model,
        neuronpedia_id=(info.neuronpedia_id or {}).get(sae_id),
    )


# --- loading -------------------------------------------------------------------------------------

_TORCH_LOAD_LOCK = threading.Lock()


@contextmanager
def weights_only_torch_load() -> Iterator[None]:
    """Within the ``with``, every ``torch.load`` uses the restricted ``weights_only=True`` unpickler.

    ``torch.load`` is swapped process-wide (SAELens's converters call it through the ``torch``
    module), so concurrent loads are serialised by a lock; any other thread calling ``torch.load``
    meanwhile is restricted too, which is this project's rule anyway.
    """
    with _TORCH_LOAD_LOCK:
        original = torch.load

        def restricted(*args, **kwargs):
            kwargs["weights_only"] = True  # overrides an explicit False and the environment
            kwargs.pop("pickle_module", None)  # only torch's restricted unpickler
            return original(*args, **kwargs)

        torch.load = restricted
        try:
            yield
        finally:
            torch.load = original


def load(release: str, sae_id: str, device: str, dtype: str | None = None) -> tuple[SAE, RegistryEntry]:
    """``SAE.from_pretrained(release, sae_id)`` with pickles restricted and every failure explained."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    entry = lookup(release, sae_id)
    what = f"SAE {PREFIX}{release}/{sae_id} (Hub repo {entry.repo_id}, file {entry.path})"
    try:
        with weights_only_torch_load():
            sae = SAE.from_pretrained(release, sae_id, device=device, dtype=dtype or "float32")
    except pickle.UnpicklingError as err:
        lines = [ln for ln in str(err).splitlines() if "GLOBAL" in ln or "global" in ln]
        why = f" ({lines[0].strip()[:200]})" if lines else ""
        raise SAELoadError(
            f"{what} is a pickle checkpoint that asks for more than tensors{why}, so torch's restricted "
            "weights_only unpickler refused it. Loading it fully could run arbitrary code: it is refused and "
            "nothing in it was run. Use an SAE saved as safetensors, or convert this one in a trusted environment."
        ) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE=1 is set" if hub_is_offline() else "the Hub cannot be reached (no network?)"
        raise SAELoadError(
            f"{what} is not in the local Hugging Face cache and {why}. Connect once to download it (later runs "
            f"reuse the cache), or {DEFAULT_HINT}."
        ) from None
    except GatedRepoError:
        raise SAELoadError(f"{what} is in a gated repo: accept its terms on huggingface.co and set HF_TOKEN.") from None
    except (RepositoryNotFoundError, EntryNotFoundError):
        raise SAELoadError(f"{what}: the repo or file does not exist on the Hub (or is private: set HF_TOKEN).") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", "?")
        raise SAELoadError(f"{what}: the Hub answered with HTTP {status}; try again later or {DEFAULT_HINT}.") from None
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # converters raise bare ValueError/KeyError on unexpected files
        raise SAELoadError(
            f"SAELens could not load {what}: {type(err).__name__}: {str(err)[:300]}."
        ) from None
    sae.eval()
    return sae, entry


# --- checking it against the model ----------------------------------------------------------------


def model_identity(source: str) -> str:
    """A comparable name for a model source: TransformerLens's official name for a name or alias
    (``qwen3-8b`` -> ``Qwen/Qwen3-8B``); for a local folder, the Hub name in its ``config.json``
    (``_name_or_path``) when that is one, else the folder's name."""
    from sae_lib.model import official_model_name

    source = str(source).strip()
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            named = json.loads((path / "config.json").read_text()).get("_name_or_path") or ""
        except (OSError, ValueError, AttributeError):
            named = ""
        if named.count("/") == 1 and not Path(named).expanduser().exists():
            return named
        return path.resolve().name if path.name in ("", ".", "..") else path.name
    try:
        return official_model_name(source)
    except ValueError:
        return source


def same_model(a: str, b: str) -> bool:
    """Whether two model names mean the same model (official names, then the last part, case-insensitive)."""

    def key(name: str) -> str:
        return model_identity(name).rstrip("/").rsplit("/", 1)[-1].lower()

    return key(a) == key(b)


def check_model(entry: RegistryEntry, model_source: str) -> None:
    """Raise :class:`CompatibilityError` unless the registry entry was trained on ``model_source``."""
    if same_model(entry.model, model_source):
        return
    raise CompatibilityError(
        f"The registry SAE {PREFIX}{entry.release}/{entry.sae_id} was trained on {entry.model}, but the loaded "
        f"model is {model_identity(model_source)} ({model_source}). Set the model to {entry.model}, or pick a "
        "release for this model."
    )


# --- Neuronpedia ----------------------------------------------------------------------------------


def neuronpedia_url(sae: SAE, latent: int) -> str | None:
    """The latent's Neuronpedia page (``https://www.neuronpedia.org/{model}/{sae}/{latent}``) when the
    SAE's registry entry names a Neuronpedia id (SAELens puts it in ``cfg.metadata.neuronpedia_id``)."""
    np_id = getattr(sae.cfg.metadata, "neuronpedia_id", None)
    if not np_id or not isinstance(np_id, str):
        return None
    return f"{NEURONPEDIA_URL}/{np_id.strip('/')}/{int(latent)}"
