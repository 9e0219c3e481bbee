r"""Is a Markdown string shown as exactly the visitor's text? Rendered the way a browser would see it.

Streamlit renders ``st.error`` / ``st.caption`` / ``st.markdown`` bodies as GitHub-flavoured Markdown
(remark). markdown-it-py's ``gfm-like`` preset renders the same syntax, except bare-URL links, which
Streamlit makes even from escaped punctuation (``https\:\/\/...`` became a link in chromium): so a URL,
``www.`` or an e-mail address is safe only when its trigger is broken by a zero-width space. The
real-browser test (tests/e2e) checks the same payloads in Streamlit's own renderer.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

INJECTIONS = [
    "[Session expired - click here](https://evil.example/login)",
    "![x](https://evil.example/pixel.png)",
    "<img src=https://evil.example/pixel.png>",
    "see https://evil.example/login or www.evil.example",
    "**bold** _it_ `code` # head :red[red] $x^2$",
]
"""What the issue's visitor put in URLs and boxes: a link, a tracking image, raw HTML, bare URLs,
and formatting (including Streamlit's colour directive and LaTeX)."""

_MD = MarkdownIt("gfm-like", {"linkify": False, "html": True})


def render(markdown: str) -> str:
    return _MD.render(markdown)


def visible_text(markdown: str) -> str:
    """What a reader sees of ``markdown``: rendered, tags dropped, entities decoded, zero-width spaces
    (which ``lab_ui.as_text`` puts inside URLs so they are not made links) dropped."""
    return html.unescape(re.sub(r"<[^>]+>", "", render(markdown))).replace("\u200b", "").strip()


def assert_shows_as_text(markdown: str, visitor_text: str) -> bool:
    """True when ``markdown`` contains ``visitor_text`` as plain characters; fails when it would make a
    link, an image, HTML or formatting of it."""
    out = render(markdown)
    # Streamlit links bare URLs and addresses even with escaped punctuation: each trigger must be broken.
    for trigger in (r"//", r"\\/\\/", r"(?i)www\\?\.", "@(?!\u200b)"):
        assert not re.search(trigger, markdown), (trigger, markdown)
    for tag in ("<a ", "<img", "<strong", "<em", "<code", "<h1", "<del"):
        assert tag not in out, (tag, markdown, out)
    text = visible_text(markdown)
    return " ".join(visitor_text.split()) in " ".join(text.split())
