"""The model's forward up to a hook as one module that returns the hook's activation: it can be compiled.

Why: :meth:`sae_lib.engine.Engine.activations` stops the Hugging Face forward at the hook by raising from
a forward hook. Eagerly that costs nothing, but a compiled graph cannot raise out midway (SAELens's
``compile_llm`` died on the first batch with it). Here the layers above the hook are simply absent: a
shallow copy of the decoder holds the layers up to the hook's, and the module at the hook is wrapped by
a tap that keeps its activation. The copy shares every weight with the model (no second copy), and
``torch.compile`` can fuse what eager mode runs as separate kernels per layer (RMSNorm's float32
round trip, rotary embeddings, SwiGLU, residual adds). SAE training's activations use it with
``compile_llm`` (:class:`~sae_lib.engine.EngineActivations`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from sae_lib.hf_hooks import HookSite


class _Tap(nn.Module):
    """``inner`` unchanged, keeping the activation a :class:`HookSite` of that kind names in ``act``."""

    def __init__(self, inner: nn.Module, kind: str):
        super().__init__()
        self.inner, self.kind = inner, kind
        self.act: Tensor | None = None

    def forward(self, *args, **kwargs):
        if self.kind == "input":
            self.act = args[0] if args else kwargs["hidden_states"]
        out = self.inner(*args, **kwargs)
        if self.kind == "output":
            self.act = out
        elif self.kind == "output0":
            self.act = out[0]
        return out


def _shallow(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its parameters, buffers and children, with its own child table (so
    replacing a child in the copy leaves the original as it is)."""
    twin = copy.copy(module)
    twin._modules = dict(module._modules)
    return twin


class PrefixForward(nn.Module):
    """``forward(input_ids)`` -> the activation at ``site`` of the ``*ForCausalLM`` ``hf_model``: the
    decoder's layers up to the site's layer only, the final norm on their output (one RMSNorm, not read),
    no unembedding."""

    def __init__(self, hf_model: nn.Module, site: HookSite):
        super().__init__()
        decoder = hf_model.model
        layers = list(decoder.layers[: site.layer + 1])
        path = next(name for name, module in layers[-1].named_modules() if module is site.module)
        self.tap = _Tap(site.module, site.kind)
        if path == "":  # the site is the decoder layer itself (resid_pre / resid_post)
            layers[-1] = self.tap
        else:
            top = parent = _shallow(layers[-1])
            *above, name = path.split(".")
            for part in above:
                child = _shallow(getattr(parent, part))
                setattr(parent, part, child)
                parent = child
            setattr(parent, name, self.tap)
            layers[-1] = top
        self.decoder = _shallow(decoder)
        self.decoder.layers = nn.ModuleList(layers)

    def forward(self, input_ids: Tensor) -> Tensor:
        self.decoder(input_ids=input_ids, use_cache=False)
        act, self.tap.act = self.tap.act, None  # not kept alive between calls
        return act


def compiled_prefix(hf_model: nn.Module, site: HookSite, backend: str = "inductor") -> nn.Module:
    """:class:`PrefixForward` under ``torch.compile`` (static shapes: a batch shape compiles once)."""
    return torch.compile(PrefixForward(hf_model, site), dynamic=False, backend=backend)
