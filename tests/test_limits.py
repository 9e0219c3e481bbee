"""Bounds from the environment, prompt checks on awkward text, and out-of-memory handling."""

import dataclasses
import gc
import math
import weakref

import pytest
import torch

from sae_lib import limits as lim
from sae_lib.errors import InputError
from sae_lib.limits import Limits, check_prompt, check_range, env_var, oom_guard

FIELDS = [f.name for f in dataclasses.fields(Limits)]


# --- environment -------------------------------------------------------------------------------


def test_every_bound_reads_its_own_variable():
    defaults = Limits()
    # A distinct non-default value per field: each must land in its own field, with its own type.
    environ = {env_var(name): str(int(getattr(defaults, name)) + 3 + i) for i, name in enumerate(FIELDS)}
    got = Limits.from_env(environ)
    for i, name in enumerate(FIELDS):
        value = getattr(got, name)
        assert value == int(getattr(defaults, name)) + 3 + i, name
        assert type(value) is type(getattr(defaults, name)), name


def test_unset_variables_keep_defaults_and_floats_accept_decimals():
    assert Limits.from_env({}) == Limits()
    assert Limits.from_env({"LATENT_LAB_MAX_MULTIPLIER": " 12.5 "}).max_multiplier == 12.5
    assert Limits.from_env({"PATH": "/bin", "LATENT_LAB_MODEL": "x"}) == Limits()


@pytest.mark.parametrize(
    "key, raw, message",
    [
        ("LATENT_LAB_MAX_SAMPLES", "abc", "not a whole number"),
        ("LATENT_LAB_MAX_SAMPLES", "2.5", "not a whole number"),
        ("LATENT_LAB_MAX_SAMPLES", "", "not a whole number"),
        ("LATENT_LAB_MAX_NEW_TOKENS", "0", "positive"),
        ("LATENT_LAB_MAX_PROMPT_CHARS", "-5", "positive"),
        ("LATENT_LAB_MAX_MULTIPLIER", "nan", "finite"),
        ("LATENT_LAB_MAX_MULTIPLIER", "inf", "finite"),
        ("LATENT_LAB_MAX_MULTIPLIER", "ten", "not a number"),
        ("LATENT_LAB_MAX_SAMPLE", "4", "Unknown limit variable"),  # a typo must not be ignored
    ],
)
def test_bad_environment_values_are_refused_naming_the_variable(key, raw, message):
    with pytest.raises(InputError, match=message) as info:
        Limits.from_env({key: raw})
    assert key in str(info.value)


def test_limits_reject_bad_values_built_in_code():
    with pytest.raises(InputError, match="LATENT_LAB_MAX_SAMPLES"):
        Limits(max_samples=0)
    # The Theory page needs 3 features (superposition: fewer neurons than features) and 100 steps.
    with pytest.raises(InputError, match="LATENT_LAB_MAX_TOY_FEATURES must be at least 3, got 2"):
        Limits(max_toy_features=2)
    with pytest.raises(InputError, match="LATENT_LAB_MAX_TOY_STEPS must be at least 100"):
        Limits(max_toy_steps=50)
    with pytest.raises(InputError, match="number"):
        Limits(max_samples=True)


def test_module_limits_come_from_the_environment(monkeypatch):
    import importlib

    monkeypatch.setenv("LATENT_LAB_MAX_SAMPLES", "3")
    try:
        assert importlib.reload(lim).LIMITS.max_samples == 3
    finally:
        monkeypatch.delenv("LATENT_LAB_MAX_SAMPLES")
        importlib.reload(lim)
    assert lim.LIMITS.max_samples == Limits().max_samples


# --- prompts ------------------------------------------------------------------------------------

RTL_AND_CONTROL = [
    "שלום עולם, מה שלומך?",  # Hebrew
    "مرحبا بالعالم",  # Arabic
    "mixed \u202eevil\u202c text",  # right-to-left override inside Latin text
    "tab\there\x00nul\x07bell\x1b[31mansi",  # control characters
    "emoji 🔬 and CJK 潜在",
]


@pytest.mark.parametrize("prompt", RTL_AND_CONTROL)
def test_any_visible_unicode_is_accepted_unchanged(prompt):
    assert check_prompt(prompt) == prompt


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t\r", "\x00\x01\x1b", "\u200b\u202e\u2066 \ufeff"])
def test_prompts_that_show_nothing_are_empty(prompt):
    with pytest.raises(InputError, match="empty"):
        check_prompt(prompt)


