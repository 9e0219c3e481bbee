"""HTML rendering of model text: activation-shaded contexts and word-diffed steering outputs.

Everything a visitor typed or a model generated is escaped here, so pages can show the result with
``unsafe_allow_html`` and still never render it as markup.
"""

from __future__ import annotations

import difflib
import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: rendering does not need steering's torch code at import
    from sae_lib.generation import GenerationResult

NEWLINE_SYMBOL = "↵"
"""How the write-up's table shows a newline."""


def show_newlines(text: str) -> str:
    """Newlines as the write-up's ``↵`` so a table row stays one line."""
    return text.replace("\r\n", "\n").replace("\n", NEWLINE_SYMBOL)


def context_html(tokens: list[str], acts: list[float], scale: float) -> str:
    """Tokens as HTML spans shaded orange by activation / ``scale``; the value shows on hover."""
    spans = []
    for tok, a in zip(tokens, acts):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, a / scale))
        text = html.escape(show_newlines(tok))
        spans.append(
            f'<span title="{a:.3f}" style="background: rgba(255,140,0,{alpha:.2f}); '
            f'padding: 1px 0; border-radius: 2px; white-space: pre">{text}</span>'
        )
    return '<div style="font-family: monospace; line-height: 1.9">' + "".join(spans) + "</div>"


def word_diff(normal: str, steered: str) -> list[tuple[str, bool]]:
    """``steered`` cut into words and the spaces between them, each flagged True where it differs from
    ``normal`` (a word inserted or replaced, by a longest-matching-blocks diff over words)."""
    parts = re.findall(r"\S+|\s+", steered)
    word_pos = [i for i, p in enumerate(parts) if not p.isspace()]
    a = normal.split()
    b = [parts[i] for i in word_pos]
    changed = [False] * len(parts)
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            for j in range(j1, j2):
                changed[word_pos[j]] = True
    return list(zip(parts, changed))


def diff_html(normal: str, steered: str) -> str:
    """``steered`` as HTML with the words that differ from ``normal`` in ``<mark>``; newlines as ``↵``."""
    out = []
    for text, changed in word_diff(normal, steered):
        shown = html.escape(show_newlines(text))
        out.append(f"<mark>{shown}</mark>" if changed else shown)
    return "".join(out)


def comparison_table_html(result: GenerationResult, steered_label: str) -> str:
    """The write-up's table as HTML, one row per sample: the normal output and, beside it, the steered
    output drawn from the same random stream, with the words that differ from that normal output (the
    one shown beside it) in ``<mark>``. The prompt heads the table; newlines show as ``↵``."""
    prompt = html.escape(show_newlines(result.prompt))
    head = "<th>Sample</th><th>Normal output</th>"
    if result.steered is not None:
        head += f"<th>Steered: {html.escape(steered_label)}</th>"
    rows = []
    for i, normal in enumerate(result.normal):
        cells = f'<td>{i + 1}</td><td class="normal">{html.escape(show_newlines(normal))}</td>'
        if result.steered is not None:
            cells += f'<td class="steered">{diff_html(normal, result.steered[i])}</td>'
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="outputs-table"><caption>Prompt: <b>{prompt}</b></caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
