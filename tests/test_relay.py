"""`_relay.Relay`: stages on threads of their own; errors come out of `take`, and a stage that is
a generator is closed on its thread however it ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from fanout._relay import END, Relay


def test_items_in_order_then_the_end() -> None:
    relay = Relay()
    out = relay.stage(lambda: iter(range(5)))
    doubled = relay.stage(relay.each(out, lambda n: 2 * n))
    try:
        assert [relay.take(doubled) for _ in range(6)] == [0, 2, 4, 6, 8, END]
    finally:
        relay.stop()


def test_a_stage_that_fails_before_its_first_item_raises_from_take() -> None:
    """Also when making the items fails (not a generator): the error is handed on, not lost on
    the thread with the consumer waiting for ever."""

    def items() -> Iterator[int]:
        raise OSError(5, "Input/output error")

    relay = Relay()
    out = relay.stage(items)
    try:
        with pytest.raises(OSError, match="Input/output"):
            relay.take(out)
    finally:
        relay.stop()


def test_a_generator_stage_is_closed_on_its_thread_when_stopped() -> None:
    """Stopped while its next item waits for room, the stage's `finally` still runs, on the
    stage's own thread, before `stop` returns."""
    closed_on: list[threading.Thread] = []

    def items() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed_on.append(threading.current_thread())

    relay = Relay()
    out = relay.stage(items)
    assert relay.take(out) == 0
    relay.stop()
    assert len(closed_on) == 1 and closed_on[0] is not threading.current_thread()
    assert not any(thread.is_alive() for thread in relay._threads)
