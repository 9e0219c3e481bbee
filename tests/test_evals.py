"""sae_lib.evals: SAELens's run_evals summarised, checked against naive computations."""

import re

import pytest
import torch
from datasets import Dataset

import dataclasses
import warnings

from sae_lib.packing import pack_texts
from sae_lib.evals import (
    DENSE_THRESHOLD,
    MIN_ABLATION_GAP,
    ce_verdict,
    evaluate_sae,
    format_evals_table,
    load_evals,
    save_evals,
)
from sae_lib.training import configure_run, preset_config
from tests.conftest import TINY_HOOK, TINY_TEXTS


@pytest.fixture(scope="module")
def cfg():
    base = dataclasses.replace(preset_config("demo"), hook_name=TINY_HOOK, context_size=16, store_batch_size_prompts=2,
                               train_batch_size_tokens=16)
    return configure_run(base, d_in=32, out=None, log=lambda _: None)


def assert_naive_variance_and_sparsity(s: dict, model, sae, rows: torch.Tensor, special_ids: list[int]) -> torch.Tensor:
    """The summary's L0, MSE, explained variance and dead fraction against a naive computation over the
    non-special tokens of ``rows`` (batch, pos); returns each latent's density there, (d_sae,)."""
    keep = ~torch.isin(rows, torch.tensor(special_ids))  # (batch, pos)
    with torch.no_grad():
        x = model.run_with_cache(rows, names_filter=[TINY_HOOK])[1][TINY_HOOK][keep]  # (n_tok, d_in)
        feats = sae.encode(x)  # (n_tok, d_sae)
        x_hat = sae.decode(feats)  # (n_tok, d_in)
    resid = (x - x_hat).pow(2).sum(-1)  # (n_tok,)
    assert s["l0"] == pytest.approx((feats != 0).sum(-1).float().mean().item(), rel=1e-5)
    assert s["mse"] == pytest.approx(resid.mean().item(), rel=1e-4)
    assert s["explained_variance"] == pytest.approx(1 - resid.sum().item() / (x - x.mean(0)).pow(2).sum().item(), rel=1e-4)
    density = (feats != 0).float().mean(0)  # (d_sae,)
    assert s["dead_fraction"] == pytest.approx((density == 0).float().mean().item())
    return density


def test_summary_matches_naive_metrics(tiny_model, tiny_sae, tiny_tokenizer, cfg):
    row = tiny_model.to_tokens("The ship sailed across the ocean while the waves crashed on the shore.")[0, :16]
    # Every eval batch reads the same row, so the naive numbers below need no batch bookkeeping.
    dataset = Dataset.from_dict({"input_ids": [row.tolist()] * 8})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evals = evaluate_sae(tiny_sae, tiny_model, cfg, dataset=dataset, n_batches=2)
    # SAELens's "fewer samples (8 rows) than (the run's training tokens)": evals read only their batches.
    assert not [w for w in caught if "fewer samples" in str(w.message)]
    s = evals["summary"]

    density = assert_naive_variance_and_sparsity(s, tiny_model, tiny_sae, row[None], tiny_tokenizer.all_special_ids)
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


def naive_ce(model, rows: torch.Tensor, skip_special: bool, special_ids: list[int]) -> float:
    """Mean next-token cross-entropy over ``rows`` (n, ctx), from the logits, optionally leaving out
    predictions made at special-token positions."""
    with torch.no_grad():
        logits = model(rows, return_type="logits")  # (n, ctx, vocab)
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)  # (n, ctx-1, vocab): position t predicts t+1
    nll = -logp.gather(-1, rows[:, 1:, None]).squeeze(-1)  # (n, ctx-1)
    keep = torch.ones_like(nll, dtype=torch.bool)
    if skip_special:
        keep = ~torch.isin(rows[:, :-1], torch.tensor(special_ids))
    return nll[keep].mean().item()


