"""Host tests of retries and recovery by error type (workerbridge.jobs.policy)."""

from __future__ import annotations

import pytest

from workerbridge import InvalidInputError, InvalidTypeError, RequestTimeoutError
from workerbridge.jobs.policy import (
    Backoff,
    Fail,
    Retry,
    decide,
    match,
    recovery_table,
    type_names,
)


def test_backoff_grows_by_its_factor_up_to_its_cap():
    b = Backoff(base=1.0, factor=2.0, max=10.0, jitter=False)
    assert [b.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert Backoff(base=3, factor=1, jitter=False).delay(50) == 3.0
    assert Backoff(base=1, factor=10, max=60, jitter=False).delay(10_000) == 60.0  # no overflow


def test_jitter_stays_between_half_and_all_of_the_delay():
    b = Backoff(base=4.0, factor=2.0, max=100.0, jitter=True)
    assert b.delay(2, rand=lambda: 0.0) == 4.0
    assert b.delay(2, rand=lambda: 0.999) == pytest.approx(7.996)
    with pytest.raises(InvalidInputError):
        b.delay(0)


@pytest.mark.parametrize("bad", [
    lambda: Backoff(base=-1), lambda: Backoff(factor=0.5), lambda: Backoff(max=float("nan")),
    lambda: Retry(0), lambda: Retry(2, delay=-1.0), lambda: Retry(True),
])
def test_bad_policies_are_refused(bad):
    with pytest.raises(InvalidInputError):
        bad()


def test_the_table_matches_the_most_specific_type_first():
    table = recovery_table({ArithmeticError: Retry(5, delay=0.5), "ZeroDivisionError": Fail(),
                            "Exception": Retry(2)})
    assert match(["ZeroDivisionError", "ArithmeticError", "Exception"], table) == Fail()
    assert match(["OverflowError", "ArithmeticError", "Exception"], table) == Retry(5, 0.5)
    assert match(["KeyError", "LookupError", "Exception"], table) == Retry(2)
    assert match(["SystemExit", "BaseException"], table) is None
    # A queue's table before the global one, for the same name; specificity first.
    queue = recovery_table({"Exception": Fail(notify=False)})
    assert match(["KeyError", "LookupError", "Exception"], queue, table) == Fail(notify=False)
    assert match(["OverflowError", "ArithmeticError", "Exception"], queue, table) == \
        Retry(5, 0.5)


def test_page_side_errors_match_by_their_class_hierarchy():
    names = type_names(RequestTimeoutError("late"))
    assert names[:3] == ["RequestTimeoutError", "WorkerBridgeError", "TimeoutError"]
    table = recovery_table({TimeoutError: Retry(4, delay=0)})
    assert match(names, table) == Retry(4, 0)


def test_bad_tables_are_refused():
    for bad in ({"not a name": Fail()}, {42: Fail()}, {"KeyError": "retry"}, ["KeyError"]):
        with pytest.raises(InvalidTypeError):
            recovery_table(bad)  # type: ignore[arg-type]


def test_decide_retries_by_rule_or_by_the_jobs_own_attempts():
    backoff = Backoff(base=1, factor=2, jitter=False)
    table = recovery_table({"ValueError": Retry(3, delay=Backoff(base=10, jitter=False)),
                            "PermissionError": Fail(notify=True)})
    # No rule: the job's own attempts and backoff.
    first = decide(1, 2, ["KeyError", "Exception"], backoff, table)
    assert (first.action, first.delay) == ("retry", 1.0)
    assert decide(2, 2, ["KeyError", "Exception"], backoff, table).action == "fail"
    # A Retry rule overrides the job's attempts (more, or fewer) and its delay.
    assert [(d.action, d.delay) for d in (decide(n, 1, ["ValueError"], backoff, table)
                                          for n in (1, 2, 3))] == \
        [("retry", 10.0), ("retry", 20.0), ("fail", 0.0)]
    # Fail ends it at once, attempts left unused, with the event it asked for.
    end = decide(1, 10, ["PermissionError", "OSError", "Exception"], backoff, table)
    assert (end.action, end.notify) == ("fail", True)
    assert "Fail" in end.reason
