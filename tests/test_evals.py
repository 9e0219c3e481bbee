"""sae_lib.evals: SAELens's run_evals summarised, checked against naive computations."""

import pytest
import torch
from datasets import Dataset

from sae_lib.evals import DENSE_THRESHOLD, evaluate_sae, format_evals_table, load_evals, save_evals
from sae_lib.training import PRESETS, build_runner_config, resolve_values
from tests.conftest import TINY_HOOK


@pytest.fixture(scope="module")
def cfg():
    values = resolve_values(PRESETS["demo"], {"hook_name": TINY_HOOK, "context_size": 16, "store_batch_size_prompts": 2})
    return build_runner_config(values, d_in=32, out=None, log=lambda _: None)


def test_summary_matches_naive_metrics(tiny_model, tiny_sae, tiny_tokenizer, cfg):
    row = tiny_model.to_tokens("The ship sailed across the ocean while the waves crashed on the shore.")[0, :16]
    # Every eval batch reads the same row, so the naive numbers below need no batch bookkeeping.
    dataset = Dataset.from_dict({"input_ids": [row.tolist()] * 8})
    evals = evaluate_sae(tiny_sae, tiny_model, cfg, dataset=dataset, n_batches=2)
    s = evals["summary"]

    keep = ~torch.isin(row, torch.tensor(tiny_tokenizer.all_special_ids))
    with torch.no_grad():
        x = tiny_model.run_with_cache(row[None], names_filter=[TINY_HOOK])[1][TINY_HOOK][0][keep]  # (n_tok, 32)
        feats = tiny_sae.encode(x)  # (n_tok, 96)
        x_hat = tiny_sae.decode(feats)  # (n_tok, 32)
    resid = (x - x_hat).pow(2).sum(-1)  # (n_tok,)
    assert s["l0"] == pytest.approx((feats != 0).sum(-1).float().mean().item(), rel=1e-5)
    assert s["mse"] == pytest.approx(resid.mean().item(), rel=1e-4)
    assert s["explained_variance"] == pytest.approx(1 - resid.sum().item() / (x - x.mean(0)).pow(2).sum().item(), rel=1e-4)
    density = (feats != 0).float().mean(0)  # (96,)
    assert s["dead_fraction"] == pytest.approx((density == 0).float().mean().item())
    assert s["dense_fraction"] == pytest.approx((density > DENSE_THRESHOLD).float().mean().item())
    assert 0 < s["dense_fraction"] and s["n_tokens"] == 2 * 2 * 16 and s["d_sae"] == 96
    for key in ("ce_loss_score", "ce_loss_without_sae", "ce_loss_with_sae", "kl_div_with_sae"):
        assert s[key] is not None
    assert "model_performance_preservation" in evals["metrics"]


def test_save_load_and_table(tmp_path):
    evals = {"summary": {"explained_variance": 0.9, "l0": 12.0, "dead_fraction": 0.25, "n_tokens": 100}, "metrics": {}}
    save_evals(evals, tmp_path)
    assert load_evals(tmp_path) == evals
    assert load_evals(tmp_path / "missing") is None
    table = format_evals_table(evals["summary"])
    assert "explained variance" in table and "90.0%" in table and "25.0%" in table and "CE loss recovered" in table
    assert "n/a" in table  # absent metrics are shown as such, not as zeros
