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
    """``inner`` unchanged, keeping the activation a :class:`HookSite` of that kind names in ``act``.
    ``run_inner=False`` (an ``input`` site whose module's output nobody reads): the input passes through."""

    def __init__(self, inner: nn.Module, kind: str, run_inner: bool = True):
        super().__init__()
        self.inner, self.kind, self.run_inner = inner, kind, run_inner
        self.act: Tensor | None = None

    def forward(self, *args, **kwargs):
        if self.kind == "input":
            self.act = args[0] if args else kwargs["hidden_states"]
            if not self.run_inner:
                return self.act
        out = self.inner(*args, **kwargs)
        if self.kind == "output":
            self.act = out
        elif self.kind == "output0":
            self.act = out[0]
        return out


class _Skip(nn.Module):
    """Stands in for a module whose output is not read: its (same-shaped) input passes through."""

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return hidden_states


LAYER_ORDER = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
"""The order in which a Qwen3 / Qwen2 / Llama decoder layer runs its children (the engine's architectures):
those after the site's own child compute nothing the hook reads."""


def _shallow(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its parameters, buffers and children, with its own child table (so
    replacing a child in the copy leaves the original as it is)."""
    twin = copy.copy(module)
    twin._modules = dict(module._modules)
    return twin


class PrefixForward(nn.Module):
    """``forward(input_ids)`` -> the activation at ``site`` of the ``*ForCausalLM`` ``hf_model``: the
    decoder's layers up to the site only, no final norm, no unembedding. Nothing after the site runs that
    the hook does not read: ``resid_pre`` of layer L is the output of layers 0..L-1 (tapped where the final
    norm would take it), and in the site's own layer the children after the site's are skipped (for
    ``attn_out`` / ``mlp_in`` / ``resid_mid``, the MLP: about two thirds of a layer's work)."""

    def __init__(self, hf_model: nn.Module, site: HookSite):
        super().__init__()
        decoder = hf_model.model
        self.decoder = _shallow(decoder)
        self.decoder.norm = _Skip()  # the final norm's output is never read
        block = decoder.layers[site.layer]
        if site.module is block and site.kind == "input":  # resid_pre: what the layers below it return
            self.tap = self.decoder.norm = _Tap(decoder.norm, "input", run_inner=False)
            self.decoder.layers = nn.ModuleList(decoder.layers[: site.layer])
            return
        layers = list(decoder.layers[: site.layer + 1])
        path = next(name for name, module in block.named_modules() if module is site.module)
        if path == "":  # resid_post: the whole layer's output
            self.tap = layers[-1] = _Tap(site.module, site.kind)
        else:
            # An input site that is one of the layer's own children (post_attention_layernorm for mlp_in /
            # resid_mid) need not run (its output feeds only skipped work); a deeper one (the MLP's
            # down_proj for hook_post) must, for the shapes that follow.
            self.tap = _Tap(site.module, site.kind, run_inner=not (site.kind == "input" and "." not in path))
            top = parent = _shallow(block)
            *above, name = path.split(".")
            for part in above:
                child = _shallow(getattr(parent, part))
                setattr(parent, part, child)
                parent = child
            setattr(parent, name, self.tap)
            own = path.split(".")[0]
            if own in LAYER_ORDER:
                for later in LAYER_ORDER[LAYER_ORDER.index(own) + 1:]:
                    setattr(top, later, _Skip())
            layers[-1] = top
        self.decoder.layers = nn.ModuleList(layers)

    def forward(self, input_ids: Tensor) -> Tensor:
        self.decoder(input_ids=input_ids, use_cache=False)
        act, self.tap.act = self.tap.act, None  # not kept alive between calls
        return act


def compiled_prefix(hf_model: nn.Module, site: HookSite, backend: str = "inductor") -> nn.Module:
    """:class:`PrefixForward` under ``torch.compile`` (static shapes: a batch shape compiles once)."""
    return torch.compile(PrefixForward(hf_model, site), dynamic=False, backend=backend)
