"""Where an SAE reads and where it writes on a TransformerLens model.

An SAE reads one hook (``cfg.metadata.hook_name``) and its decoder writes back into the same place.
A transcoder reads one hook and writes another: SAELens keeps the second one in
``cfg.metadata.hook_name_out`` (``Transcoder``, ``SkipTranscoder``, ``JumpReLUTranscoder``; the
mwhanna Qwen3 transcoders read ``blocks.L.mlp.hook_in`` and write ``blocks.L.hook_mlp_out``), and
SAELens's own ``HookedSAETransformer`` uses ``hook_name_out or hook_name`` as the output. So:

* "What fires here" and the latent index encode what the model has at the **input hook**;
* steering adds decoder directions (``W_dec`` rows, width ``d_out``) at the **output hook**.

Some hooks an SAE may name are not plain ``HookedTransformer`` hook points:

* ``blocks.L.mlp.hook_in`` is TransformerLens's *bridge* name for the MLP's input, the output of
  ``ln2``. ``HookedTransformer`` has no hook there; ``ln2.hook_normalized`` sees the same tensor
  before the elementwise gain, so it is read there and multiplied by ``ln2.w`` (a write divides by
  it). :class:`HookSite` carries that gain.
* ``hook_mlp_in``, ``hook_attn_in``, ``hook_q_input``/``k``/``v`` and ``attn.hook_result`` exist in
  ``hook_dict`` but only fire once a flag is set on the model: :func:`prepare_model` sets it (at load
  time, before the model is shared), otherwise a hook there would silently never run.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from sae_lens import SAE
from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name
from transformer_lens import HookedTransformer

from sae_lib.errors import CompatibilityError

_BRIDGE_MLP_IN = re.compile(r"^blocks\.(\d+)\.mlp\.hook_in$")

_FLAGS = {
    "hook_mlp_in": "set_use_hook_mlp_in",
    "hook_attn_in": "set_use_attn_in",
    "hook_q_input": "set_use_split_qkv_input",
    "hook_k_input": "set_use_split_qkv_input",
    "hook_v_input": "set_use_split_qkv_input",
    "hook_result": "set_use_attn_result",
}
"""Hook-name suffix -> the ``HookedTransformer`` setter that makes that hook fire."""


def input_hook(sae: SAE) -> str:
    """The hook the SAE encodes (``cfg.metadata.hook_name``)."""
    return str(sae.cfg.metadata.hook_name)


def output_hook(sae: SAE) -> str:
    """The hook the SAE's decoder writes: ``hook_name_out`` for a transcoder, else the input hook."""
    return str(sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name)


def is_transcoder(sae: SAE) -> bool:
    """True when the SAE reads one hook and writes another."""
    return output_hook(sae) != input_hook(sae)


def d_out(sae: SAE) -> int:
    """Width of what the decoder writes (``W_dec``'s second dimension): ``d_in`` except for transcoders."""
    return int(sae.W_dec.shape[1])


class HookSite(NamedTuple):
    """A hook name as an SAE gives it, mapped onto a ``HookedTransformer`` hook point."""

    name: str
    """The name the SAE's config uses."""
    model_hook: str
    """The hook point of the model that fires with that activation."""
    gain: torch.Tensor | None
    """(width,) elementwise factor: the SAE's activation is ``model_hook``'s times this (None: identity)."""


def resolve(model: HookedTransformer, name: str) -> HookSite:
    """Map ``name`` onto ``model``; :class:`CompatibilityError` when the model has no such place."""
    bridge = _BRIDGE_MLP_IN.match(name)
    if bridge:
        layer = int(bridge[1])
        if layer >= model.cfg.n_layers or not hasattr(model.blocks[layer], "ln2"):
            raise CompatibilityError(
                f"The SAE reads {name!r} (the MLP input of layer {layer}), which {_model_name(model)} "
                f"({model.cfg.n_layers} layers) does not have."
            )
        gain = getattr(model.blocks[layer].ln2, "w", None)
        return HookSite(name, f"blocks.{layer}.ln2.hook_normalized", None if gain is None else gain.detach())
    if name not in model.hook_dict:
        raise CompatibilityError(
            f"The SAE uses hook {name!r}, which {_model_name(model)} ({model.cfg.n_layers} layers) does not "
            "have. Load the model this SAE was trained on, or an SAE for this model."
        )
    return HookSite(name, name, None)


