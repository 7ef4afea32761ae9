"""Host tests of the writer stage's program: change events applied to storage by JSON
Patch (the real ``jsonpatch`` package), once per idempotency key, all or nothing."""

from __future__ import annotations

import copy

import pytest

from test_storage_programs import Memory
from workerbridge import ConstraintError, InvalidInputError, InvalidTypeError
from workerbridge.storage.changes import (
    KEEP_MS,
    PRUNE,
    STORE,
    check_event,
    json_patch,
    write_change,
)
from workerbridge.storage.plan import IndexSpec
from workerbridge.storage.txn import StoreInfo, Tx

SCHEMA = {
    "task": StoreInfo("task", "id", (IndexSpec("priority", ("priority",)),)),
    STORE: StoreInfo(STORE, "key", (IndexSpec("at", ("at",)),)),
}
CHANNEL = {"app": "todo", "model": "task", "id": "t1", "user": "ann"}


def event(kind, key, **more):
    return {"event": kind, "database": "todo", "version": 1, "channel": CHANNEL,
            "key": key, **more}


def write(mem, ev, default_key=None, reserved=frozenset(), now_ms=1000):
    change = check_event(ev, default_key)
    return mem.run(["task", STORE], write_change(Tx(SCHEMA), change, json_patch(), reserved,
                                                 now_ms))


def task(mem):
    (record,) = mem.data["task"].values()
    return record


@pytest.fixture
def mem():
    m = Memory(SCHEMA)
    write(m, event("model_created", "c1", data={"title": "a", "priority": "low",
                                                  "tags": ["x"]}))
    return m


def test_create_update_delete_publish_the_change_with_its_channels(mem):
    assert task(mem) == {"id": "t1", "title": "a", "priority": "low",
                                      "tags": ["x"]}
    patch = [{"op": "replace", "path": "/priority", "value": "high"},
             {"op": "add", "path": "/tags/-", "value": "y"},
             {"op": "remove", "path": "/title"}]
    out = write(mem, event("model_updated", "u1", patch=patch))
    assert task(mem) == {"id": "t1", "priority": "high", "tags": ["x", "y"]}
    assert out == {"event": "model_updated", "key": "u1", "channel": CHANNEL,
                   "record": {"id": "t1", "priority": "high", "tags": ["x", "y"]},
                   "patch": patch}
    out = write(mem, event("model_deleted", "d1"))
    assert not mem.data["task"] and out["record"] is None
    assert sorted(r["key"] for r in mem.data[STORE].values()) == ["c1", "d1", "u1"]


def test_a_rerun_with_the_same_key_is_a_no_op_returning_the_first_change(mem):
    patch = [{"op": "add", "path": "/tags/-", "value": "y"}]
    first = write(mem, event("model_updated", "u1", patch=patch))
    before = copy.deepcopy(mem.data)
    again = write(mem, event("model_updated", "u1", patch=patch))
    assert again == first and mem.data == before  # "y" appended once
    assert task(mem)["tags"] == ["x", "y"]
    # without a key of its own, the job's id is the key
    write(mem, event("model_updated", None, patch=patch) | {"key": None}, "job:7")
    write(mem, {k: v for k, v in event("model_updated", "", patch=patch).items()
                if k != "key"}, "job:7")
    assert task(mem)["tags"] == ["x", "y", "y"]


@pytest.mark.parametrize("patch, kind", [
    ([{"op": "replace", "path": "/missing/deep", "value": 1}], "JsonPointerException"),
    ([{"op": "test", "path": "/priority", "value": "high"}], "JsonPatchTestFailed"),
    ([{"op": "remove", "path": "/nothing"}], "JsonPatchPathNotFound"),
    ([{"op": "replace", "path": "/id", "value": "t2"}], "key"),
    ([{"op": "add", "path": "/_v", "value": 1}], "reserved"),
])
def test_a_patch_that_does_not_apply_changes_nothing(mem, patch, kind):
    before = copy.deepcopy(mem.data)
    with pytest.raises(InvalidInputError, match=kind) as caught:
        write(mem, event("model_updated", "bad", patch=patch), reserved=frozenset({"_v"}))
    assert "low" not in str(caught.value)  # no record value in the message
    assert mem.data == before


@pytest.mark.parametrize("ev, error, words", [
    ("nope", InvalidTypeError, "is a dict"),
    (event("model_moved", "k"), InvalidInputError, "one of"),
    (event("model_updated", "k", patch=[]), InvalidInputError, "non-empty list"),
    (event("model_updated", "k", patch=[{"op": "jump", "path": "/a"}]), InvalidInputError,
     "no valid 'op'"),
    (event("model_updated", "k", patch=[{"op": "add", "path": "a", "value": 1}]),
     InvalidInputError, "JSON Pointer"),
    (event("model_updated", "k", patch=[{"op": "add", "path": "/a"}]), InvalidInputError,
     "needs a 'value'"),
    (event("model_updated", "k", patch=[{"op": "move", "path": "/a"}]), InvalidInputError,
     "needs 'from'"),
    (event("model_created", "k", data={"a": 1}) | {"channel": {"app": "todo", "id": "1"}},
     InvalidInputError, "needs 'model'"),
    (event("model_created", "k", data={"a": 1}) | {"channel": {**CHANNEL, "zone": "eu"}},
     InvalidInputError, "no key 'zone'"),
    (event("model_created", "k", data={"a": 1}) | {"database": ""}, InvalidInputError,
     "database"),
    (event("model_created", "k" * 201, data={"a": 1}), InvalidInputError, "idempotency"),
])
def test_bad_events_are_refused_before_anything_runs(ev, error, words):
    with pytest.raises(error, match=words):
        check_event(ev, None)


def test_create_of_an_existing_record_or_update_of_a_missing_one_fails_whole(mem):
    before = copy.deepcopy(mem.data)
    with pytest.raises(ConstraintError):
        write(mem, event("model_created", "c2", data={"title": "b"}))
    with pytest.raises(InvalidInputError, match="no record"):
        write(mem, event("model_updated", "u9", patch=[{"op": "add", "path": "/a",
                                                         "value": 1}])
              | {"channel": {**CHANNEL, "id": "t9"}})
    assert mem.data == before


def test_marks_expire_after_a_week_a_few_at_a_time(mem):
    week = KEEP_MS
    for n in range(40):
        write(mem, event("model_updated", f"u{n}", patch=[
            {"op": "replace", "path": "/title", "value": str(n)}]), now_ms=2000 + n)
    assert len(mem.data[STORE]) == 41
    # A week on, each write removes at most PRUNE expired marks, the oldest first.
    write(mem, event("model_updated", "late", patch=[
        {"op": "replace", "path": "/title", "value": "late"}]), now_ms=week + 2100)
    keys = sorted(r["key"] for r in mem.data[STORE].values())
    assert "c1" not in keys and "u30" not in keys and "u31" in keys  # the oldest first
    assert len(keys) == 41 - PRUNE + 1
    write(mem, event("model_deleted", "end"), now_ms=week + 3000)
    assert sorted(r["key"] for r in mem.data[STORE].values()) == ["end", "late"]
