"""sae_lib.engine: the Hugging Face module generates; it must equal today's TransformerLens path.

Every test loads a tiny random Qwen3 folder through the app's loader (float32), so the model has
both faces: the HookedTransformer (TransformerLens path, the reference) and its engine.
"""

from __future__ import annotations

import logging

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lib import engine as engine_mod
from sae_lib.engine import SUPPORTED_ARCHITECTURES, EngineActivations, engine_for, transformerlens_only, engine_notice
from sae_lib.probe import hook_activations
from sae_lib.hf_hooks import hook_site
from sae_lib.errors import InputError
from sae_lib.model import load_model
from sae_lib.model_queue import queue_for
from sae_lib.dose_response import dose_response
from sae_lib.generation import GenerationSettings, engine_serving, generate
from sae_lib.steering import SteeringSpec

HOOKS = ["hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "mlp.hook_post"]
PROMPT = "The ship sailed across the ocean"
HOOK = "blocks.1.hook_mlp_out"


@pytest.fixture(scope="module")
def loaded(tiny_hf_qwen3_dir, device):
    return load_model(str(tiny_hf_qwen3_dir), device=device, dtype="float32")


@pytest.fixture(scope="module")
def sae(device):
    """A JumpReLU SAE on the tiny Qwen3's ``blocks.1.hook_mlp_out`` (d_in 64, d_sae 128)."""
    return _sae_on(HOOK, device)


def _hooks_on(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _stray_hooks(engine) -> int:
    """Hooks left on the engine's model besides its compiled-decode slots (CUDA only: persistent by
    design, see DecodeSlot), which must hold no steering between runs."""
    for slot in engine._slots.values():
        assert not bool(slot.add.any())
    return _hooks_on(engine.hf) - len(engine._slots)


def test_one_copy_of_the_weights(loaded):
    """The HookedTransformer's weights are views of the engine's tensors: nothing is held twice."""
    engine = engine_for(loaded)
    assert engine is not None and type(engine.hf).__name__ in SUPPORTED_ARCHITECTURES
    hf_storages = {p.untyped_storage().data_ptr() for p in engine.hf.parameters()}
    shared = [n for n, p in loaded.named_parameters() if p.untyped_storage().data_ptr() in hf_storages]
    own = {n: p for n, p in loaded.named_parameters() if n not in shared}
    # Only TransformerLens's all-zero biases (Qwen3 has none) are its own.
    assert own and all(n.split(".")[-1].lstrip("_").startswith("b_") and not p.any() for n, p in own.items()), list(own)
    assert len(shared) >= 4 * loaded.cfg.n_layers
    hf_bytes = sum(p.numel() * p.element_size() for p in engine.hf.parameters())
    own_bytes = sum(p.numel() * p.element_size() for p in own.values())
    assert own_bytes < 0.05 * hf_bytes


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("hook", HOOKS)
def test_every_mapped_hook_equals_transformerlens(loaded, layer, hook):
    name = f"blocks.{layer}.{hook}"
    if name not in loaded.hook_dict:  # hook_mlp_in only exists with cfg.use_hook_mlp_in
        pytest.skip(f"{name} is not a hook of this HookedTransformer")
    tokens = loaded.to_tokens(["The ship sailed across the ocean", "She baked bread in the kitchen"],
                              prepend_bos=False, padding_side="left")[:, -5:]  # (2, 5), no padding
    with torch.inference_mode():
        _, cache = loaded.run_with_cache(tokens, names_filter=[name])
        ours = engine_for(loaded).activations(tokens, name)
    ref = cache[name]
    assert ours.shape == ref.shape
    assert ref.abs().max() > 0.1  # real activations, so 1e-4 is a real bound
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    assert _stray_hooks(engine_for(loaded)) == 0


def test_hook_mlp_in_maps_to_the_normalisation_input(loaded):
    # TransformerLens's hook_mlp_in is resid_mid before ln2 (when enabled), i.e. the norm's input.
    site = hook_site(engine_for(loaded).hf, "blocks.1.hook_mlp_in")
    assert site.kind == "input" and site.module is engine_for(loaded).hf.model.layers[1].post_attention_layernorm
    assert hook_site(engine_for(loaded).hf, "blocks.7.hook_mlp_out") is None
    assert hook_site(engine_for(loaded).hf, "hook_embed") is None


def test_activations_stop_at_the_hook_layer(loaded):
    """The forward for layer 0's hook never runs layer 1 (the latent index's pass pays for what it reads)."""
    engine = engine_for(loaded)
    ran = []
    handle = engine.hf.model.layers[1].register_forward_hook(lambda *a: ran.append(1))
    try:
        acts = hook_activations(loaded, loaded.to_tokens(PROMPT, prepend_bos=False), "blocks.0.hook_mlp_out")
    finally:
        handle.remove()
    assert not ran and acts.shape[-1] == 64


def test_logits_equal_transformerlens(loaded):
    tokens = loaded.to_tokens(PROMPT, prepend_bos=False)
    with torch.inference_mode():
        ours, _ = engine_for(loaded).logits(tokens)
        ref = loaded(tokens)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


SPECS = {
    "none": [],
    "write-up clamp": [SteeringSpec(5, "write-up clamp", max_act=2.0)],
    "add": [SteeringSpec(7, "add", max_act=1.5, coeff=-6.0)],
    "clamp activation": [SteeringSpec(9, "clamp activation", max_act=3.0, coeff=4.0)],
    "several": [SteeringSpec(3, "add", coeff=4.0), SteeringSpec(11, "clamp activation", coeff=2.0),
                SteeringSpec(12, "write-up clamp", hi=3.0, lo=1.0)],
}


def _tl_reference(model, sae, specs, settings, monkeypatch):
    """Today's TransformerLens path on the same model: the reference."""
    with transformerlens_only(model):
        return generate(model, sae, PROMPT, specs, settings)


@pytest.mark.parametrize("positions", ["all", "generated"])
@pytest.mark.parametrize("name", list(SPECS))
def test_token_streams_equal_transformerlens(loaded, sae, name, positions, monkeypatch):
    """Seeded, write-up settings (temperature 0.05, frequency penalty 2): the same tokens as today's path."""
    for seed in (0, 1):
        settings = GenerationSettings(max_new_tokens=12, n_samples=3, seed=seed, positions=positions)
        ours = generate(loaded, sae, PROMPT, SPECS[name], settings)
        ref = _tl_reference(loaded, sae, SPECS[name], settings, monkeypatch)
        assert torch.equal(ours.normal_tokens, ref.normal_tokens)
        if SPECS[name]:
            assert torch.equal(ours.steered_tokens, ref.steered_tokens)
            assert ours.steered == ref.steered
    assert _stray_hooks(engine_for(loaded)) == 0


def test_hot_sampling_and_end_of_text_equal_transformerlens(loaded, sae, monkeypatch):
    """Temperature 1 (many draws far from the argmax) and an end-of-text token that stops some rows."""
    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=20, n_samples=6, temperature=1.0, freq_penalty=0.5, seed=4)
    free = generate(loaded, sae, PROMPT, [], settings).normal_tokens[:, -20:]
    # Make a token the rows do produce the end-of-text token, for both paths.
    eos = int(free[:, :10].flatten().mode().values)
    old_eos = loaded.tokenizer.eos_token
    loaded.tokenizer.eos_token = loaded.tokenizer.convert_ids_to_tokens(eos)  # what TransformerLens stops at
    monkeypatch.setattr(engine, "eos_token_id", eos)
    try:
        assert loaded.tokenizer.eos_token_id == eos
        ours = generate(loaded, sae, PROMPT, SPECS["add"], settings)
        ref = _tl_reference(loaded, sae, SPECS["add"], settings, monkeypatch)
    finally:
        loaded.tokenizer.eos_token = old_eos
    assert torch.equal(ours.normal_tokens, ref.normal_tokens)
    assert torch.equal(ours.steered_tokens, ref.steered_tokens)
    new = ours.normal_tokens[:, ours.prompt_len:]
    assert (new == eos).any(1).any()  # the end-of-text padding was exercised


def test_frequency_penalty_is_subtracted_per_use(loaded, sae):
    """Greedy can't show it, so: temperature 1e-4 with penalty p is argmax(logits/T - p * count)."""
    engine = engine_for(loaded)
    tokens = loaded.to_tokens(PROMPT, prepend_bos=False)
    got = engine.sample(tokens, 6, temperature=1e-4, freq_penalty=1e-3, seed=0, stop_at_eos=False)
    seq = tokens.to(got.device)
    with torch.inference_mode():
        for _ in range(6):
            logits = engine.hf(seq).logits[0, -1].float() / 1e-4
            counts = torch.bincount(seq[0], minlength=logits.shape[-1])
            nxt = (logits - 1e-3 * counts).argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    assert torch.equal(got, seq)


def test_multiplier_zero_reproduces_normal_text(loaded, sae):
    spec = SteeringSpec(5, "write-up clamp", hi=0.0, lo=0.0)
    result = generate(loaded, sae, PROMPT, [spec], GenerationSettings(max_new_tokens=10, n_samples=4))
    assert torch.equal(result.normal_tokens, result.steered_tokens)
    strong = generate(loaded, sae, PROMPT, [SteeringSpec(5, "add", coeff=80.0)],
                      GenerationSettings(max_new_tokens=10, n_samples=4))
    assert not torch.equal(strong.normal_tokens, strong.steered_tokens)


def test_dose_response_equals_transformerlens(loaded, sae, monkeypatch):
    specs = [SteeringSpec(6, "add", max_act=2.0, coeff=10.0)]
    settings = GenerationSettings(max_new_tokens=6, stop_at_eos=False)
    ours = dose_response(loaded, sae, PROMPT, specs, [0.0, 0.5, 2.0], settings)
    with transformerlens_only(loaded):
        ref = dose_response(loaded, sae, PROMPT, specs, [0.0, 0.5, 2.0], settings)
    assert torch.equal(ours.tokens, ref.tokens)
    for field in ("kl_next_token", "kl_generated", "latent_acts"):
        torch.testing.assert_close(getattr(ours, field), getattr(ref, field), atol=1e-4, rtol=1e-3)
    assert ours.kl_next_token[0] == 0 and ours.kl_next_token[2] > 0


class _Stop(BaseException):
    """Stands in for Streamlit's StopException interrupting a run."""


def test_cancelled_generation_leaves_no_hook_and_frees_the_queue(loaded, sae):
    settings = GenerationSettings(max_new_tokens=8, n_samples=2)
    spec = [SteeringSpec(3, "add", coeff=20.0)]
    before = _stray_hooks(engine_for(loaded))

    def stop(done, total):
        if done == 8 + 3:  # inside the steered run
            raise _Stop

    with pytest.raises(_Stop):
        generate(loaded, sae, PROMPT, spec, settings, progress=stop)
    assert _stray_hooks(engine_for(loaded)) == before
    assert queue_for(loaded).ahead_of_new_arrival() == 0
    first = generate(loaded, sae, PROMPT, spec, settings)
    again = generate(loaded, sae, PROMPT, spec, settings)
    assert torch.equal(first.steered_tokens, again.steered_tokens)


def _fake_compile(fn, **kwargs):
    """torch.compile stand-in: the static-cache decode path runs eagerly (graphs need a GPU)."""
    return fn


def _compile_with(engine, monkeypatch, compile_fn) -> None:
    """Compiled decoding on, with ``compile_fn`` standing in for ``torch.compile`` (so the static-cache
    path runs on the CPU too), from a clean engine: graphs compiled by earlier tests (on CUDA) would not
    call it, and an earlier test's compile failure would keep it eager."""
    monkeypatch.setattr(torch, "compile", compile_fn)
    monkeypatch.setattr(engine, "compile_decode", True)
    monkeypatch.setattr(engine, "compile_failed", None)
    engine.reset_compiled()


def _eager(loaded, sae, specs, settings):
    """``generate`` on the eager path, the reference for the compiled one: on CUDA the engine decodes
    through its compiled static-cache path by default (``compile_decode``), so a plain ``generate`` there
    would compare that path with itself."""
    engine = engine_for(loaded)
    compile_decode, engine.compile_decode = engine.compile_decode, False
    try:
        return generate(loaded, sae, PROMPT, specs, settings)
    finally:
        engine.compile_decode = compile_decode


@pytest.mark.parametrize("name", ["none", "add", "write-up clamp", "clamp activation"])
def test_static_cache_decode_path_gives_the_same_tokens(loaded, sae, name, monkeypatch):
    """The path used with torch.compile on CUDA (static cache, steering from a fixed slot while
    decoding): same tokens as the eager dynamic-cache path, and a cancelled run leaves it clean."""
    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=10, n_samples=3, positions="generated")
    eager = _eager(loaded, sae, SPECS[name], settings)
    _compile_with(engine, monkeypatch, _fake_compile)
    try:
        static = generate(loaded, sae, PROMPT, SPECS[name], settings)
        assert torch.equal(static.normal_tokens, eager.normal_tokens)
        if SPECS[name]:
            assert torch.equal(static.steered_tokens, eager.steered_tokens)
        stop_at = 13 if SPECS[name] else 3  # inside the steered run, else inside the only one

        def stop(done, total):
            if done == stop_at:
                raise _Stop

        with pytest.raises(_Stop):
            generate(loaded, sae, PROMPT, SPECS[name], settings, progress=stop)
        assert all(not slot.add.any() for slot in engine._slots.values())  # nothing left steering
        again = generate(loaded, sae, PROMPT, SPECS[name], settings)  # the half-filled cache is not reused
        assert torch.equal(again.normal_tokens, eager.normal_tokens)
    finally:
        engine.reset_compiled()  # no slot or graph of the stand-in compile outlives the test
    assert engine.compile_failed is None


