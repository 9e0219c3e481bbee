"""Hugging Face hook sites: the module where a TransformerLens hook's activation lives, hooked for a scope.

SAEs keep their TransformerLens hook names (``blocks.28.hook_mlp_out``): :func:`hook_site` maps such a
name to the Hugging Face module whose output (or input) *is* that activation, and :func:`hooked` runs
a plain torch forward hook there for the body of a ``with`` (removed in ``finally``). The generation
engine (:mod:`sae_lib.engine`) steers and reads activations through these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
from torch import Tensor

Steer = Callable[[Tensor], Tensor]
"""A function of the activation at the hook, (batch, pos, d) -> same shape."""


class HookSite(NamedTuple):
    """Where a TransformerLens hook's activation lives in the Hugging Face module."""

    module: torch.nn.Module
    """The module whose output (``kind="output"``/``"output0"``) or first input (``"input"``) it is."""
    kind: Literal["output", "output0", "input"]
    """``output``: the module's return value; ``output0``: element 0 of a returned tuple (attention);
    ``input``: the first positional argument (a forward pre-hook)."""
    layer: int
    """The decoder layer it belongs to: a forward that only needs it can stop after this layer."""
    width: int
    """The activation's last dimension: ``hidden_size``, but the MLP's width for ``mlp.hook_post``."""


_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def hook_site(hf_model: torch.nn.Module, hook_name: str, write: bool = False) -> HookSite | None:
    """The module (and side) whose activation equals TransformerLens's ``hook_name``, or None.

    TransformerLens's block: ``resid_pre -> ln1 -> attn -> attn_out; resid_mid = resid_pre + attn_out;
    mlp_in = resid_mid -> ln2 -> mlp -> mlp_out; resid_post = resid_mid + mlp_out``.

    ``write``: a site where changing the activation changes what TransformerLens's change would. Not
    ``hook_resid_mid``: Hugging Face keeps its residual before ``post_attention_layernorm``, so a change
    at that norm's input reaches the MLP but not ``resid_post`` (it reads correctly, it steers wrongly).
    """
    match = _HOOK_RE.match(hook_name)
    if match is None:
        return None
    layer, rest = int(match[1]), match[2]
    if write and rest == "hook_resid_mid":
        return None
    layers = hf_model.model.layers
    if not 0 <= layer < len(layers):
        return None
    block = layers[layer]
    sites = {
        "hook_resid_pre": (block, "input"),
        "hook_resid_post": (block, "output"),
        "hook_attn_out": (block.self_attn, "output0"),
        "hook_mlp_out": (block.mlp, "output"),
        "hook_resid_mid": (block.post_attention_layernorm, "input"),
        "hook_mlp_in": (block.post_attention_layernorm, "input"),
        "mlp.hook_post": (block.mlp.down_proj, "input"),
    }
    if rest not in sites:
        return None
    module, kind = sites[rest]
    width = module.in_features if rest == "mlp.hook_post" else hf_model.config.hidden_size
    return HookSite(module, kind, layer, int(width))


@contextmanager
def hooked(site: HookSite, fn: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Run ``fn`` on the activation at ``site`` for the body of the ``with``; removed in ``finally``.

    ``fn`` returns the replacement activation, or None to leave it as it is (capture only).
    """

    if site.kind == "input":

        def pre_hook(module, args, kwargs):
            act = args[0] if args else kwargs["hidden_states"]
            new = fn(act)
            if new is None:
                return None
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        handle = site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def post_hook(module, args, output):
            act = output[0] if site.kind == "output0" else output
            new = fn(act)
            if new is None:
                return None
            return (new, *output[1:]) if site.kind == "output0" else new

        handle = site.module.register_forward_hook(post_hook)
    try:
        yield
    finally:
        handle.remove()
