"""Fetching from the Hugging Face Hub through huggingface_hub's cache, with user-facing errors.

Downloads land in huggingface_hub's cache (``HF_HUB_CACHE`` / ``HF_HOME``), so a restarted process
does not download again, and ``HF_HUB_OFFLINE=1`` serves what is cached. The token, when one is
needed, comes from ``HF_TOKEN`` through huggingface_hub's own handling and is never printed.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants

from sae_lib import constants
from sae_lib.errors import LatentLabError

DEFAULT_HINT = (
    f"unset {constants.ENV_MODEL} and {constants.ENV_SAE} to use the embedded default model and SAE"
)


def hub_is_offline() -> bool:
    """Whether huggingface_hub was told not to use the network (``HF_HUB_OFFLINE=1``)."""
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def download_snapshot(
    repo_id: str,
    what: str,
    error_cls: type[LatentLabError],
    allow_patterns: list[str] | None = None,
    revision: str | None = None,
) -> Path:
    """The local snapshot folder of ``repo_id`` (only files matching ``allow_patterns``).

    ``what`` names the thing for messages (``"Model Qwen/Qwen3-8B"``); failures raise ``error_cls``
    with a message that says what happened and what to do.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, revision=revision))
    except HFValidationError as err:  # a repo id the Hub can never have ('--', '..', '.git', too long)
        raise error_cls(
            f"{what}: {repo_id!r} is not a valid Hub repo id ({err}). Check its spelling (user/repo), or "
            f"{DEFAULT_HINT}."
        ) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE=1 is set" if hub_is_offline() else "the Hub cannot be reached (no network?)"
        raise error_cls(
            f"{what} is not in the local Hugging Face cache and {why}, so it cannot be downloaded. "
            f"Connect once to download it (later runs reuse the cache), use a local folder instead, or "
            f"{DEFAULT_HINT}."
        ) from None
    except GatedRepoError:
        raise error_cls(
            f"{what} is in a gated Hub repo ({repo_id}): accept its terms on huggingface.co and set HF_TOKEN to a "
            "token of that account."
        ) from None
    except RevisionNotFoundError:
        raise error_cls(f"{what}: revision {revision!r} does not exist in the Hub repo {repo_id}.") from None
    except RepositoryNotFoundError:
        raise error_cls(
            f"{what}: the Hub repo {repo_id} does not exist or is private (set HF_TOKEN for a private repo)."
        ) from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", "?")
        raise error_cls(f"{what}: the Hub answered with HTTP {status}; try again later or {DEFAULT_HINT}.") from None