@pytest.mark.parametrize("hook", [h for h in HOOKS if h != "hook_resid_mid"])
def test_static_cache_decode_path_steers_every_hook_it_serves(loaded, device, hook, monkeypatch):
    """Every hook the engine steers, on the compiled path's static cache and decode slot: the same
    tokens as eager, and the model still reads that hook afterwards. The slot is as wide as the
    activation (``mlp.hook_post`` is the MLP's width, 128 here, not the residual's 64)."""
    name = f"blocks.1.{hook}"
    d_in = loaded.cfg.d_mlp if hook == "mlp.hook_post" else loaded.cfg.d_model
    sae = _sae_on(name, device, d_in)
    engine = engine_for(loaded)
    assert engine_serving(loaded, sae) is engine
    settings = GenerationSettings(max_new_tokens=6, n_samples=2, positions="generated")
    eager = _eager(loaded, sae, SPECS["add"], settings)
    _compile_with(engine, monkeypatch, _fake_compile)
    try:
        static = generate(loaded, sae, PROMPT, SPECS["add"], settings)
        assert [s.add.shape[-1] for s in engine._slots.values()] == [d_in]
        assert torch.equal(static.normal_tokens, eager.normal_tokens)
        assert torch.equal(static.steered_tokens, eager.steered_tokens)
        assert not torch.equal(static.steered_tokens, static.normal_tokens)
        tokens = loaded.to_tokens(PROMPT)
        with torch.inference_mode():  # the slot stays on the module: a plain read there still works
            _, cache = loaded.run_with_cache(tokens, names_filter=[name])
            torch.testing.assert_close(engine.activations(tokens, name), cache[name], rtol=1e-4, atol=1e-4)
    finally:
        engine.reset_compiled()
    assert engine.compile_failed is None