def test_clean_ce_is_the_mean_over_non_special_positions_of_the_rows_as_given(tiny_model, tiny_sae, tiny_tokenizer, cfg):
    # Why our clean CE (0.921 on the demo) sits below a plain mean over the same held-out rows (0.950):
    # SAELens leaves out every prediction made at a special token, i.e. the first token of each story
    # after <|endoftext|>. No BOS is added and rows are not re-packed (checked by the equality below).
    rows = pack_texts(TINY_TEXTS[:12], tiny_tokenizer, 16).tokens[:8]  # (8, 16)
    special = tiny_tokenizer.all_special_ids
    assert torch.isin(rows[:4, :-1], torch.tensor(special)).any()  # the evaluated rows hold separators
    evals = evaluate_sae(tiny_sae, tiny_model, cfg, dataset=Dataset.from_dict({"input_ids": rows.tolist()}), n_batches=2)
    s = evals["summary"]
    evaluated = rows[:4]  # reconstruction evals read the first n_batches x batch_size_prompts rows, in order
    assert s["ce_loss_without_sae"] == pytest.approx(naive_ce(tiny_model, evaluated, True, special), rel=1e-5)
    plain = naive_ce(tiny_model, evaluated, False, special)
    assert abs(plain - s["ce_loss_without_sae"]) > 1e-3  # the plain mean is a different number
    assert s["ce_ablation_gap"] == pytest.approx(s["ce_loss_with_ablation"] - s["ce_loss_without_sae"])
    assert s["ce_loss_score"] == pytest.approx(
        (s["ce_loss_with_ablation"] - s["ce_loss_with_sae"]) / s["ce_ablation_gap"], rel=1e-6)


def test_whole_dataset_evals_read_every_full_batch(tiny_model, tiny_sae, tiny_tokenizer, cfg):
    rows = pack_texts(TINY_TEXTS[:12], tiny_tokenizer, 16).tokens[:7]  # 7 rows, batch 2
    evals = evaluate_sae(tiny_sae, tiny_model, cfg, dataset=Dataset.from_dict({"input_ids": rows.tolist()}), n_batches=None)
    assert evals["metrics"]["token_stats"]["total_tokens_eval_reconstruction"] == 3 * 2 * 16


def test_a_small_ablation_gap_is_flagged_and_explained():
    small = ce_verdict({"ce_loss_without_sae": 0.920, "ce_loss_with_ablation": 0.926})
    assert small["ce_ablation_gap"] == pytest.approx(0.006) and small["ce_loss_score_meaningful"] is False
    assert "only 0.006 nats" in small["ce_loss_score_note"] and f"< {MIN_ABLATION_GAP:g}" in small["ce_loss_score_note"]
    big = ce_verdict({"ce_loss_without_sae": 3.0, "ce_loss_with_ablation": 5.0})
    assert big["ce_loss_score_meaningful"] is True and "2.000 nats" in big["ce_loss_score_note"]
    table = format_evals_table({"ce_loss_score": 1.05, "ce_loss_without_sae": 0.92, "ce_loss_with_sae": 0.9197,
                                "ce_loss_with_ablation": 0.926, **small})
    assert "105.0% (not meaningful: see below)" in table and "only 0.006 nats" in table
    assert re.search(r"CE loss, hook zero-ablated +0.926\n", table) and re.search(r"ablation gap \(ablated - clean\) +0.006", table)


