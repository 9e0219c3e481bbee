"""What visitors may see of where things live: names, never the server's folders.

The app shows every visitor what is loaded and why something failed. Those facts come from the
operator's configuration (local folders, the Hugging Face cache) and from error messages that name
files. A visitor needs the name (a Hub id, a folder's name), not the server's layout, so pages pass
such text through here; the full text goes to the operator's log.
"""

from __future__ import annotations

import re
from pathlib import Path

from sae_lib import constants
from sae_lib.published import is_local_path
from sae_lib.published import public_name as published_name

# An absolute POSIX path: a "/" that does not continue a word, a URL ("https://") or a relative path
# ("user/repo"), then everything up to whitespace, a quote or a bracket, less trailing punctuation.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\"`()\[\]{}<>,;]*[^\s'\"`()\[\]{}<>,;.:!?])")


def public_name(source: str) -> str:
    """How a model or SAE source is named to visitors.

    A Hub id (``Qwen/Qwen3-8B``, ``user/repo:sae_id@rev``) is already a name and is returned as is;
    a local folder is named by its last component (:func:`sae_lib.published.public_name`, the rule the
    published files follow), and the embedded default's folders as such.
    """
    if not is_local_path(source):
        return source
    try:
        if Path(source).expanduser().resolve().is_relative_to(constants.demo_dir().resolve()):
            return f"embedded demo ({Path(source).name})"
    except OSError:
        pass
    return published_name(source) or "a local folder"


def redact_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last component (``/srv/x/model`` -> ``…/model``)."""

    def short(match: re.Match[str]) -> str:
        name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f"…/{name}" if name else "…"

    return _ABSOLUTE_PATH.sub(short, text)