def test_failing_compile_falls_back_to_eager_with_a_notice(loaded, sae, monkeypatch, caplog):
    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=6, n_samples=2)
    eager = _eager(loaded, sae, SPECS["add"], settings)

    def broken(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("inductor: no working C++ compiler")
        return run

    _compile_with(engine, monkeypatch, broken)
    steps = []
    with caplog.at_level(logging.WARNING, logger="sae_lib.engine"):
        got = generate(loaded, sae, PROMPT, SPECS["add"], settings, progress=lambda d, t: steps.append((d, t)))
    assert torch.equal(got.steered_tokens, eager.steered_tokens)  # redone eagerly from the same seed
    assert steps == [(i, 12) for i in range(1, 13)]  # the redone steps are not counted twice
    assert "no working C++ compiler" in engine.compile_failed
    assert "eagerly" in caplog.text
    assert _hooks_on(engine.hf) == 0  # the slots were taken off as well


def test_out_of_memory_setting_up_compiled_decoding_falls_back_to_eager(loaded, sae, monkeypatch, caplog):
    """Compilation or graph capture that runs out of memory: eager from then on, with a log notice."""
    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=6, n_samples=2)
    eager = _eager(loaded, sae, SPECS["add"], settings)

    def capture_oom(fn, **kwargs):
        def run(*a, **k):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return run

    _compile_with(engine, monkeypatch, capture_oom)
    with caplog.at_level(logging.WARNING, logger="sae_lib.engine"):
        got = generate(loaded, sae, PROMPT, SPECS["add"], settings)
    assert torch.equal(got.steered_tokens, eager.steered_tokens)
    assert "out of memory while setting up compiled decoding" in engine.compile_failed
    assert "eagerly" in caplog.text and _hooks_on(engine.hf) == 0


