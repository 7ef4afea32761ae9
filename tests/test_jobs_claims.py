"""Host tests of which waiting jobs a claim takes (workerbridge.jobs.claims)."""

from __future__ import annotations

import random

import pytest

from workerbridge import InvalidInputError, InvalidTypeError
from workerbridge.jobs.claims import Candidate, QueueLimits, Running, choose, lease_expired


def jobs(*specs: tuple) -> list[Candidate]:
    # (id, priority, seq, due_at[, group[, queue]])
    out = []
    for s in specs:
        ident, priority, seq, due = s[:4]
        group = s[4] if len(s) > 4 else None
        queue = s[5] if len(s) > 5 else "q"
        out.append(Candidate(ident, queue, priority, seq, due, group))
    return out


def test_priority_first_then_fifo_and_nothing_before_it_is_due():
    waiting = jobs(("a", 0, 1, 0), ("b", 5, 2, 0), ("c", 5, 3, 0), ("d", 9, 4, 10.0),
                   ("e", 0, 0, 0))
    assert choose(waiting, 5.0, {"q": QueueLimits(concurrency=10)}) == ["b", "c", "e", "a"]
    assert choose(waiting, 10.0, {"q": QueueLimits(concurrency=10)})[0] == "d"


def test_the_order_does_not_depend_on_the_order_read():
    waiting = jobs(*[(f"j{i}", i % 3, i, 0) for i in range(30)])
    want = choose(waiting, 1.0, {"q": QueueLimits(concurrency=30)})
    for seed in range(5):
        random.Random(seed).shuffle(waiting)
        assert choose(waiting, 1.0, {"q": QueueLimits(concurrency=30)}) == want


def test_queue_concurrency_counts_what_runs_in_every_tab():
    waiting = jobs(("a", 0, 1, 0), ("b", 0, 2, 0), ("c", 0, 3, 0))
    limits = {"q": QueueLimits(concurrency=2)}
    assert choose(waiting, 0, limits) == ["a", "b"]
    assert choose(waiting, 0, limits, running=[Running("q")]) == ["a"]
    assert choose(waiting, 0, limits, running=[Running("q"), Running("q")]) == []
    assert choose(waiting, 0, limits, capacity=1) == ["a"]
    assert choose(waiting, 0, {}) == []  # a queue nobody declared is not run


def test_groups_take_turns_and_each_is_capped():
    # Group "big" added 6 jobs before "x" and "y" added one each.
    waiting = jobs(*[(f"big{i}", 0, i, 0, "big") for i in range(6)],
                   ("x0", 0, 10, 0, "x"), ("y0", 0, 11, 0, "y"), ("n0", 0, 12, 0))
    limits = {"q": QueueLimits(concurrency=4, group_concurrency=2)}
    assert choose(waiting, 0, limits) == ["big0", "x0", "y0", "n0"]
    limits = {"q": QueueLimits(concurrency=10, group_concurrency=2)}
    assert choose(waiting, 0, limits) == ["big0", "x0", "y0", "n0", "big1"]
    running = [Running("q", "big"), Running("q", "big")]
    assert "big0" not in choose(waiting, 0, limits, running=running)


def test_rate_limits_count_recent_starts():
    waiting = jobs(*[(f"j{i}", 0, i, 0) for i in range(5)])
    limits = {"q": QueueLimits(concurrency=10, rate_limit=(3, 1.0))}
    assert choose(waiting, 10.0, limits) == ["j0", "j1", "j2"]
    assert choose(waiting, 10.0, limits, recent_starts={"q": [9.5, 9.8]}) == ["j0"]
    assert choose(waiting, 10.0, limits, recent_starts={"q": [8.9, 9.0]}) == ["j0", "j1", "j2"]


def test_per_tab_counts_what_the_claiming_tab_holds():
    waiting = jobs(*[(f"j{i}", 0, i, 0) for i in range(5)])
    limits = {"q": QueueLimits(concurrency=10, per_tab=2)}
    assert choose(waiting, 10.0, limits) == ["j0", "j1"]
    assert choose(waiting, 10.0, limits, held={"q": 1}) == ["j0"]
    assert choose(waiting, 10.0, limits, held={"q": 2}) == []


def test_queues_are_limited_apart():
    waiting = jobs(("a", 0, 1, 0, None, "one"), ("b", 0, 2, 0, None, "one"),
                   ("c", 0, 3, 0, None, "two"))
    limits = {"one": QueueLimits(1), "two": QueueLimits(1)}
    assert choose(waiting, 0, limits) == ["a", "c"]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"concurrency": 0}, InvalidInputError), ({"concurrency": 1.5}, InvalidTypeError),
    ({"group_concurrency": 0}, InvalidInputError), ({"rate_limit": (0, 1)}, InvalidInputError),
    ({"rate_limit": (1, 0)}, InvalidInputError), ({"rate_limit": 5}, InvalidTypeError),
    ({"per_tab": 0}, InvalidInputError),
])
def test_bad_limits_are_refused(kwargs, error):
    with pytest.raises(error):
        QueueLimits(**kwargs)


def test_leases():
    assert lease_expired(10.0, 10.0) and lease_expired(9.0, 10.0)
    assert not lease_expired(10.5, 10.0) and not lease_expired(None, 10.0)
