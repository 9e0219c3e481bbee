"""Steering under hostile input: bounds checked before work, numeric blow-ups and library errors turned
into messages (the trace kept in the log), and the dose-response measuring what steering puts in."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from sae_lib import steering
from sae_lib.dose_response import dose_response
from sae_lib.errors import GenerationError, InputError
from sae_lib.limits import LIMITS
from sae_lib.generation import GenerationSettings, generate
from sae_lib.steering import SteeringSpec, default_max_act, parse_latents
from tests.conftest import TINY_HOOK
from tests.test_steering import PROMPT, assert_clean

FAST = dict(max_new_tokens=6, n_samples=2)


# --- bounds, before any work ----------------------------------------------------------------------


def test_a_long_latent_list_is_refused_at_the_first_latent_too_many():
    numbers = ",".join(str(i) for i in range(1024))
    with pytest.raises(InputError, match=rf"More than {LIMITS.max_steered_latents} latents given \(1,025 numbers"):
        # The trailing "x" is never reached: the list is refused as soon as it names one latent too many.
        parse_latents(numbers + ",x", 2048)
    assert parse_latents("3 3 3 3 3 3 3 3 3 3 1", 96) == [3, 1]  # repeats are one latent
    with pytest.raises(InputError, match="More than 2"):
        parse_latents("1 2 3", 96, limit=2)


def test_a_pasted_page_is_quoted_short_in_the_message():
    with pytest.raises(InputError) as info:
        parse_latents("y" * 100_000, 96)
    assert len(str(info.value)) < 200 and "100,000 characters" in str(info.value)


@pytest.mark.parametrize("max_act", [1e308, math.inf, LIMITS.max_latent_activation * 1.01])
def test_max_activation_has_an_upper_bound(max_act):
    with pytest.raises(InputError, match="max activation"):
        SteeringSpec(3, max_act=max_act)
    assert SteeringSpec(3, max_act=LIMITS.max_latent_activation).max_act == LIMITS.max_latent_activation


@pytest.mark.parametrize(
    "from_url, note",
    [("1e308", "above this server's limit"), ("inf", "not a positive number"), ("nan", "not a positive number"),
     ("-2", "not a positive number"), ("abc", "not a positive number")],
)
def test_a_links_max_act_out_of_bounds_falls_back_with_a_note(from_url, note):
    index = type("Index", (), {"max_act": torch.tensor([0.0, 2.5])})()
    value, shown = default_max_act(index, 1, from_url)
    assert value == 2.5 and note in shown and "Using the latent index's value" in shown
    assert default_max_act(index, 1, "3.5") == (3.5, None)


# --- numbers that blow up, libraries that raise ------------------------------------------------------


def test_non_finite_activations_stop_before_sampling(tiny_model, tiny_sae, monkeypatch, caplog):
    """A steering that makes the activations infinite must end in a message, not in the sampler's
    ``ValueError: Expected parameter logits ... found invalid values`` (the issue's traceback)."""
    original = steering.SteeringHook.__call__

    def overflow(self, act, hook=None):  # the steered run only (the normal run's hook just counts steps)
        out = original(self, act, hook)
        return out * math.inf if self._additive is not None else out

    monkeypatch.setattr(steering.SteeringHook, "__call__", overflow)
    sampled = []
    real_sample = torch.distributions.Categorical.sample
    monkeypatch.setattr(torch.distributions.Categorical, "sample", lambda self, *a, **k: sampled.append(1) or real_sample(self, *a, **k))
    with pytest.raises(GenerationError, match="NaN or infinity.*Lower the max activation or the multipliers"):
        generate(tiny_model, tiny_sae, PROMPT, [SteeringSpec(4, "add", coeff=1.0)], GenerationSettings(**FAST))
    assert sampled == [1] * FAST["max_new_tokens"]  # the normal run sampled; the steered one never reached it
    assert_clean(tiny_model)


@pytest.mark.parametrize("error", [ValueError("Expected parameter logits"), IndexError("index 7 is out of bounds"), KeyError("x")])
def test_any_library_error_becomes_a_message_and_the_log_keeps_the_trace(tiny_model, tiny_sae, monkeypatch, caplog, error):
    def fail(self, act, hook=None):
        raise error

    monkeypatch.setattr(steering.SteeringHook, "__call__", fail)
    with caplog.at_level(logging.ERROR, logger="sae_lib.steering"):
        with pytest.raises(GenerationError) as info:
            generate(tiny_model, tiny_sae, PROMPT, [SteeringSpec(4, "add", coeff=1.0)], GenerationSettings(**FAST))
    message = str(info.value)
    assert type(error).__name__ in message and "server's log" in message and "try again" in message
    assert "Traceback" not in message and "/" not in message  # no trace, no file paths for the visitor
    records = [r for r in caplog.records if r.exc_info]
    assert records and records[0].exc_info[1] is error  # the operator's log has the exception and its trace
    assert_clean(tiny_model)


def test_a_visitors_mistake_is_not_reworded(tiny_model, tiny_sae):
    with pytest.raises(InputError, match="empty"):
        generate(tiny_model, tiny_sae, "   ", [], GenerationSettings(**FAST))


# --- dose-response: what steering puts in ------------------------------------------------------------


def test_steered_activation_is_measured_at_the_hook_and_rises_with_the_scale(tiny_model, tiny_sae):
    spec = SteeringSpec(6, "add", max_act=2.0, coeff=10.0)
    scales = [0.0, 0.25, 0.5, 1.0, 2.0]
    settings = GenerationSettings(max_new_tokens=5, stop_at_eos=False)
    dr = dose_response(tiny_model, tiny_sae, PROMPT, [spec], scales, settings)
    acts = dr.steered_acts[:, 0]
    assert acts.shape == (5,) and bool((acts[1:] > acts[:-1]).all()), acts
    # Naive reference: encode the hook's activation plus the added vector, at the positions that wrote
    # the text (the prompt's last token and each generated token but the last).
    n = tiny_model.to_tokens(PROMPT).shape[1]
    with torch.no_grad():
        for j, scale in enumerate(scales):
            vec = scale * 20.0 * tiny_sae.W_dec[6]
            _, cache = tiny_model.run_with_cache(
                dr.tokens[j : j + 1, :-1], names_filter=[TINY_HOOK]
            )  # unsteered upstream of the hook: the hook is the only place steering acts
            z = tiny_sae.encode(cache[TINY_HOOK][:, n - 1 :] + vec)[..., 6]
            torch.testing.assert_close(dr.steered_acts[j, 0], z.mean(), rtol=1e-4, atol=1e-5)
    assert_clean(tiny_model)


def test_a_demo_latent_known_to_respond_rises_with_the_multiplier(demo_workspace):
    """Issue 14: latent 10 on the demo showed a flat 0. Measured at the hook with the steering applied it
    stays 0 up to half the sliders' strength and reaches only 0.07 at full strength: its encoder barely
    reads its own decoder direction, so the flat line was true, not a plotting bug. A latent whose
    encoder does read its decoder direction (the largest W_enc[:, i] . W_dec[i] among live latents)
    rises with the multiplier."""
    ws = demo_workspace
    alive = ws.index.max_act > 0
    self_read = (ws.sae.W_enc.T * ws.sae.W_dec).sum(-1).detach().cpu()  # (d_sae,)
    latent = int(torch.where(alive, self_read, torch.tensor(-math.inf)).argmax())
    spec = SteeringSpec(latent, "add", max_act=float(ws.index.max_act[latent]), coeff=1.0)
    dr = dose_response(ws.model, ws.sae, "One day Sam went to the", [spec], [0.0, 0.5, 1.0, 2.0],
                       GenerationSettings(max_new_tokens=12))
    acts = dr.steered_acts[:, 0]
    assert bool((acts[1:] >= acts[:-1]).all()) and acts[-1] > acts[0], acts
    assert dr.latent_acts.shape == (4, 1) and bool(torch.isfinite(dr.latent_acts).all())
    assert_clean(ws.model)
