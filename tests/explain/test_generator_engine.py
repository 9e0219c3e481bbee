"""The explainer on the loaded model goes through the generation engine's Hugging Face module."""

import pytest
import torch

from sae_lib.engine import engine_for, transformerlens_only
from sae_lib.explain import prompts as P
from sae_lib.explain.generator import LoadedModelGenerator, render
from sae_lib.model import load_model

PROMPTS = [P.detection_messages("ships at sea", "the ship " * n) for n in (1, 7, 3, 12, 5)] + [
    P.explain_messages(["a <<ship>> sailed", "the <<boat>>"]),
    P.detection_messages("end of text", "one story<|endoftext|>the next"),  # the pad token inside a prompt
    P.detection_messages("long", "the ship " * 100),  # past the test's context (N_CTX): keeps its end
]
"""Prompts of different lengths, so every batch is left-padded."""

MAX_NEW = 8
N_CTX = 520
"""The model's context in the test, so that one prompt is cut without a 2,048-token prompt (the tiny
model's context), which would make the test slow on CPU."""


@pytest.fixture(scope="module")
def model(tiny_hf_qwen3_dir, device):
    return load_model(str(tiny_hf_qwen3_dir), device=device, dtype="float32")


def _naive_greedy(model, prompt, max_new):
    """One prompt, no padding, no cache: the argmax of the TransformerLens forward, token by token."""
    tokens = model.to_tokens(render(model.tokenizer, prompt), prepend_bos=False, truncate=False)
    tokens = tokens[:, -(model.cfg.n_ctx - max_new) :]  # the generator keeps a long prompt's end
    start, eos = tokens.shape[1], model.tokenizer.eos_token_id
    for _ in range(max_new):
        nxt = model(tokens)[0, -1].argmax()
        tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
        if int(nxt) == eos:
            break
    return model.tokenizer.decode(tokens[0, start:], skip_special_tokens=True)


def test_loaded_model_explains_through_the_engine_with_the_transformerlens_answers(model, monkeypatch):
    monkeypatch.setattr(model.cfg, "n_ctx", N_CTX)
    engine = engine_for(model)
    assert engine is not None
    calls = []
    handle = engine.hf.model.layers[0].register_forward_hook(lambda *args: calls.append(1))
    gen = LoadedModelGenerator(model, batch_size=4)
    try:
        fast = gen(PROMPTS, MAX_NEW)
        through_engine = len(calls)
        with transformerlens_only(model):
            slow = LoadedModelGenerator(model, batch_size=4)(PROMPTS, MAX_NEW)
    finally:
        handle.remove()
    # Two batches (4 + 4 prompts), each a prompt forward plus up to MAX_NEW - 1 cached steps.
    assert 2 <= through_engine <= 2 * MAX_NEW
    assert gen.truncated == 1  # the long prompt only; the pad token inside a prompt is not padding
    assert len(calls) == through_engine  # the TransformerLens path never touches the HF module
    assert fast == slow
    assert fast == [_naive_greedy(model, p, MAX_NEW) for p in PROMPTS]
    assert any(a.strip() for a in fast)  # a comparison of empty answers would prove nothing
