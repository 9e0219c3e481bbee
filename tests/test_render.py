"""HTML rendering: activation-shaded contexts and word-diffed steering outputs, escaped."""

import re

import torch

from sae_lib.render import comparison_table_html, context_html, diff_html, show_newlines, word_diff
from sae_lib.generation import GenerationResult


def test_context_html_shades_by_activation_and_escapes():
    html = context_html(["<b>", " ok", "\n"], [1.0, 0.0, 2.0], scale=2.0)
    assert "&lt;b&gt;" in html and "<b>" not in html
    # alpha = activation / scale, clipped to [0, 1]; the value shows on hover
    assert 'title="1.000" style="background: rgba(255,140,0,0.50)' in html
    assert 'title="0.000" style="background: rgba(255,140,0,0.00)' in html
    assert ">↵</span>" in html
    assert "rgba(255,140,0,0.00)" in context_html(["a"], [5.0], scale=0.0)  # no scale: no shading


def test_word_diff_marks_changed_words():
    normal = "the questions that have been asked\nfor centuries."
    steered = "the questions that the artist asks\nfor centuries."
    marked = [w for w, changed in word_diff(normal, steered) if changed]
    assert marked == ["the", "artist", "asks"]
    assert "".join(w for w, _ in word_diff(normal, steered)) == steered
    html = diff_html(normal, "a <b>\nc")
    assert "&lt;b&gt;" in html and "↵" in html and "<mark>" in html
    assert show_newlines("a\nb\r\nc") == "a↵b↵c"
    # A lone \r is a line ending too (CommonMark's, and a token of byte-level tokenizers): "\r\r" would
    # otherwise be a blank line wherever the text meets a Markdown renderer.
    assert show_newlines("a\rb\r\rc") == "a↵b↵↵c"
    assert word_diff("same words", "same words") == [("same", False), (" ", False), ("words", False)]


def test_comparison_table_marks_each_steered_sample_against_its_normal_twin():
    empty = torch.zeros(0)
    result = GenerationResult(
        prompt="Q<\n", prompt_len=2, normal=["a b", "c d"], steered=["a x", "c d"],
        normal_tokens=empty, steered_tokens=empty,
    )  # fmt: skip
    html = re.sub(r' style="[^"]*"', "", comparison_table_html(result, "latent <7>"))  # the markup, unstyled
    assert "<caption>Prompt: <b>Q&lt;↵</b></caption>" in html
    head, *rows = html.split("<tr>")[1:]
    assert "Normal output" in head and "Steered: latent &lt;7&gt;" in head
    # One row per sample: its normal output beside its steered output, marked against that normal.
    assert len(rows) == 2
    assert '<td class="normal">a b</td><td class="steered">a <mark>x</mark></td>' in rows[0]
    assert '<td class="normal">c d</td><td class="steered">c d</td>' in rows[1]