def test_out_of_memory_after_the_graph_ran_is_a_shortage_not_a_compile_failure(loaded, sae, monkeypatch):
    """Once a shape's compiled step has run, running out of memory in it is reported to the visitor
    (and memory freed) like any other; compiled decoding stays on."""
    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=6, n_samples=2)
    calls = {"n": 0, "fail_at": None}

    def flaky(fn, **kwargs):
        def run(*a, **k):
            calls["n"] += 1
            if calls["n"] == calls["fail_at"]:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return fn(*a, **k)
        return run

    monkeypatch.setattr("sae_lib.limits.free_accelerator_memory", lambda: None)
    _compile_with(engine, monkeypatch, flaky)
    try:
        generate(loaded, sae, PROMPT, SPECS["add"], settings)  # captures the shape
        calls["fail_at"] = calls["n"] + 3
        with pytest.raises(InputError, match="ran out of memory while generating"):
            generate(loaded, sae, PROMPT, SPECS["add"], settings)
        assert engine.compile_failed is None and _stray_hooks(engine) == 0
        assert len(generate(loaded, sae, PROMPT, SPECS["add"], settings).steered) == 2  # and serves on
    finally:
        engine.reset_compiled()


def test_out_of_memory_recapturing_after_a_new_slot_reset_the_graphs_falls_back_to_eager(loaded, sae, device, monkeypatch):
    """An SAE at another hook adds a decode slot, and torch's compiled graphs are reset for it: the shapes
    recorded before must be set up again, so running out of memory there is a compile-setup failure
    (eager from then on, the visitor gets the tokens), not a shortage reported to the visitor."""
    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=6, n_samples=2)
    other = _sae_on("blocks.0.hook_mlp_out", device)
    eager = _eager(loaded, other, SPECS["add"], settings)
    compiled = []

    def recapture_oom(fn, **kwargs):
        compiled.append(1)
        calls, nth = [], len(compiled)

        def run(*a, **k):
            calls.append(1)
            if nth == 2 and len(calls) == 1:  # the graph compiled after the reset, set up for the known shape
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return fn(*a, **k)
        return run

    monkeypatch.setattr("sae_lib.limits.free_accelerator_memory", lambda: None)
    _compile_with(engine, monkeypatch, recapture_oom)
    try:
        generate(loaded, sae, PROMPT, SPECS["add"], settings)  # records the shape at the first SAE's hook
        got = generate(loaded, other, PROMPT, SPECS["add"], settings)
        assert len(compiled) == 2 and "out of memory while setting up compiled decoding" in engine.compile_failed
        assert torch.equal(got.steered_tokens, eager.steered_tokens)
    finally:
        engine.reset_compiled()


