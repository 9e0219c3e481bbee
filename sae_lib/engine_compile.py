"""The engine's compiled decode step: a CUDA static cache and a ``torch.compile``d step, steered from a slot.

:class:`StaticDecode` is a base of :class:`sae_lib.engine.Engine` (it uses the engine's ``hf``,
``device``, ``dtype``, ``_compiled``, ``_slots`` and ``_decode_add``): it prefills eagerly into a static
cache, then decodes one token per call through a compiled graph that steers through a persistent
:class:`DecodeSlot`. Anything that fails here raises :class:`_CompileProblem`, and the engine falls back
to eager for good (:meth:`sae_lib.engine.Engine.sample`). Out of memory counts as such a failure until
a shape's graph is recorded (three compiled calls); after that it is a real shortage, raised as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from sae_lib.hf_hooks import HookSite, Steer, hooked


_DYNAMO_RESETS = [0]
"""How often :meth:`StaticDecode._slot` reset torch's compiled graphs (process-wide, every engine's)."""


class StaticDecode:
    """The static-cache + ``torch.compile`` decode machinery of :class:`sae_lib.engine.Engine`."""

    @contextmanager
    def _static_stepper(self, batch: int, length: int, site: HookSite | None, steer: Steer | None) -> Iterator[Callable[[Tensor], Tensor]]:
        """Prefill eagerly into a static cache (with ``steer`` as a plain hook), then decode one token per
        call through a compiled step that steers through a persistent :class:`DecodeSlot`.

        Dynamo does not guard on module hooks, so a hook added after compiling would be silently ignored
        by the graph: the decode step's steering therefore lives in a slot registered *before* compiling,
        driven by a buffer that is zero unless a run is steering, and zeroed again in ``finally``. A static
        cache per (batch, cache length), the last few kept; it is reset before every run, so a run
        cancelled midway leaves nothing the next one reads.
        """
        from transformers import StaticCache

        length = 1 << max(length - 1, 1).bit_length()  # a power of two: few distinct caches
        slot = self._slot(site) if site is not None else None
        if "decode" not in self._compiled:
            try:
                # One compiled function for every batch size and cache length: the first new shape
                # recompiles with dynamic sizes (torch's automatic dynamic shapes), later ones reuse it;
                # CUDA graphs are recorded per shape, which is cheap.
                self._compiled["decode"] = torch.compile(self._decode, mode="reduce-overhead", fullgraph=False)
            except Exception as err:  # torch.compile unavailable (no triton, old GPU, ...)
                raise _CompileProblem(f"torch.compile failed: {type(err).__name__}: {err}") from err
        compiled = self._compiled["decode"]
        caches = self._compiled.setdefault("caches", {})
        # Compiled calls that succeeded per shape. torch's CUDA graph trees run a new shape once to warm
        # up, record it on the next call and replay it from the third: after three, nothing is set up.
        runs = self._compiled.setdefault("runs", {})
        if self._compiled.get("resets") != _DYNAMO_RESETS[0]:  # graphs dropped since (any engine's new slot)
            runs.clear()
            self._compiled["resets"] = _DYNAMO_RESETS[0]
        key = (batch, length)
        cache = caches.pop(key, None)
        if cache is None:
            while len(caches) >= 4:  # the least recently used goes: KV caches are large on an 8B model
                old = next(iter(caches))
                caches.pop(old)
                runs.pop(old, None)
            cache = StaticCache(config=self.hf.config, max_cache_len=length)
        caches[key] = cache  # most recently used last
        cache.reset()
        add = self._decode_add(steer, batch)
        first = [True]

        def shortage(err: torch.OutOfMemoryError) -> Exception:
            if runs.get(key, 0) >= 3:  # this shape's graph is recorded: a real shortage, the caller's to report
                return err
            # The static cache, compilation and graph capture need memory that eager decoding does not.
            return _CompileProblem(f"out of memory while setting up compiled decoding ({str(err)[:200]})")

        def step(ids: Tensor) -> Tensor:
            if first[0]:
                first[0] = False
                try:
                    with hooked(site, steer) if site is not None and steer is not None else contextlib.nullcontext():
                        logits = self.hf(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
                except torch.OutOfMemoryError as err:
                    raise shortage(err) from err
                if slot is not None:
                    slot.set(batch, add)
                return logits
            try:
                # CUDA graphs reuse their output buffer: copy before the next replay overwrites it.
                logits = compiled(ids, cache).clone()
            except torch.OutOfMemoryError as err:
                raise shortage(err) from err
            except Exception as err:  # a graph break dynamo cannot handle, a capture error, ...
                raise _CompileProblem(f"compiled decode step failed: {type(err).__name__}: {str(err)[:300]}") from err
            runs[key] = runs.get(key, 0) + 1
            return logits

        try:
            yield step
        finally:
            if slot is not None:
                slot.clear()

    def _decode(self, ids: Tensor, cache) -> Tensor:
        """One decode step: ``ids`` (batch, 1) -> last-position logits (batch, vocab); compiled on CUDA."""
        return self.hf(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

    def _slot(self, site: HookSite) -> "DecodeSlot":
        key = id(site.module)
        if key not in self._slots:
            if "decode" in self._compiled:
                # Graphs traced before this slot existed would silently skip it (dynamo does not guard on
                # module hooks): drop them so the next call traces with every slot in place.
                torch._dynamo.reset()
                _DYNAMO_RESETS[0] += 1  # every engine's recorded graphs are gone: its ``runs`` start again
                del self._compiled["decode"]
            # The activation's own width: mlp.hook_post (down_proj's input) is the MLP's, not hidden_size.
            self._slots[key] = DecodeSlot(site, site.width, self.device, self.dtype)
        return self._slots[key]


class DecodeSlot:
    """A forward hook that stays on one hook site while compiled decoding is on: it adds ``add[:batch]``
    (zeros unless a steered run is decoding). Compiled graphs see one fixed hook reading one fixed buffer.
    """

    MAX_BATCH = 64

    def __init__(self, site: HookSite, d: int, device: torch.device, dtype: torch.dtype) -> None:
        self.add = torch.zeros(self.MAX_BATCH, d, device=device, dtype=dtype)
        self.handle = site.module.register_forward_hook(self._hook) if site.kind != "input" else (
            site.module.register_forward_pre_hook(self._pre_hook)
        )
        self.kind = site.kind

    def set(self, batch: int, add: Tensor | None) -> None:
        self.add.zero_()
        if add is not None:
            self.add[:batch] = add.to(self.add)

    def clear(self) -> None:
        self.add.zero_()

    def _hook(self, module, args, output):
        act = output[0] if self.kind == "output0" else output
        if act.shape[0] > self.add.shape[0]:  # a larger batch (eager: never a compiled run) has nothing to add
            return None
        new = act + self.add[: act.shape[0], None, :]
        return (new, *output[1:]) if self.kind == "output0" else new

    def _pre_hook(self, module, args):
        if args[0].shape[0] > self.add.shape[0]:  # as in _hook: the slot stays on for every forward
            return None
        return (args[0] + self.add[: args[0].shape[0], None, :], *args[1:])


class _CompileProblem(Exception):
    """The compiled path failed; the engine falls back to eager for good."""
