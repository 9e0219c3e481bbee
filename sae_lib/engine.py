"""The generation engine: the Hugging Face module that generates, steered at the SAE's hook.

Why this exists: TransformerLens's ``generate`` runs its own einsum attention and a Python-heavy
KV cache, about a third of the speed of Hugging Face's kernels on the same weights (see the README's
hardware section). The model that *generates* is therefore the Hugging Face module itself (SDPA
attention, its ``DynamicCache``; on CUDA a ``StaticCache`` with a ``torch.compile``d decode step
where that is available, falling back to eager with a log notice). The ``HookedTransformer`` that
:func:`sae_lib.model.load_model` returns is built from *views* of this module's tensors, so one copy
of the weights serves both.

SAEs keep their TransformerLens hook names (``blocks.28.hook_mlp_out``): :mod:`sae_lib.hf_hooks` maps
such a name to the Hugging Face module whose output (or input) *is* that activation, and steering is a
plain torch forward hook there, added inside its ``hooked`` and removed in ``finally``. Plain
module hooks rather than TransformerLens's ``TransformerBridge`` because the bridge re-routes every
module call through its own wrappers (the overhead this engine removes) and is marked beta in the
TransformerLens / SAELens releases pinned here; a module hook costs one Python call per layer call.

The engine reproduces TransformerLens's sampling exactly (temperature, then the OpenAI-style
frequency penalty ``logits/T - penalty * count``, then a categorical draw in float32; end-of-text
padding), so on float32 weights a seed gives TransformerLens's token streams.

A model whose architecture the mapping is not verified for gets no engine: :func:`engine_for`
returns None, :func:`engine_notice` says why, and callers use the TransformerLens path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
import weakref

import torch
import torch._dynamo
from torch import Tensor

from sae_lib.engine_compile import DecodeSlot, StaticDecode, _CompileProblem
from sae_lib.engine_prefix import compiled_prefix
from sae_lib.hf_hooks import HookSite, Steer, hook_site, hooked

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM")
"""Hugging Face classes whose decoder layers have the layout :func:`hook_site` maps (input_layernorm,
self_attn, post_attention_layernorm, mlp with down_proj), verified against TransformerLens in
tests/test_engine.py."""

ENV_COMPILE = "LATENT_LAB_COMPILE"
"""``0`` turns the CUDA static-cache + ``torch.compile`` decode step off (eager HF kernels only)."""

class _StopForward(Exception):
    """Raised by a capture hook once the wanted activation is in hand: the layers above never run."""


@dataclass
class Engine(StaticDecode):
    """The Hugging Face causal LM that generates and runs forwards for every page and script."""

    hf: torch.nn.Module
    """The ``*ForCausalLM`` module (eval mode, no grad); shares its weights with the HookedTransformer."""
    eos_token_id: int | None = None
    """End-of-text token: a sample stops there and the rest of its row is this token (TransformerLens's padding)."""
    compile_decode: bool = False
    """Use a static cache and a ``torch.compile``d decode step (CUDA only; see :meth:`sample`)."""
    compile_failed: str | None = None
    """Why the compiled decode step was given up (then every run is eager), for the log and the benches."""
    _compiled: dict = field(default_factory=dict, repr=False)
    _slots: dict = field(default_factory=dict, repr=False)
    _prefixes: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def mode(self) -> str:
        """What generates, in words (the sidebar and the benches show it)."""
        attn = getattr(self.hf.config, "_attn_implementation", "sdpa")
        if self.compile_decode and self.compile_failed is None:
            return f"Hugging Face ({attn}, static cache + torch.compile)"
        return f"Hugging Face ({attn}, eager)"

    def site(self, hook_name: str, write: bool = False) -> HookSite:
        """The module for ``hook_name``; ``write``: one where a change is the change TransformerLens's
        hook would make (:func:`hook_site`: not ``hook_resid_mid``), for every caller that steers."""
        site = hook_site(self.hf, hook_name, write=write)
        if site is None:
            from sae_lib.errors import CompatibilityError

            what = "to steer at" if write else "for"
            raise CompatibilityError(f"The generation engine has no module {what} hook {hook_name!r}.")
        return site

    # --- forwards -----------------------------------------------------------------------------

    @torch.no_grad()  # not inference_mode: SAE training keeps these activations in its buffer
    def activations(self, tokens: Tensor, hook_name: str, compiled: bool = False) -> Tensor:
        """Activations at ``hook_name`` for ``tokens`` (batch, pos) -> (batch, pos, d); the layers above
        the hook never run (nor the unembedding). ``compiled``: through a ``torch.compile``d copy of the
        decoder up to the hook (:mod:`sae_lib.engine_prefix`; the first call per batch shape compiles;
        a compiler failure falls back to this eager forward with a log notice)."""
        site = self.site(hook_name)
        if compiled and self._prefixes.get(hook_name) is not False:
            prefix = self._prefixes.get(hook_name)
            if prefix is None:  # (not ``or``: a compiled module has no truth value)
                prefix = self._prefixes[hook_name] = compiled_prefix(self.hf, site)
            try:
                return prefix(tokens.to(self.device))
            except torch._dynamo.exc.TorchDynamoException as err:
                log.warning("Compiled forward to %s disabled, running it eagerly from now on: %s",
                            hook_name, str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__)
                self._prefixes[hook_name] = False
        got: list[Tensor] = []

        def capture(act: Tensor) -> None:
            got.append(act)
            raise _StopForward

        with hooked(site, capture):
            try:
                self.hf.model(input_ids=tokens.to(self.device), use_cache=False)
            except _StopForward:
                pass
        return got[0]

    @torch.inference_mode()
    def logits(
        self, tokens: Tensor, hook_name: str | None = None, steer: Steer | None = None, capture: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (batch, pos, vocab) of ``tokens`` (batch, pos), with ``steer`` applied at ``hook_name``
        when given, and the (steered) activation there when ``capture``."""
        got: list[Tensor] = []

        def at_hook(act: Tensor) -> Tensor | None:
            out = steer(act) if steer is not None else None
            if capture:
                got.append(act if out is None else out)
            return out

        if hook_name is None or (steer is None and not capture):
            return self.hf(input_ids=tokens.to(self.device), use_cache=False).logits, None
        with hooked(self.site(hook_name, write=steer is not None), at_hook):
            logits = self.hf(input_ids=tokens.to(self.device), use_cache=False).logits
        return logits, (got[0] if capture else None)

    # --- sampling -----------------------------------------------------------------------------

    def sample(
        self,
        tokens: Tensor,
        max_new_tokens: int,
        temperature: float,
        freq_penalty: float,
        seed: int,
        stop_at_eos: bool = True,
        hook_name: str | None = None,
        steer: Steer | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> Tensor:
        """``tokens`` (batch, pos) -> (batch, pos + new): TransformerLens's ``generate`` on HF kernels.

        ``steer`` runs at ``hook_name`` on every forward (the prompt once, then one position per new
        token, as with TransformerLens's KV cache). ``on_step()`` is called before each forward and may
        raise to stop the run: the hook is removed, and no cache outlives the call (a static cache is
        reset before every use, so a half-filled one is never read).

        With ``compile_decode`` the decode steps run through a compiled graph over a static cache when
        the steering is additive (``steer.decode_add``, see :class:`DecodeSlot`); anything that fails
        there (compilation, graph capture, memory before a shape's graph is recorded) switches the engine
        to eager for good, with a log notice, and the run is redone eagerly from the same seed.
        """
        steps_reported = 0

        def step_once() -> None:
            # A run redone eagerly after a compile failure reports only the steps not yet reported, so a
            # caller's progress never counts past its total.
            nonlocal steps_reported, replayed
            replayed += 1
            if replayed > steps_reported:
                steps_reported = replayed
                if on_step is not None:
                    on_step()

        replayed = 0
        args = (tokens, max_new_tokens, temperature, freq_penalty, seed, stop_at_eos, hook_name, steer, step_once)
        # The decode slot's buffer holds MAX_BATCH rows: a larger batch (limits raised by the operator)
        # decodes eagerly rather than break the graph for everyone.
        if (self.compile_decode and self.compile_failed is None and tokens.shape[0] <= DecodeSlot.MAX_BATCH
                and self._decode_add(steer, tokens.shape[0]) is not False):
            try:
                return self._sample(*args, static=True)
            except _CompileProblem as err:  # out of memory while compiling or capturing included
                self._give_up_compile(str(err))
            replayed = 0
            if hasattr(steer, "restart"):  # a steering hook that counts positions starts counting again
                steer.restart()
        return self._sample(*args, static=False)

    def _decode_add(self, steer: Steer | None, batch: int) -> Tensor | None | bool:
        """What the compiled decode step adds at the hook per row: None (nothing), a (batch, d) tensor,
        or False when the steering is not purely additive (it then runs eagerly)."""
        if steer is None:
            return None
        decode_add = getattr(steer, "decode_add", None)
        if decode_add is None:
            return False
        return decode_add(batch)

    def reset_compiled(self) -> None:
        """Drop the compiled graphs and static caches and take the decode slots off the model; the next
        compiled run builds them again."""
        for slot in self._slots.values():
            slot.handle.remove()
        self._slots.clear()
        self._compiled.clear()

    def _give_up_compile(self, why: str) -> None:
        self.compile_failed = why
        self.reset_compiled()
        log.warning("Compiled decoding disabled, generating eagerly from now on: %s", why)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _sample(self, tokens, max_new_tokens, temperature, freq_penalty, seed, stop_at_eos,
                hook_name, steer, on_step, static: bool) -> Tensor:
        device = self.device
        tokens = tokens.to(device)
        batch, n = tokens.shape
        vocab = int(self.hf.config.vocab_size)
        # TransformerLens samples from torch's global generator after ``manual_seed(seed)``; a private
        # generator seeded the same way yields the same stream without touching global state.
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        counts = torch.zeros(batch, vocab, dtype=torch.float32, device=device)  # uses of each token so far
        counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float32))
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        non_finite = torch.zeros(batch, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)
        eos = self.eos_token_id if stop_at_eos else None
        out = [tokens]
        site = self.site(hook_name, write=True) if steer is not None and hook_name else None
        with contextlib.ExitStack() as stack:
            if static:
                # Steered or not, the same graph: its slot adds zeros when nothing steers (exact, and one
                # compilation per batch size instead of two).
                slot_site = hook_site(self.hf, hook_name, write=True) if hook_name else None
                step = stack.enter_context(self._static_stepper(batch, n + max_new_tokens, slot_site, steer))
            else:
                if site is not None:
                    stack.enter_context(hooked(site, steer))
                step = self._dynamic_stepper()
            ids = tokens
            for _ in range(max_new_tokens):
                if on_step is not None:
                    on_step()
                last = step(ids)  # (batch, vocab) logits at the last position
                # Non-finite logits (steering far too strong) would make the sampler fail unreadably, or
                # hit a device-side assert on CUDA: note them and sample from finite stand-ins instead,
                # without a per-step device sync; the run is refused below.
                non_finite |= ~torch.isfinite(last).all(-1)
                last = torch.nan_to_num(last, nan=0.0, posinf=1e4, neginf=-1e4)
                if temperature == 0.0:
                    nxt = last.argmax(-1)
                else:
                    scaled = last.float() / temperature
                    if freq_penalty > 0:
                        scaled = scaled - freq_penalty * counts
                    # Categorical(logits=scaled).sample(), as TransformerLens draws it.
                    probs = torch.softmax(scaled - scaled.logsumexp(-1, keepdim=True), dim=-1)
                    nxt = torch.multinomial(probs, 1, True, generator=gen)[:, 0]
                if eos is not None:
                    nxt = torch.where(finished, torch.full_like(nxt, eos), nxt)
                    finished |= nxt == eos
                counts[rows, nxt] += 1
                ids = nxt[:, None]
                out.append(ids)
                if eos is not None and bool(finished.all()):
                    break
        if bool(non_finite.any()):
            raise NonFiniteLogits(
                "the model's logits overflowed (NaN or infinity): the steering is too strong for this model"
            )
        return torch.cat(out, dim=1)

    def _dynamic_stepper(self) -> Callable[[Tensor], Tensor]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.hf.config)

        def step(ids: Tensor) -> Tensor:
            return self.hf(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

        return step


class NonFiniteLogits(RuntimeError):
    """The logits held NaN or infinity during a generation (steering far too strong)."""


# --- which model has which engine -------------------------------------------------------------------

_ENGINES: "weakref.WeakKeyDictionary[torch.nn.Module, Engine]" = weakref.WeakKeyDictionary()
_NOTICES: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def supports(hf_model: torch.nn.Module) -> str | None:
    """None when the engine can drive ``hf_model``, else why not (for the visible notice)."""
    name = type(hf_model).__name__
    if name not in SUPPORTED_ARCHITECTURES:
        return (
            f"{name} is not one of the architectures the fast generation engine is verified for "
            f"({', '.join(SUPPORTED_ARCHITECTURES)}): generation uses TransformerLens (slower, same results)."
        )
    return None


def _compile_wanted(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get(ENV_COMPILE, "1").strip() not in ("0", "false", "no")


def attach_engine(model: torch.nn.Module, hf_model: torch.nn.Module, eos_token_id: int | None) -> Engine | None:
    """Register ``hf_model`` as the engine of ``model`` (the HookedTransformer sharing its weights).

    Returns the engine, or None with a notice recorded (:func:`engine_notice`) when the architecture is
    not supported.
    """
    reason = supports(hf_model)
    if reason is not None:
        _NOTICES[model] = reason
        log.warning(reason)
        return None
    engine = Engine(hf=hf_model, eos_token_id=eos_token_id)
    engine.compile_decode = _compile_wanted(engine.device)
    _ENGINES[model] = engine
    return engine


def engine_for(model: torch.nn.Module) -> Engine | None:
    """The engine of a model loaded by :func:`sae_lib.model.load_model`, or None (TransformerLens path)."""
    return _ENGINES.get(model)


@contextmanager
def transformerlens_only(model: torch.nn.Module) -> Iterator[None]:
    """Inside the ``with``, ``model`` has no engine: everything runs on TransformerLens (the benches'
    and tests' reference for "today's path"). Hold the model's queue slot around it in the app."""
    engine = _ENGINES.pop(model, None)
    try:
        yield
    finally:
        if engine is not None:
            _ENGINES[model] = engine


def engine_notice(model: torch.nn.Module) -> str | None:
    """Why ``model`` has no engine, when its loader tried to give it one."""
    return _NOTICES.get(model)


class EngineActivations:
    """The HookedTransformer as SAELens's ``ActivationsStore`` sees it, with activations from the engine.

    SAELens reads activations with ``model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=...,
    prepend_bos=False)``; here that call runs the Hugging Face module up to the hook (the same forward
    as the latent index pass). Every other attribute and call (``to_tokens``, ``cfg``, the hooks SAELens's
    evals add with ``run_with_hooks``) is the HookedTransformer's own. Pass it where SAELens takes a
    model (``override_model=EngineActivations(model)``); without an engine it changes nothing.
    """

    def __init__(self, model: torch.nn.Module, compiled: bool = False) -> None:
        self.model = model
        self.compiled = compiled
        """Read through the engine's compiled forward to the hook (what ``compile_llm`` turns on)."""

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def run_with_cache(self, tokens, *args, names_filter=None, stop_at_layer=None, prepend_bos=None, **kwargs):
        engine = engine_for(self.model)
        names = [names_filter] if isinstance(names_filter, str) else names_filter
        if (
            engine is not None
            and not args
            and not kwargs
            and isinstance(names, (list, tuple))
            and len(names) == 1
            and hook_site(engine.hf, names[0]) is not None
        ):
            return None, {names[0]: engine.activations(tokens, names[0], compiled=self.compiled)}
        return self.model.run_with_cache(
            tokens, *args, names_filter=names_filter, stop_at_layer=stop_at_layer, prepend_bos=prepend_bos, **kwargs
        )