def test_a_megabyte_prompt_is_refused_with_its_size():
    novel = "It was a dark and stormy night. " * (1_000_000 // 32)  # ~1 MB
    with pytest.raises(InputError) as info:
        check_prompt(novel)
    assert f"{len(novel):,} characters" in str(info.value)
    assert f"{lim.LIMITS.max_prompt_chars:,}" in str(info.value)


def test_prompt_length_bound_is_inclusive_and_configurable():
    small = Limits(max_prompt_chars=10)
    assert check_prompt("x" * 10, small) == "x" * 10
    with pytest.raises(InputError, match="11 characters; the limit is 10"):
        check_prompt("x" * 11, small)


def test_non_text_prompt_is_refused():
    with pytest.raises(InputError, match="text"):
        check_prompt(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("prompt", RTL_AND_CONTROL)
def test_awkward_prompts_run_through_the_model_and_sae(prompt, tiny_model, tiny_sae):
    # What the pages do after check_prompt: tokenize, run to the hook, encode. No character may break it.
    tokens = tiny_model.to_tokens(check_prompt(prompt))  # (1, pos)
    assert tokens.shape[1] >= len(prompt.encode("utf-8")) // 8  # byte-level BPE: nothing dropped wholesale
    assert tiny_model.tokenizer.decode(tokens[0]) == prompt  # byte-level: lossless round trip
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[tiny_sae.cfg.metadata.hook_name])
    feats = tiny_sae.encode(cache[tiny_sae.cfg.metadata.hook_name])  # (1, pos, d_sae)
    assert feats.shape == (1, tokens.shape[1], tiny_sae.cfg.d_sae) and torch.isfinite(feats).all()


# --- ranges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 5, 10])
def test_range_bounds_are_inclusive(value):
    assert check_range("Samples", value, 1, 10) == value


@pytest.mark.parametrize("value", [0, 11, -1e30, 1e30, math.inf, -math.inf, math.nan])
def test_out_of_range_values_name_the_setting_and_bounds(value):
    with pytest.raises(InputError, match=r"Samples must be between 1 and 10"):
        check_range("Samples", value, 1, 10)


# --- out of memory ------------------------------------------------------------------------------


@pytest.fixture
def cuda_calls(monkeypatch):
    """Pretend CUDA is in use and record ``empty_cache`` calls (with whether a probe was freed)."""
    calls: list[bool] = []
    probe: dict[str, weakref.ref] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(probe["ref"]() is None if probe else True))
    return calls, probe


def _allocate_then_fail(probe: dict[str, weakref.ref]) -> None:
    activations = torch.ones(1000, 1000)  # the half-built batch that ran out of memory
    probe["ref"] = weakref.ref(activations)
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_oom_becomes_a_message_after_freeing_the_failed_tensors(cuda_calls):
    calls, probe = cuda_calls
    with pytest.raises(InputError) as info:
        with oom_guard("generating"):
            _allocate_then_fail(probe)
    message = str(info.value)
    assert "ran out of memory while generating" in message
    assert "samples" in message and "tokens" in message
    assert info.value.__suppress_context__  # the page shows the message, not the CUDA error
    # The cache was emptied once, and only after the failed batch was no longer reachable.
    assert calls == [True]


def test_oom_guard_lets_other_errors_and_success_through(cuda_calls):
    calls, _ = cuda_calls
    with oom_guard():
        value = torch.arange(3).sum().item()
    assert value == 3
    with pytest.raises(ValueError, match="not memory"):
        with oom_guard():
            raise ValueError("not memory")
    with pytest.raises(InputError, match="empty"):  # a visitor's error is not an out-of-memory
        with oom_guard():
            check_prompt("")
    assert calls == []


@pytest.mark.slow
def test_model_serves_again_after_an_oom(cuda_calls, tiny_model):
    # The app keeps serving: a failed run leaves the shared model usable and unhooked.
    tokens = tiny_model.to_tokens("The ship sailed.")
    before = tiny_model(tokens)

    def fail(act, hook):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(InputError):
        with oom_guard():
            with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_mlp_out", fail)]):
                tiny_model(tokens)
    gc.collect()
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())
    torch.testing.assert_close(tiny_model(tokens), before)


# --- bounds added after a hostile first visit (issue 14) ------------------------------------------------


def test_bounds_for_what_visitors_type_are_set_and_readable():
    limits = Limits()
    assert limits.max_latent_activation == 10_000 and limits.max_seed == 2**31 - 1
    # Every text box accepts a 1 MB paste, so the prompt check can say why it is refused.
    assert limits.max_text_chars >= 1_048_576 > limits.max_prompt_chars
    assert Limits.from_env({"LATENT_LAB_MAX_LATENT_ACTIVATION": "500"}).max_latent_activation == 500.0


@pytest.mark.parametrize(
    "value, low, high, shown",
    [(2**31, 0, 2**31 - 1, "Seed must be between 0 and 2,147,483,647, got 2,147,483,648."),
     (1e308, 0, 10_000.0, "Seed must be between 0 and 10,000, got 1e+308."),
     (0.5, 1, 10, "Seed must be between 1 and 10, got 0.5.")],
)
def test_range_messages_print_numbers_as_people_read_them(value, low, high, shown):
    with pytest.raises(InputError) as info:
        check_range("Seed", value, low, high)
    assert str(info.value) == shown


@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-4])
def test_a_temperature_too_small_to_sample_with_is_refused(temperature, tiny_model, tiny_sae):
    """Below ~1e-38 the logits / T overflowed to NaN, and every run failed with 'try again'."""
    from sae_lib.generation import GenerationSettings, generate

    with pytest.raises(InputError, match=r"too small to sample with: use 0 for greedy decoding, or at least 0\.001"):
        GenerationSettings(temperature=temperature)
    for fine in (0.0, 1e-3):  # greedy, and the smallest accepted: both generate
        result = generate(tiny_model, tiny_sae, "The ship", [], GenerationSettings(max_new_tokens=3, n_samples=1,
                                                                                 temperature=fine))
        assert len(result.normal) == 1
