"""bench/explain.py's ``qwen3-8b`` path, run at a small shape: the random-weight Hugging Face model it
builds explains and scores the demo index's latents through ``HFGenerator`` and prints its JSON.

The Qwen3-8B shape itself needs a GPU (bench/device_run.sh runs it there); this proves the path that
run takes, with only the model's size changed. Not timed (never timed tests)."""

import json

import pytest

# Reads the demo's latent index; ~10 s: in `make test`, not in the fast tier.
pytestmark = [pytest.mark.slow, pytest.mark.demo]

from bench import explain


def test_qwen3_8b_preset_explains_and_scores_through_its_path_at_a_small_shape(monkeypatch, capsys):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    built = []

    def small_qwen3(tokenizer, device):  # qwen3_8b_shaped's model with only the sizes shrunk
        cfg = Qwen3Config(
            vocab_size=151_936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=False,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
        built.append(model)
        return model.eval()

    monkeypatch.setattr(explain, "qwen3_8b_shaped", small_qwen3)
    explain.main(["--preset", "qwen3-8b", "--latents", "2", "--batch-size", "8"])
    report = json.loads(capsys.readouterr().out)
    assert len(built) == 1
    assert (report["preset"], report["latents"], report["batch_size"]) == ("qwen3-8b", 2, 8)
    assert report["latents_per_minute_batched"] > 0 and report["latents_per_minute_one_prompt_at_a_time"] > 0
    assert not report["engine"] and report["latents_per_minute_batched_transformerlens"] is None
    assert report["hours_for_65536_latents_batched"] == round(65_536 / report["latents_per_minute_batched"] / 60, 1)