def test_unsupported_architecture_falls_back_with_a_notice(tiny_hf_qwen3_dir, sae, device, monkeypatch, caplog):
    monkeypatch.setattr(engine_mod, "SUPPORTED_ARCHITECTURES", ("SomethingElseForCausalLM",))
    with caplog.at_level(logging.WARNING, logger="sae_lib.engine"):
        model = load_model(str(tiny_hf_qwen3_dir), device=device, dtype="float32")
    assert engine_for(model) is None
    assert "Qwen3ForCausalLM" in engine_notice(model) and "TransformerLens" in engine_notice(model)
    assert "TransformerLens" in caplog.text
    # Still serves every call, on the TransformerLens path.
    out = generate(model, sae, PROMPT, SPECS["add"], GenerationSettings(max_new_tokens=4, n_samples=2))
    assert out.steered_tokens.shape == (2, out.prompt_len + 4)
    assert not torch.equal(out.steered_tokens, out.normal_tokens)  # the steering took effect there too
    acts = hook_activations(model, model.to_tokens(PROMPT, prepend_bos=False), HOOK)
    assert acts.shape[-1] == 64
    with pytest.raises(InputError):
        generate(model, sae, "  ", [], GenerationSettings())


def test_saelens_reads_activations_through_the_engine(loaded):
    """What SAELens's ActivationsStore calls, answered by the engine, equals TransformerLens's answer."""
    tokens = loaded.to_tokens(["The ship sailed across the ocean today"] * 3, prepend_bos=False)
    proxy = EngineActivations(loaded)
    calls = []
    handle = engine_for(loaded).hf.model.layers[1].mlp.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = proxy.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=2, prepend_bos=False)[1][HOOK]
    finally:
        handle.remove()
    assert calls  # the engine ran
    _, ref = loaded.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=2, prepend_bos=False)
    torch.testing.assert_close(got, ref[HOOK], atol=1e-4, rtol=0)
    assert not got.is_inference()  # SAE training may keep it
    assert proxy.cfg is loaded.cfg and proxy.to_tokens("a").shape[0] == 1


def test_out_of_memory_midway_on_the_engine_tells_the_visitor_and_keeps_serving(loaded, sae, monkeypatch):
    freed = []
    monkeypatch.setattr("sae_lib.limits.free_accelerator_memory", lambda: freed.append(True))
    settings = GenerationSettings(max_new_tokens=6, n_samples=2)

    def oom(done, total):
        if done == 8:  # inside the steered run, its hook live
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(InputError, match="ran out of memory while generating"):
        generate(loaded, sae, PROMPT, SPECS["add"], settings, progress=oom)
    assert freed == [True]
    assert _stray_hooks(engine_for(loaded)) == 0
    assert queue_for(loaded).ahead_of_new_arrival() == 0
    assert len(generate(loaded, sae, PROMPT, SPECS["add"], settings).steered) == 2


def test_overflowing_steering_is_refused_with_a_message(loaded, sae):
    """Logits that overflow: the engine notes them without a per-step sync, never hands NaN to the
    sampler, refuses the run, and leaves no hook; the next run is fine."""
    from sae_lib.engine import NonFiniteLogits

    engine = engine_for(loaded)
    tokens = loaded.to_tokens(PROMPT, prepend_bos=False).expand(2, -1)
    with pytest.raises(NonFiniteLogits, match="too strong"):
        engine.sample(tokens, 4, temperature=0.05, freq_penalty=2.0, seed=0, hook_name=HOOK,
                      steer=lambda act: act * float("inf"))
    assert _stray_hooks(engine) == 0
    assert len(generate(loaded, sae, PROMPT, SPECS["add"], GenerationSettings(max_new_tokens=4, n_samples=2)).steered) == 2


def test_overflowing_steering_through_generate_gives_the_visitor_a_message(loaded, sae, monkeypatch):
    """A push so strong the logits overflow: a clear GenerationError, no hook left, the next run fine.

    The visitor's bound on max activation (10,000) keeps a real push finite on this model, so the bound
    is lifted here to reach the engine's own non-finite check behind it."""
    import dataclasses

    from sae_lib import steering
    from sae_lib.errors import GenerationError

    monkeypatch.setattr(steering, "LIMITS", dataclasses.replace(steering.LIMITS, max_latent_activation=1e308))
    huge = [SteeringSpec(3, "add", max_act=3e38, coeff=100.0)]
    with pytest.raises(GenerationError, match="too strong"):
        generate(loaded, sae, PROMPT, huge, GenerationSettings(max_new_tokens=4, n_samples=2))
    assert _stray_hooks(engine_for(loaded)) == 0
    assert len(generate(loaded, sae, PROMPT, SPECS["add"], GenerationSettings(max_new_tokens=4, n_samples=2)).steered) == 2


