"""The explainer's prompts and how its answers are read.

Formats follow EleutherAI's delphi (activating tokens between ``<<`` and ``>>``, consecutive ones in
one pair of marks; a last line ``Explanation: ...``) and its detection / fuzzing scorers, one example
per question so that any model, however small, only has to answer Yes or No. Prompts are chat
messages; :func:`render_plain` flattens them for models without a chat template.
"""

from __future__ import annotations

import re

Message = dict[str, str]
"""``{"role": "system" | "user" | "assistant", "content": str}``"""

L, R = "<<", ">>"
MAX_EXPLANATION_CHARS = 200
"""An explanation is one line; longer answers are cut (the app shows it under a title)."""

EXPLAIN_SYSTEM = (
    "You are an interpretability researcher explaining one latent (a learned feature) of a language model. "
    f"You get text excerpts where the latent is active; the tokens where it is active are marked {L}like this{R}, "
    f"and consecutive active tokens share one pair of marks {L}like this phrase{R}. Look for what the marked tokens "
    "have in common (a word, a topic, a grammatical role, a pattern) and what comes just before them. "
    "Answer with one short line, at most 15 words, starting with 'Explanation:'. No lists, no reasoning."
)
DETECT_SYSTEM = (
    "You check an explanation of a language-model latent. You get the explanation and one text excerpt. "
    "Answer Yes if the latent, as explained, would be active somewhere in the excerpt, else No. Answer with one word."
)
FUZZ_SYSTEM = (
    "You check an explanation of a language-model latent. You get the explanation and one text excerpt with some "
    f"tokens marked {L}like this{R}. Answer Yes if the marked tokens are exactly what the explanation describes, "
    "No if the marks sit on other tokens. Answer with one word."
)


_LINE_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
"""Everything Python (and a chat template) may treat as a line break: an excerpt stays on its line, so it
cannot start a line of its own such as ``Explanation: ...``."""


def _escaped(text: str) -> str:
    """``text`` on one line, its own angle brackets as ``‹ ›``: neither a mark nor a tokenizer's special
    token (``<|im_end|>``, ``<|endoftext|>``: a corpus token's text would be read back as that token)."""
    return _LINE_BREAKS.sub(" ", text).replace("<", "‹").replace(">", "›")


def plain(tokens: list[str]) -> str:
    """The excerpt's text on one line, escaped as :func:`mark` escapes it (the text the explainer saw)."""
    return _escaped("".join(tokens))


def mark(tokens: list[str], acts: list[float], threshold: float = 0.0) -> str:
    """The excerpt with every run of tokens whose activation exceeds ``threshold`` inside ``<<``/``>>``,
    on one line. The text's own angle brackets become ``‹ ›`` so that ``std::cout << x`` cannot pass for
    a mark (the excerpt's meaning survives; the marks stay the only ``<<``/``>>``)."""
    out, inside = [], False
    for tok, a in zip(tokens, acts):
        on = a > threshold
        if on and not inside:
            out.append(L)
        elif not on and inside:
            out.append(R)
        inside = on
        out.append(_escaped(tok))
    if inside:
        out.append(R)
    return "".join(out)


def explain_messages(examples: list[str]) -> list[Message]:
    body = "\n".join(f"Example {i + 1}: {ex}" for i, ex in enumerate(examples))
    return [
        {"role": "system", "content": EXPLAIN_SYSTEM},
        {"role": "user", "content": f"{body}\n\nWhat does the latent respond to?"},
    ]


def detection_messages(explanation: str, excerpt: str) -> list[Message]:
    return [
        {"role": "system", "content": DETECT_SYSTEM},
        {"role": "user", "content": f"Explanation: {explanation}\nExcerpt: {excerpt}\nIs the latent active here?"},
    ]


def fuzz_messages(explanation: str, marked_excerpt: str) -> list[Message]:
    return [
        {"role": "system", "content": FUZZ_SYSTEM},
        {"role": "user", "content": f"Explanation: {explanation}\nExcerpt: {marked_excerpt}\nAre the marks right?"},
    ]


def render_plain(messages: list[Message]) -> str:
    """Messages as plain text ending where the assistant's answer starts (for base models)."""
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


_THINK = re.compile(r"<think>.*?(</think>|$)", re.S)
_LABEL = re.compile(r"^\s*(?:\**\s*)?explanation\s*(?:\**\s*)?[:：]\s*", re.I)


def parse_explanation(answer: str) -> str:
    """One clean line from the explainer's answer: reasoning dropped, ``Explanation:`` and quotes stripped.

    Returns ``""`` when nothing usable is left (the caller then keeps the statistical label).
    """
    text = _THINK.sub("", answer or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    labelled = [ln for ln in lines if _LABEL.match(ln)]
    line = labelled[-1] if labelled else (lines[0] if lines else "")
    line = _LABEL.sub("", line).strip().strip("*_`\"' ").strip()
    line = " ".join(line.split())
    if len(line) > MAX_EXPLANATION_CHARS:
        line = line[: MAX_EXPLANATION_CHARS - 1].rstrip() + "…"
    return line


_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def parse_yes_no(answer: str) -> bool | None:
    """The first Yes/No in the answer (reasoning dropped); None when there is none."""
    found = _YES_NO.search(_THINK.sub("", answer or ""))
    return None if found is None else found.group(1).lower() == "yes"
