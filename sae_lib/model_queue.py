"""A first-come, first-served queue in front of a shared model (or other shared work, by name).

The app loads one model per process and every visitor uses it. Steering works by adding hooks to
that model for the duration of a generation, and TransformerLens keeps its hook bookkeeping
(``context_level``, the hook lists) on the model itself, so two generations must never overlap:
one visitor's steering hooks would leak into another's output. Every generation therefore runs
inside ``queue_for(model).slot()``, which admits one caller at a time in arrival order and tells the
others how many are ahead of them.

Anything else that runs the shared model while steering may be active (the latent browser's
forward passes, for example) should take the same slot.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

_POLL_S = 0.25
"""How often a waiting caller re-reports its place in line (seconds)."""


class ModelQueue:
    """One model, one user at a time, in arrival order, with a visible place in line."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()  # tickets in arrival order
        self._busy = False

    def ahead_of_new_arrival(self) -> int:
        """How many callers a visitor arriving now would wait for (running + queued)."""
        with self._cond:
            return len(self._waiting) + int(self._busy)

    def _ahead(self, ticket: object) -> int:
        return self._waiting.index(ticket) + int(self._busy)

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None) -> Iterator[int]:
        """Hold the model for the body of the ``with``; yields how many were ahead on arrival.

        ``on_wait(n_ahead)`` is called while waiting (from the caller's thread, outside the queue's
        lock) whenever the place in line may have changed; if it raises, the caller leaves the line
        and the exception propagates (this is how a page that is stopped gives up its place). A caller
        that was told it waits gets ``on_wait(0)`` once admitted, so its "N ahead of you" message does
        not stay up while its own run goes.
        """
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            ahead_on_arrival = self._ahead(ticket)
        waited = False
        try:
            while True:
                with self._cond:
                    if not self._busy and self._waiting[0] is ticket:
                        self._waiting.popleft()
                        self._busy = True
                        break
                    ahead = self._ahead(ticket)
                if on_wait is not None:
                    waited = True
                    on_wait(ahead)
                with self._cond:
                    if self._busy or self._waiting[0] is not ticket:
                        self._cond.wait(timeout=_POLL_S)
        except BaseException:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            if waited:
                on_wait(0)  # our turn: the caller takes its waiting message down
            yield ahead_on_arrival
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


_QUEUES: "weakref.WeakKeyDictionary[torch.nn.Module, ModelQueue]" = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


def queue_for(model: torch.nn.Module) -> ModelQueue:
    """The process-wide queue of ``model`` (created on first use; models do not block each other)."""
    with _QUEUES_LOCK:
        queue = _QUEUES.get(model)
        if queue is None:
            queue = _QUEUES[model] = ModelQueue()
        return queue


_NAMED: dict[str, ModelQueue] = {}


def named_queue(name: str) -> ModelQueue:
    """The process-wide queue called ``name``, for shared work that is not a model's: the Theory page
    trains its toy models on the server's CPU, one visitor's run at a time, through ``named_queue``."""
    with _QUEUES_LOCK:
        queue = _NAMED.get(name)
        if queue is None:
            queue = _NAMED[name] = ModelQueue()
        return queue
