"""Host tests of routing changes to subscriptions (workerbridge.jobs.routing)."""

from __future__ import annotations

import pytest

from workerbridge import InvalidFilterError, InvalidInputError, InvalidTypeError
from workerbridge.jobs.routing import (
    change_patterns,
    channel_key,
    check_pattern,
    route,
    subscription,
)

CHANGE = {"app": "myapp", "user": "ann", "model": "task", "id": "t1"}


def test_a_change_expands_into_the_scopes_that_can_match_it():
    assert [channel_key(p) for p in change_patterns(CHANGE)] == [
        "myapp/*/task/*", "myapp/ann/task/*", "myapp/*/task/t1", "myapp/ann/task/t1"]
    no_owner = {k: v for k, v in CHANGE.items() if k != "user"}
    assert [channel_key(p) for p in change_patterns(no_owner)] == [
        "myapp/*/task/*", "myapp/*/task/t1"]


def test_subscriptions_match_by_pattern_then_filter():
    subs = [
        subscription("all-tasks", {"app": "myapp", "model": "task"}),
        subscription("ann", {"app": "myapp", "user": "ann", "model": "task"}),
        subscription("bob", {"app": "myapp", "user": "bob", "model": "task"}),
        subscription("this-one", {"app": "myapp", "model": "task", "id": "t1"}),
        subscription("high", {"app": "myapp", "model": "task"},
                     {"priority": {"$eq": "high"}}),
        subscription("notes", {"app": "myapp", "model": "note"}),
        subscription("other-app", {"app": "theirs", "model": "task"}),
    ]
    low = route(CHANGE, {"id": "t1", "priority": "low"}, subs)
    assert low == {"all-tasks": ["myapp/*/task/*"], "ann": ["myapp/ann/task/*"],
                   "this-one": ["myapp/*/task/t1"]}
    high = route(CHANGE, {"id": "t1", "priority": "high"}, subs)
    assert set(high) == {"all-tasks", "ann", "this-one", "high"}
    # A deletion has no record to filter: only unfiltered subscriptions hear of it.
    assert set(route(CHANGE, None, subs)) == {"all-tasks", "ann", "this-one"}


@pytest.mark.parametrize("pattern, error", [
    ({"app": "a"}, InvalidInputError),                       # no model
    ({"app": "a", "model": "m", "room": "x"}, InvalidInputError),  # unknown key
    ({"app": "a/b", "model": "m"}, InvalidInputError),
    ({"app": "", "model": "m"}, InvalidInputError),
    ({"app": ["a"], "model": "m"}, InvalidTypeError),
    ("app/model", InvalidTypeError),
])
def test_bad_patterns_are_refused(pattern, error):
    with pytest.raises(error):
        check_pattern(pattern)


def test_bad_filters_are_refused():
    with pytest.raises(InvalidFilterError):
        subscription("s", {"app": "a", "model": "m"}, {"priority": {"$like": "x"}})
    with pytest.raises(InvalidFilterError):
        subscription("s", {"app": "a", "model": "m"}, "priority = high")
    with pytest.raises(InvalidInputError):
        change_patterns({"app": "a", "model": "m"})  # a change names its record