def test_warm_up_compiles_once_so_later_runs_only_reuse_it(loaded, sae, monkeypatch):
    """warm_up runs two shapes through the compiled step (the recompile with dynamic sizes happens
    there); visitors' runs of other batch sizes and lengths then never call torch.compile."""
    from sae_lib.generation import warm_up

    engine = engine_for(loaded)
    compiles = []
    _compile_with(engine, monkeypatch, lambda fn, **k: compiles.append(1) or fn)
    try:
        seconds = warm_up(loaded, sae)
        assert seconds is not None and seconds >= 0 and compiles == [1]
        assert len(engine._slots) == 1 and queue_for(loaded).ahead_of_new_arrival() == 0
        for n_samples, new in ((3, 7), (5, 20)):
            generate(loaded, sae, PROMPT, SPECS["add"], GenerationSettings(max_new_tokens=new, n_samples=n_samples))
        assert compiles == [1] and engine.compile_failed is None
    finally:
        engine.reset_compiled()


def test_warm_up_does_nothing_without_compiled_decoding(loaded, sae, monkeypatch):
    from sae_lib.generation import warm_up

    monkeypatch.setattr(engine_for(loaded), "compile_decode", False)
    assert warm_up(loaded, sae) is None


def _sae_on(hook_name: str, device: str, d_in: int = 64) -> JumpReLUSAE:
    """A JumpReLU SAE on ``hook_name`` of the tiny Qwen3 (d_in 64, or ``d_in``; d_sae 128), seeded: the
    module's recipe."""
    torch.manual_seed(1)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=128, metadata=SAEMetadata(hook_name=hook_name)))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True))
        sae.threshold.fill_(0.05)
    return sae.eval().to(device)


def test_steering_at_resid_mid_writes_what_transformerlens_writes(loaded, device, monkeypatch):
    """HF keeps its residual before post_attention_layernorm, so the norm's input (where resid_mid reads)
    is no place to write it: such an SAE reads through the engine but steers on TransformerLens."""
    sae = _sae_on("blocks.0.hook_resid_mid", device)
    assert engine_serving(loaded, sae) is None and hook_site(engine_for(loaded).hf, "blocks.0.hook_resid_mid") is not None
    settings = GenerationSettings(max_new_tokens=8, n_samples=2)
    ours = generate(loaded, sae, PROMPT, SPECS["add"], settings)
    ref = _tl_reference(loaded, sae, SPECS["add"], settings, monkeypatch)
    assert torch.equal(ours.steered_tokens, ref.steered_tokens) and not torch.equal(ours.steered_tokens, ours.normal_tokens)
    from sae_lib.workspace import Workspace

    ws = Workspace(model=loaded, sae=sae, model_source="tiny", sae_source="tiny", sae_dir=None)
    assert "cannot steer at 'blocks.0.hook_resid_mid'" in ws.engine_notice and ws.describe()["engine"] == "TransformerLens"


def test_a_run_redone_eagerly_after_a_compile_failure_steers_only_generated_positions(loaded, device, monkeypatch):
    """The failed compiled attempt already ran the prompt through the steering hook; the eager redo must
    start counting positions again, or positions="generated" would steer the prompt too. (On layer 0, so
    the prompt's steered keys and values would reach the next layer's attention.)"""
    sae = _sae_on("blocks.0.hook_mlp_out", device)
    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=6, n_samples=2, positions="generated")
    eager = _eager(loaded, sae, SPECS["add"], settings)
    calls = []

    def fails_in_the_steered_run(fn, **kwargs):
        def run(*a, **k):
            calls.append(1)
            if len(calls) > settings.max_new_tokens - 1:  # the normal run's decode steps pass, the steered run's fail
                raise RuntimeError("inductor: no working C++ compiler")
            return fn(*a, **k)
        return run

    _compile_with(engine, monkeypatch, fails_in_the_steered_run)
    got = generate(loaded, sae, PROMPT, SPECS["add"], settings)
    assert engine.compile_failed is not None and len(calls) == settings.max_new_tokens
    assert torch.equal(got.normal_tokens, eager.normal_tokens)
    assert torch.equal(got.steered_tokens, eager.steered_tokens)


