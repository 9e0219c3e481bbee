"""HTML rendering of model text: activation-shaded contexts and word-diffed steering outputs.

Everything a visitor typed or a model generated is escaped here, so pages can show the result as HTML
and still never render it as markup. Pages show it with ``st.html``, never through Markdown: HTML escaping
leaves ``*``, ``_``, ``$``, ``:fire:`` and ``:red[...]`` alone, and a Markdown pass over a context would turn
the ``__`` of ``__init__`` into bold, shortcodes into emoji and ``$...$`` into maths.
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
    """Line endings (``\\n``, ``\\r\\n`` and a lone ``\\r``, which byte-level tokenizers have as a token of
    its own) as the write-up's ``↵``, so a table row stays one line."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", NEWLINE_SYMBOL)


def context_html(tokens: list[str], acts: list[float], scale: float) -> str:
    """Tokens as HTML spans shaded orange by activation / ``scale``; the value shows on hover."""
    spans = []
    for tok, a in zip(tokens, acts):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, a / scale))
        text = html.escape(show_newlines(tok))
        spans.append(
            f'<span title="{a:.3f}" style="background: rgba(255,140,0,{alpha:.2f}); '
            f'padding: 1px 0; border-radius: 2px; white-space: pre-wrap">{text}</span>'
        )
    # pre-wrap keeps a token's spaces yet lets the line wrap there; anywhere: a long token breaks too.
    return ('<div style="font-family: monospace; font-size: 0.9em; line-height: 1.9; overflow-wrap: anywhere">'
            + "".join(spans) + "</div>")


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
    # st.html gives raw HTML no theme styling (Markdown tables get it): ruled, top-aligned cells, inline.
    rule = "border: 1px solid rgba(128,128,128,0.35); padding: 4px 8px; vertical-align: top; text-align: left"
    cell = f' style="{rule}"'
    head = f'<th style="width: 1%; white-space: nowrap; {rule}">Sample</th><th{cell}>Normal output</th>'
    if result.steered is not None:
        head += f"<th{cell}>Steered: {html.escape(steered_label)}</th>"
    rows = []
    for i, normal in enumerate(result.normal):
        cells = f'<td{cell}>{i + 1}</td><td class="normal"{cell}>{html.escape(show_newlines(normal))}</td>'
        if result.steered is not None:
            cells += f'<td class="steered"{cell}>{diff_html(normal, result.steered[i])}</td>'
        rows.append(f"<tr>{cells}</tr>")
    return (
        '<table class="outputs-table" style="border-collapse: collapse; width: 100%">'
        f'<caption style="caption-side: top; text-align: left; padding: 4px 0">Prompt: <b>{prompt}</b></caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
