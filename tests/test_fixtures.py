"""The shared fixtures are what other tests assume: a working tokenizer, model and SAE."""

import torch

from tests.conftest import TINY_HOOK


def test_tiny_model_runs_and_hook_exists(tiny_model, tiny_sae):
    tokens = tiny_model.to_tokens("The ship sailed across the ocean.", prepend_bos=False)
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[TINY_HOOK])
    acts = cache[TINY_HOOK]
    assert acts.shape[-1] == tiny_sae.cfg.d_in
    feats = tiny_sae.encode(acts)
    # Random JumpReLU: some latents fire, most do not.
    frac = (feats > 0).float().mean().item()
    assert 0.0 < frac < 0.9


def test_tokenizer_round_trips(tiny_tokenizer):
    text = "The rocket flew past the moon."
    assert tiny_tokenizer.decode(tiny_tokenizer(text)["input_ids"]) == text
    assert torch.tensor(tiny_tokenizer(text)["input_ids"]).numel() < len(text)