def test_a_batch_larger_than_the_decode_slot_decodes_eagerly(loaded, sae, monkeypatch):
    """An operator may raise the sample limits past the compiled slot's rows: such a batch decodes eagerly,
    same tokens, and compiled decoding stays on for everyone else."""
    from sae_lib.engine_compile import DecodeSlot

    engine = engine_for(loaded)
    settings = GenerationSettings(max_new_tokens=6, n_samples=3)
    eager = _eager(loaded, sae, SPECS["add"], settings)
    compiles = []
    monkeypatch.setattr(DecodeSlot, "MAX_BATCH", 2)
    _compile_with(engine, monkeypatch, lambda fn, **k: compiles.append(1) or fn)
    try:
        got = generate(loaded, sae, PROMPT, SPECS["add"], settings)
        assert compiles == [] and engine.compile_failed is None
        assert torch.equal(got.steered_tokens, eager.steered_tokens)
    finally:
        engine.reset_compiled()


def test_the_decode_slot_lets_larger_batches_through_after_compiled_runs(loaded, sae, monkeypatch):
    """The decode slot stays on its module once a compiled run made it (warm_up does at start-up): an
    eager forward there with more rows than its buffer (a sample count raised past it, a wide forward to
    the hook) must pass through it unchanged, not fail on the buffer's shape."""
    from sae_lib.engine_compile import DecodeSlot

    engine = engine_for(loaded)
    small, large = GenerationSettings(max_new_tokens=6, n_samples=2), GenerationSettings(max_new_tokens=6, n_samples=3)
    eager = _eager(loaded, sae, SPECS["add"], large)
    tokens = loaded.to_tokens([PROMPT] * 3, prepend_bos=False)
    reads = engine.activations(tokens, HOOK)
    monkeypatch.setattr(DecodeSlot, "MAX_BATCH", 2)
    _compile_with(engine, monkeypatch, _fake_compile)
    try:
        generate(loaded, sae, PROMPT, SPECS["add"], small)  # compiled: the slot is on the hook's module now
        assert len(engine._slots) == 1
        got = generate(loaded, sae, PROMPT, SPECS["add"], large)  # 3 rows: eager, through the slot
        assert torch.equal(got.normal_tokens, eager.normal_tokens)
        assert torch.equal(got.steered_tokens, eager.steered_tokens)
        assert torch.equal(engine.activations(tokens, HOOK), reads)
        assert engine.compile_failed is None
    finally:
        engine.reset_compiled()


def test_warm_up_keeps_within_the_operators_limits(loaded, sae, monkeypatch):
    """LATENT_LAB_MAX_NEW_TOKENS / _MAX_SAMPLES below the warm-up's sizes must not kill it."""
    import dataclasses

    from sae_lib import generation
    from sae_lib.generation import warm_up

    engine = engine_for(loaded)
    monkeypatch.setattr(generation, "LIMITS", dataclasses.replace(generation.LIMITS, max_new_tokens=4, max_samples=1))
    _compile_with(engine, monkeypatch, lambda fn, **k: fn)
    try:
        assert warm_up(loaded, sae) is not None and engine.compile_failed is None
    finally:
        engine.reset_compiled()


@pytest.mark.parametrize("hook", HOOKS)
def test_forward_to_the_hook_as_one_module_equals_the_engines(loaded, hook):
    # What compile_llm compiles: a copy of the decoder up to the hook's layer returning the hook's
    # activation. Traced by Dynamo (backend "eager": the graph capture without code generation) it must
    # give the engine's activations (bit for bit on the CPU), and leave the model itself as it was.
    from sae_lib.engine_prefix import PrefixForward, compiled_prefix

    engine = engine_for(loaded)
    name = f"blocks.1.{hook}"
    tokens = loaded.to_tokens(["The ship sailed across the ocean", "She baked bread in the kitchen"],
                              prepend_bos=False, padding_side="left")[:, -5:]
    site = engine.site(name)
    modules_before = [id(m) for m in engine.hf.modules()]
    with torch.no_grad():
        ref = engine.activations(tokens, name)
        assert torch.equal(PrefixForward(engine.hf, site)(tokens.to(engine.device)), ref)
        traced = compiled_prefix(engine.hf, site, backend="eager")
        if engine.device.type == "cpu":
            assert torch.equal(traced(tokens.to(engine.device)), ref)
        else:  # on CUDA the traced graph may get other kernels (H100: up to float32 rounding, not bit-equal)
            torch.testing.assert_close(traced(tokens.to(engine.device)), ref, atol=1e-4, rtol=1e-4)
        assert traced._orig_mod.tap.act is None  # the activation is not kept alive after the call
    assert [id(m) for m in engine.hf.modules()] == modules_before and _hooks_on(engine.hf) == 0
    assert engine.activations(tokens, name).equal(ref)  # the model still runs every layer it had


