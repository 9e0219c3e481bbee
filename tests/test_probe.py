"""Live probe: which latents fire on a prompt, against the SAE encoder on a full forward."""

import pytest
import torch

from sae_lib import probe
from sae_lib.errors import InputError
from sae_lib.limits import Limits
from tests.conftest import TINY_HOOK


def test_hook_activations_stop_early_and_match_a_full_forward(tiny_model):
    tokens = tiny_model.to_tokens("The ship sailed across the ocean.")
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[TINY_HOOK])
    torch.testing.assert_close(probe.hook_activations(tiny_model, tokens, TINY_HOOK), cache[TINY_HOOK])
    # blocks.0's hook needs only layer 0: SAELens's stop_at_layer is layer + 1
    early = probe.hook_activations(tiny_model, tokens, "blocks.0.hook_resid_post")
    torch.testing.assert_close(early, tiny_model.run_with_cache(tokens)[1]["blocks.0.hook_resid_post"])


def test_what_fires_matches_encoder(tiny_model, tiny_sae):
    prompt = "The ship sailed across the ocean."
    fired = probe.what_fires(tiny_model, tiny_sae, prompt, top_n=3)
    tokens = tiny_model.to_tokens(prompt)
    ref = tiny_sae.encode(tiny_model.run_with_cache(tokens, names_filter=[TINY_HOOK])[1][TINY_HOOK])[0]
    assert fired.tokens == tiny_model.to_str_tokens(prompt)
    torch.testing.assert_close(fired.acts, ref.topk(3, dim=1).values)
    assert probe.firing_latents(fired)[0] == int(ref.max(dim=0).values.argmax())
    assert list(probe.firing_table(fired).columns) == ["token", "#1", "#2", "#3"]
    with pytest.raises(InputError, match="empty"):
        probe.what_fires(tiny_model, tiny_sae, "   ")
    with pytest.raises(InputError, match="limit is 4"):
        probe.what_fires(tiny_model, tiny_sae, prompt, limits=Limits(max_prompt_tokens=4))
    with pytest.raises(InputError, match="characters"):
        probe.what_fires(tiny_model, tiny_sae, "x" * 50, limits=Limits(max_prompt_chars=10))



@pytest.mark.parametrize("head_index, reshape", [(None, "none"), (2, "none"), (2, "hook_z")])
def test_per_head_sae_reads_what_saelens_activation_store_gives_it(tiny_model, head_index, reshape):
    """An SAE on ``attn.hook_z`` (batch, pos, head, d_head) reads what SAELens's ActivationsStore hands
    it: the heads flattened, or one head (``hook_head_index``); "what fires" and the index encode that."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from sae_lib import latent_index as li
    from sae_lib.sae import check_sae_matches_model

    hook = "blocks.1.attn.hook_z"
    d_in = 8 if head_index is not None else 32
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=16, reshape_activations=reshape,
                                        metadata=SAEMetadata(hook_name=hook, hook_head_index=head_index))).eval()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
    check_sae_matches_model(sae, tiny_model)
    prompt = "The ship sailed across the ocean."
    tokens = tiny_model.to_tokens(prompt)
    with torch.no_grad():
        z = tiny_model.run_with_cache(tokens, names_filter=[hook])[1][hook]  # (1, pos, head, d_head)
        naive = z[:, :, head_index] if head_index is not None else z.reshape(*z.shape[:2], -1)  # SAELens's store
        if reshape == "hook_z":
            naive = naive[:, :, None]  # (1, pos, 1, d_head): such an SAE flattens the heads itself
        ref = sae.encode(naive)  # (1, pos, d_sae)
        feats = probe.encode_tokens(tiny_model, sae, tokens)
    torch.testing.assert_close(feats, ref)
    fired = probe.what_fires(tiny_model, sae, prompt, top_n=3)
    torch.testing.assert_close(fired.acts, ref[0].topk(3, dim=1).values)
    index = li.build_index(tiny_model, sae, tokens, li.IndexConfig(n_bins=8, top_k=2, n_lower_examples=1, window=4,
                                                                   window_before=2, batch_size=1))
    torch.testing.assert_close(index.count, (ref > 0).sum(dim=(0, 1)))
    W_O = tiny_model.blocks[1].attn.W_O.detach()  # (head, d_head, d_model): the decoder writes into the residual through it
    dirs = sae.W_dec.detach() @ (W_O[head_index] if head_index is not None else W_O.reshape(-1, W_O.shape[-1]))
    lens = (dirs * tiny_model.ln_final.w.detach()) @ tiny_model.W_U.detach()  # (d_sae, d_vocab)
    torch.testing.assert_close(li.logit_lens(tiny_model, sae, 3).top_vals, lens.topk(3, dim=1).values)


def test_prompt_tokens_checks_the_context(tiny_model):
    assert probe.prompt_tokens(tiny_model, "The ship", 0).shape[0] == 1
    with pytest.raises(InputError, match="context of 128 tokens"):
        probe.prompt_tokens(tiny_model, "The ship", 127)


def test_tf32_matmuls_is_scoped_and_cuda_only(tiny_model, tiny_sae):
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with probe.tf32_matmuls("cpu"):
        assert matmul.fp32_precision == before  # the CPU has no TF32: nothing to switch
    # The CUDA branch only sets torch's flag, so it is checked here without a GPU.
    with probe.tf32_matmuls(torch.device("cuda")):
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before
    with pytest.raises(RuntimeError, match="boom"), probe.tf32_matmuls("cuda"):
        raise RuntimeError("boom")
    assert matmul.fp32_precision == before  # restored on the way out of a failure too
    torch.get_float32_matmul_precision()  # raises if the legacy and new precision APIs were mixed
    # On CPU the TF32 encode is the IEEE one, bit for bit.
    tokens = tiny_model.to_tokens("The ship sailed across the ocean.")
    fast = probe.encode_tokens(tiny_model, tiny_sae, tokens, tf32=True)
    assert torch.equal(fast, probe.encode_tokens(tiny_model, tiny_sae, tokens))
    assert not fast.requires_grad  # no autograd graph kept over (tokens x d_sae) pre-activations


def test_what_fires_reports_its_place_while_other_runs_hold_the_model(tiny_model, tiny_sae):
    """'What fires here' waits behind other visitors' generations: it says how many are ahead (as the
    steering page does), instead of a silent wait as long as theirs."""
    import threading

    from sae_lib.model_queue import queue_for

    seen, got = [], []
    holder_in, release = threading.Event(), threading.Event()

    def holder():
        with queue_for(tiny_model).slot():
            holder_in.set()
            assert release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert holder_in.wait(30)
    w = threading.Thread(target=lambda: got.append(probe.what_fires(tiny_model, tiny_sae, "a b c", on_wait=seen.append)))
    w.start()
    for _ in range(1500):
        if seen:
            break
        threading.Event().wait(0.02)
    release.set()
    t.join(30)
    w.join(30)
    assert seen and seen[0] == 1 and got