def test_evals_of_an_sae_on_an_optional_hook_point_splice_it_in(tiny_model, tiny_tokenizer, cfg):
    """hook_mlp_in only fires once the model switches it on: evals splice the SAE in there anyway, so
    the with-SAE loss is the model's with the reconstruction in place (not the clean loss, and no
    division by a zero ablation gap)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    name = "blocks.1.hook_mlp_in"
    torch.manual_seed(3)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=32, d_sae=96, metadata=SAEMetadata(hook_name=name)))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True))
        sae.threshold.fill_(0.05)
    sae.eval()
    rows = pack_texts(TINY_TEXTS[:12], tiny_tokenizer, 16).tokens[:4]  # (4, 16): two batches of 2
    assert not tiny_model.cfg.use_hook_mlp_in  # the shared fixture's default: the hook point is off
    try:
        evals = evaluate_sae(sae, tiny_model, dataclasses.replace(cfg, hook_name=name),
                             dataset=Dataset.from_dict({"input_ids": rows.tolist()}), n_batches=2)
        special = tiny_tokenizer.all_special_ids
        with torch.no_grad():
            logits = tiny_model.run_with_hooks(rows, return_type="logits",
                                               fwd_hooks=[(name, lambda act, hook: sae(act))])  # (4, 16, vocab)
        logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
        nll = -logp.gather(-1, rows[:, 1:, None]).squeeze(-1)  # (4, 15)
        spliced = nll[~torch.isin(rows[:, :-1], torch.tensor(special))].mean().item()
    finally:
        tiny_model.set_use_hook_mlp_in(False)  # leave the shared model as the other tests expect it
    s = evals["summary"]
    assert s["ce_loss_with_sae"] == pytest.approx(spliced, rel=1e-4)
    assert abs(s["ce_loss_with_sae"] - s["ce_loss_without_sae"]) > 1e-3
    assert abs(s["ce_ablation_gap"]) > 1e-3  # zero-ablating the hook changes the loss too (either way: a random model)


def test_variance_and_sparsity_metrics_read_the_rows_the_ce_losses_read(tiny_model, tiny_sae, tiny_tokenizer, cfg):
    """run_evals resets the store between its CE batches and its variance/sparsity batches; the reset
    must restart the rows, or L0 / explained variance / dead fractions describe the rows after them
    (here row 4 and rows 0-2 instead of rows 0-3)."""
    rows = pack_texts(TINY_TEXTS[:12], tiny_tokenizer, 16).tokens[:5]  # (5, 16); batches of 2 read rows 0-3
    evals = evaluate_sae(tiny_sae, tiny_model, cfg, dataset=Dataset.from_dict({"input_ids": rows.tolist()}), n_batches=2)
    s = evals["summary"]
    evaluated = rows[:4]
    special = tiny_tokenizer.all_special_ids
    assert s["ce_loss_without_sae"] == pytest.approx(naive_ce(tiny_model, evaluated, True, special), rel=1e-5)
    assert_naive_variance_and_sparsity(s, tiny_model, tiny_sae, evaluated, special)


def test_ce_losses_of_a_bfloat16_model_are_not_rounded_to_bfloat16(tiny_model, tiny_sae, tiny_tokenizer, cfg):
    """A bfloat16 model (the loader's default on GPU): SAELens averaged the per-token losses in the
    logits' dtype, so clean / with-SAE / ablated losses came out as bfloat16 numbers (5.96875 for a
    true 5.9603 here), coarser than the ablation gap they are compared by."""
    import copy

    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    rows = pack_texts(TINY_TEXTS[:12], tiny_tokenizer, 16).tokens[:4]  # (4, 16): two batches of 2
    s = evaluate_sae(tiny_sae, model, cfg, dataset=Dataset.from_dict({"input_ids": rows.tolist()}), n_batches=2)["summary"]
    keep = ~torch.isin(rows[:, :-1], torch.tensor(tiny_tokenizer.all_special_ids))  # (4, 15)

    def naive(**hooks) -> float:
        with torch.no_grad():
            logits = model.run_with_hooks(rows, return_type="logits", **hooks).double()  # (4, 16, vocab)
        nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, rows[:, 1:, None])[..., 0]  # (4, 15)
        return nll[keep].mean().item()

    assert s["ce_loss_without_sae"] == pytest.approx(naive(), rel=1e-5)
    ablated = naive(fwd_hooks=[(TINY_HOOK, lambda act, hook: torch.zeros_like(act))])
    assert s["ce_loss_with_ablation"] == pytest.approx(ablated, rel=1e-5)
    assert next(model.parameters()).dtype == torch.bfloat16 and model.unembed._forward_hooks == {}  # left as it was


def test_tokens_evaluated_counts_the_tokens_the_metrics_were_measured_on(tiny_model, tiny_sae, tiny_tokenizer, cfg):
    """run_evals leaves special tokens (the <|endoftext|> between stories) out of every metric, so the
    'tokens evaluated' of the table, the model card and cfg.json's measured_on_tokens leave them out too
    (SAELens's token_stats count every position: 64 here)."""
    rows = pack_texts(TINY_TEXTS[:12], tiny_tokenizer, 16).tokens[:4]  # (4, 16): two batches of 2
    special = torch.isin(rows, torch.tensor(tiny_tokenizer.all_special_ids))
    assert special.any()
    evals = evaluate_sae(tiny_sae, tiny_model, cfg, dataset=Dataset.from_dict({"input_ids": rows.tolist()}), n_batches=2)
    assert evals["metrics"]["token_stats"]["total_tokens_eval_sparsity_variance"] == 64
    assert evals["summary"]["n_tokens"] == int((~special).sum()) < 64


def test_an_ablation_that_lowers_the_loss_is_not_called_a_small_rise():
    lower = ce_verdict({"ce_loss_without_sae": 5.96, "ce_loss_with_ablation": 5.87})
    assert lower["ce_loss_score_meaningful"] is False
    note = lower["ce_loss_score_note"]
    assert "does not raise the loss" in note and "-0.090 nats" in note and "raises the loss by only" not in note
