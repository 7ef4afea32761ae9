"""Host unit tests of the shared-state objects in their plain-Python fallback."""

from __future__ import annotations

import pytest

from workerbridge import (
    ProgressInfo,
    SharedCancellation,
    SharedCounter,
    SharedFlag,
    SharedProgress,
)
from workerbridge.pool.connection import make_request


def test_progress_fallback_and_subscribers():
    p = SharedProgress(shared=False)
    assert not p.is_shared and p.buffer is None
    seen: list[ProgressInfo] = []
    unsubscribe = p.subscribe(seen.append)
    p.set_total(200)
    p.increment(50)
    p.set(150)
    assert p.get() == ProgressInfo(150, 200) and p.percent() == 75.0
    unsubscribe()
    p.increment(50)
    assert [s.done for s in seen] == [0, 50, 150]
    p.reset()
    assert p.get() == ProgressInfo(0, 0) and p.percent() == 0.0
    assert ProgressInfo(0, 0, final=True).percent == 100.0
    assert ProgressInfo(300, 200).percent == 100.0


def test_cancellation_fallback():
    token = SharedCancellation(shared=False)
    calls: list[bool] = []
    token.subscribe(calls.append)
    assert not token.is_cancelled() and token.wait(0) is False
    token.cancel()
    token.cancel()  # once only
    assert token.is_cancelled() and token.wait(0) is True and calls == [True]
    token.reset()
    assert not token.is_cancelled()


def test_counter_and_flag_fallback():
    c = SharedCounter(shared=False)
    assert c.increment() == 1 and c.increment(5) == 6 and c.decrement(2) == 4
    assert c.compare_and_swap(4, 10) and not c.compare_and_swap(4, 11) and c.get() == 10
    c.set(-3)
    assert c.get() == -3
    f = SharedFlag(shared=False)
    assert not f.is_set() and f.wait(0) is False
    assert f.toggle() is True and f.is_set() and f.wait(0) is True
    assert f.toggle() is False
    f.set()
    f.clear()
    assert not f.is_set()


def test_make_request_is_a_valid_wire_request():
    from workerbridge.core.envelope import Request, decode

    wire = make_request(9, "crypto", "hash_file", {"a": 1}, priority=2, timeout=1.5,
                        correlation="c-1")
    assert decode(wire) == Request(9, "crypto", "hash_file", {"a": 1}, 2, 1.5, "c-1")


def test_constructors_take_initial_values_positional_and_keyword():
    from workerbridge import InvalidInputError, SharedCounter, SharedFlag, SharedProgress

    assert SharedCounter(0).get() == 0 and SharedCounter(5).get() == 5
    assert SharedCounter(initial=-7).get() == -7
    assert SharedFlag(True).is_set() and SharedFlag(initial=True).is_set()
    assert not SharedFlag().is_set() and not SharedFlag(False).is_set()
    assert SharedProgress(100).get().total == 100
    assert SharedProgress(total=8).get() == SharedProgress(8).get()
    assert SharedProgress().get().total == 0
    for bad in (lambda: SharedCounter(2**31), lambda: SharedCounter(1.5),
                lambda: SharedProgress(-1), lambda: SharedProgress(True)):
        with pytest.raises(InvalidInputError):
            bad()