# What of layer 1 (and the final norm) runs in the forward to each hook: nothing after the hook's activation.
RUNS_IN_LAYER = {
    "hook_resid_pre": set(),
    "hook_resid_mid": {"input_layernorm", "self_attn"},
    "hook_attn_out": {"input_layernorm", "self_attn"},
    "hook_mlp_in": {"input_layernorm", "self_attn"},
    "hook_resid_post": {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp", "mlp.down_proj"},
    "hook_mlp_out": {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp", "mlp.down_proj"},
    "mlp.hook_post": {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp", "mlp.down_proj"},
}


@pytest.mark.parametrize("hook", sorted(RUNS_IN_LAYER))
def test_forward_to_the_hook_runs_nothing_after_it(loaded, hook):
    from sae_lib.engine_prefix import PrefixForward

    engine = engine_for(loaded)
    block = engine.hf.model.layers[1]
    watched = {name: block.get_submodule(name) for name in RUNS_IN_LAYER["hook_mlp_out"]}
    watched["layer 0"], watched["final norm"] = engine.hf.model.layers[0], engine.hf.model.norm
    ran: set[str] = set()
    handles = [m.register_forward_hook(lambda *_, name=name: ran.add(name)) for name, m in watched.items()]
    tokens = loaded.to_tokens(PROMPT, prepend_bos=False).to(engine.device)
    try:
        with torch.no_grad():
            act = PrefixForward(engine.hf, engine.site(f"blocks.1.{hook}"))(tokens)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == RUNS_IN_LAYER[hook] | {"layer 0"}
    assert torch.equal(act, engine.activations(tokens, f"blocks.1.{hook}"))


def test_forward_to_the_first_layers_input_is_the_embedding(loaded):
    from sae_lib.engine_prefix import PrefixForward

    engine = engine_for(loaded)
    tokens = loaded.to_tokens(PROMPT, prepend_bos=False).to(engine.device)
    with torch.no_grad():
        act = PrefixForward(engine.hf, engine.site("blocks.0.hook_resid_pre"))(tokens)  # no layer runs at all
        assert torch.equal(act, engine.hf.model.embed_tokens(tokens))
    assert torch.equal(act, engine.activations(tokens, "blocks.0.hook_resid_pre"))


@pytest.mark.slow  # compiles with inductor on the CPU (~10-20 s)
def test_compiled_forward_to_the_hook_matches_and_falls_back_on_a_compiler_failure(loaded, monkeypatch, caplog):
    engine = engine_for(loaded)
    tokens = loaded.to_tokens(PROMPT, prepend_bos=False)
    eager = engine.activations(tokens, HOOK)
    monkeypatch.setattr(engine, "_prefixes", {})
    # The real compiler (inductor): float32 sums may be reassociated, nothing more.
    for _ in range(2):  # compiles, then reuses the compiled module
        torch.testing.assert_close(engine.activations(tokens, HOOK, compiled=True), eager, atol=1e-5, rtol=1e-5)

    from torch._inductor.exc import InductorError

    calls = []

    def broken(hf, site, backend="inductor"):
        def run(*args):
            calls.append(1)
            raise InductorError(RuntimeError("C++ compile error"), None)
        return run

    monkeypatch.setattr(engine, "_prefixes", {})
    monkeypatch.setattr(engine_mod, "compiled_prefix", broken)
    with caplog.at_level(logging.WARNING, logger="sae_lib.engine"):
        first = engine.activations(tokens, HOOK, compiled=True)
        second = engine.activations(tokens, HOOK, compiled=True)
    assert torch.equal(first, eager) and torch.equal(second, eager) and calls == [1]  # tried once
    assert "Compiled forward to blocks.1.hook_mlp_out disabled" in caplog.text and "C++ compile error" in caplog.text


@pytest.mark.slow  # compiles with inductor on the CPU (~10-20 s)
def test_index_pass_through_the_compiled_forward_matches_the_eager_pass(loaded, sae, monkeypatch):
    from sae_lib import latent_index as li

    engine = engine_for(loaded)
    monkeypatch.setattr(engine, "_prefixes", {})
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, loaded.cfg.d_vocab, (8, 12), generator=g)  # two whole batches: one compiled shape
    # tf32=False: on CUDA the pass encodes in TF32, whose input rounding would magnify the forwards'
    # float32 differences past these tolerances; the comparison is of the forwards alone.
    cfg = dict(batch_size=4, top_k=3, n_lower_examples=0, window=4, window_before=2, n_logit_tokens=2, tf32=False)
    eager = li.build_index(loaded, sae, tokens, li.IndexConfig(**cfg))
    compiled = li.build_index(loaded, sae, tokens, li.IndexConfig(compile=True, **cfg))
    assert HOOK in engine._prefixes and engine._prefixes[HOOK] is not False  # it did run compiled
    assert int(eager.count.sum()) > 100  # a real amount of firing to compare
    # The compiled forward differs by float32 rounding only (within 1e-5): the same latents fire, with
    # the same statistics to that precision, and the same top contexts.
    assert torch.equal(compiled.count, eager.count)
    torch.testing.assert_close(compiled.max_act, eager.max_act, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled.sum_act, eager.sum_act, atol=1e-3, rtol=1e-4)
    assert torch.equal(compiled.top.row, eager.top.row)