def _model_name(model: HookedTransformer) -> str:
    return str(getattr(model.cfg, "model_name", "the model"))


def enable_hook(model: HookedTransformer, name: str) -> None:
    """Switch on the optional hook point ``name`` if it is one (``hook_mlp_in``, ...); idempotent.

    It only makes the model call a hook it skips otherwise: outputs are unchanged."""
    setter = _FLAGS.get(name.rsplit(".", 1)[-1])
    if setter is not None and hasattr(model, setter):
        flag = setter.removeprefix("set_")
        if not getattr(model.cfg, flag, False):
            getattr(model, setter)(True)


def prepare_model(model: HookedTransformer, sae: SAE) -> None:
    """Switch on the optional hook points the SAE's hooks need (see the module docstring).

    Changes the model's config: call it while loading, before the model is shared.
    """
    for name in {input_hook(sae), output_hook(sae)}:
        enable_hook(model, name)


def to_sae_space(site: HookSite, act: torch.Tensor) -> torch.Tensor:
    """``act`` as captured at ``site.model_hook`` -> the activation the SAE names (same shape)."""
    return act if site.gain is None else act * site.gain.to(act.device, act.dtype)


def to_model_space(site: HookSite, delta: torch.Tensor) -> torch.Tensor:
    """A change of the SAE-named activation -> the change to add at ``site.model_hook``."""
    if site.gain is None:
        return delta
    gain = site.gain.to(delta.device, delta.dtype)
    if bool((gain == 0).any()):
        raise CompatibilityError(
            f"Cannot write at {site.name!r}: the norm's gain has zeros, so no change at "
            f"{site.model_hook!r} produces it."
        )
    return delta / gain


def sae_input(sae: SAE, acts: torch.Tensor) -> torch.Tensor:
    """Activations as read at the SAE's input hook -> what ``sae.encode`` takes, as SAELens's activation
    store hands them to an SAE. Only per-head hooks ((batch, pos, head, d_head): ``attn.hook_z``) change:
    an SAE on one head (``hook_head_index``) gets that head's (batch, pos, d_head); one with SAELens's own
    hook_z reshaping gets the heads as they are (it flattens them itself; its one head as (batch, pos, 1,
    d_head)); any other the heads flattened (batch, pos, head * d_head)."""
    if acts.ndim != 4:
        return acts
    head = getattr(sae.cfg.metadata, "hook_head_index", None)
    if head is not None:
        acts = acts[..., head : head + 1, :]  # (batch, pos, 1, d_head)
    return acts if getattr(sae, "hook_z_reshaping_mode", False) else acts.flatten(-2)


def read_activations(model: HookedTransformer, name: str, tokens: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Activations at hook ``name`` (as an SAE names it) for ``tokens`` (batch, pos), running the model
    only up to that hook's layer. Shape (batch, pos, width) or, for per-head hooks, (batch, pos, head, d_head).
    ``compiled``: the engine's compiled forward to the hook (:mod:`sae_lib.engine_prefix`) where it serves."""
    from sae_lib.engine import engine_for, hook_site  # the engine never imports this module: no cycle

    site = resolve(model, name)
    engine = engine_for(model)
    if engine is not None and hook_site(engine.hf, site.model_hook) is not None:
        return to_sae_space(site, engine.activations(tokens, site.model_hook, compiled=compiled))  # the engine's forward
    enable_hook(model, site.model_hook)  # a no-op once the SAE's loader has prepared the model
    stop = extract_stop_at_layer_from_tlens_hook_name(site.model_hook)
    _, cache = model.run_with_cache(
        tokens, stop_at_layer=stop, names_filter=[site.model_hook], return_cache_object=False
    )
    return to_sae_space(site, cache[site.model_hook])


def role_caption(sae: SAE) -> str:
    """One line saying where the SAE reads and where steering writes, for the pages."""
    if is_transcoder(sae):
        return (
            f"Transcoder: reads `{input_hook(sae)}` (what fires and the index are computed there), "
            f"writes `{output_hook(sae)}` (steering adds decoder directions there)."
        )
    return f"Reads and writes `{input_hook(sae)}`: what fires, the index and steering all use this hook."
