"""The model queue: one holder at a time, first come first served, a truthful place in line."""

import threading
import time

import pytest

from sae_lib.model_queue import ModelQueue, queue_for


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_one_at_a_time_in_arrival_order():
    queue = ModelQueue()
    order, inside, overlap = [], [], []
    arrived = threading.Event()

    def visitor(name):
        with queue.slot() as ahead:
            if inside:
                overlap.append(name)
            inside.append(name)
            order.append((name, ahead))
            arrived.wait(30)
            time.sleep(0.02)
            inside.remove(name)

    # Each visitor arrives once the one before is in line (not after a sleep: on a busy machine a
    # thread's 50 ms head start does not make it arrive first).
    threads = []
    for i, name in enumerate("abcd"):
        threads.append(threading.Thread(target=visitor, args=(name,)))
        threads[-1].start()
        _until(lambda: queue.ahead_of_new_arrival() == i + 1, f"{name} never joined the line")
    assert queue.ahead_of_new_arrival() == 4  # a holds the slot, b, c, d wait
    arrived.set()
    for t in threads:
        t.join()
    assert not overlap
    assert order == [("a", 0), ("b", 1), ("c", 2), ("d", 3)]
    assert queue.ahead_of_new_arrival() == 0


def test_waiting_visitor_sees_its_place_and_can_leave():
    queue = ModelQueue()
    seen = []

    def give_up(ahead):
        seen.append(ahead)
        raise KeyboardInterrupt

    with queue.slot():
        with pytest.raises(KeyboardInterrupt):
            with queue.slot(on_wait=give_up):
                pass
        assert seen == [1]
        assert queue.ahead_of_new_arrival() == 1  # only the holder: the leaver is out of line
    with queue.slot() as ahead:
        assert ahead == 0


def test_slot_is_released_when_the_body_raises():
    queue = ModelQueue()
    with pytest.raises(ValueError):
        with queue.slot():
            raise ValueError
    assert queue.ahead_of_new_arrival() == 0


def test_one_queue_per_model(tiny_model, tiny_sae):
    assert queue_for(tiny_model) is queue_for(tiny_model)
    assert queue_for(tiny_model) is not queue_for(tiny_sae)


def test_a_visitor_who_leaves_mid_generation_does_not_wedge_the_queue():
    """A page reload stops the script with a BaseException inside the slot; the next visitor gets in."""
    queue = ModelQueue()

    class _Rerun(BaseException):
        """Stands in for Streamlit's StopException / RerunException."""

    with pytest.raises(_Rerun):
        with queue.slot():
            raise _Rerun
    got_in = threading.Event()

    def next_visitor():
        with queue.slot() as ahead:
            assert ahead == 0
            got_in.set()

    t = threading.Thread(target=next_visitor)
    t.start()
    t.join(timeout=5)
    assert got_in.is_set() and queue.ahead_of_new_arrival() == 0


def test_a_waiter_is_told_when_its_turn_comes():
    """The page's "N run(s) ahead of you" must not stay up while the visitor's own run goes: a caller
    that was told it waits hears ``on_wait(0)`` once admitted, before its body runs."""
    queue = ModelQueue()
    seen: list = []
    holder_in, release = threading.Event(), threading.Event()

    def holder():
        with queue.slot():
            holder_in.set()
            assert release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert holder_in.wait(30)

    def waiter():
        with queue.slot(on_wait=seen.append):
            seen.append("body")

    w = threading.Thread(target=waiter)
    w.start()
    _until(lambda: seen, "the waiter never reported its place")
    release.set()
    t.join(30)
    w.join(30)
    assert seen[0] == 1 and seen[-2:] == [0, "body"]
    assert 0 not in seen[:-2]  # 0 only once it is in: never while someone is ahead
    seen.clear()
    with queue.slot(on_wait=seen.append):  # nobody ahead: never told to wait, nothing to take down
        pass
    assert seen == []
