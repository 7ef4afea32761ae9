"""Host tests of the storage transaction programs and the queue that runs them.

``Memory`` is a small model of IndexedDB (stores, unique and multi-entry indexes, key
order, all-or-nothing transactions) that runs the programs' request batches the way
``_idb.run`` does, so the programs' logic is checked here in milliseconds; the browser
tests prove the same against real IndexedDB.
"""

from __future__ import annotations

import asyncio
import copy
import math

import pytest

from conftest import run
from workerbridge import ConstraintError, InvalidInputError, UnknownCollectionError
from workerbridge.storage.plan import BINARY_MIN, UNBOUNDED, IndexSpec, KeyRange, in_range
from workerbridge.storage.query import check_sort, get_path, key_of, validate_filter
from workerbridge.storage.schema import (
    check_database,
    check_key,
    check_op,
    normalize_schema,
    prepare_record,
)
from workerbridge.storage.serial import SerialQueue
from workerbridge.storage.txn import (
    Change,
    Final,
    Hooks,
    StoreInfo,
    Tx,
    bulk_delete,
    bulk_update,
    count,
    create,
    delete,
    get,
    hooked,
    read,
    run_ops,
    update,
)


def _key(wire):
    if isinstance(wire, dict) and "$k" in wire:
        return {"inf": math.inf, "-inf": -math.inf, "bin": BINARY_MIN}[wire["$k"]]
    if isinstance(wire, list):
        return [_key(w) for w in wire]
    return wire


def _range(wire):
    if wire is None:
        return None
    return KeyRange(_key(wire["lo"]) if "lo" in wire else UNBOUNDED,
                    _key(wire["hi"]) if "hi" in wire else UNBOUNDED,
                    wire.get("lo_open", False), wire.get("hi_open", False))


def index_keys(record, spec):
    paths = [f.split(".") for f in spec.fields]
    if len(paths) == 1:
        value = get_path(record, paths[0])
        if spec.multi_entry and isinstance(value, list):
            return list({key_of(v): v for v in value if key_of(v) is not None}.values())
        return [value] if key_of(value) is not None else []
    values = [get_path(record, p) for p in paths]
    return [values] if key_of(values) is not None else []


class Memory:
    """Stores of records keyed by key_of(primary key); transactions on a copy."""

    def __init__(self, schema):
        self.schema = schema
        self.data = {name: {} for name in schema}
        self.transactions = 0
        self.requests: list[list] = []

    def _check_unique(self, data, store, record):
        info = self.schema[store]
        pk = key_of(record[info.key])
        for spec in info.indexes:
            if not spec.unique:
                continue
            mine = {key_of(k) for k in index_keys(record, spec)}
            for other_pk, other in data[store].items():
                if other_pk != pk and mine & {key_of(k) for k in index_keys(other, spec)}:
                    raise ConstraintError("unique")

    def _execute(self, data, scope, r):
        self.requests.append(r)
        kind, store = r[0], r[1]
        assert store in scope, f"{store} is not in the transaction's scope"
        info = self.schema[store]
        rows = data[store]
        if kind in ("add", "put"):
            record = copy.deepcopy(r[2])
            pk = key_of(record[info.key])
            if kind == "add" and pk in rows:
                raise ConstraintError("key exists")
            self._check_unique(data, store, record)
            rows[pk] = record
            return None  # as the browser's runner: a write's result is never read
        if kind == "get":
            found = rows.get(key_of(r[2]))
            return copy.deepcopy(found)
        if kind == "del":
            rows.pop(key_of(r[2]), None)
            return None
        if kind == "delr":
            rng = _range(r[2])
            for pk in [pk for pk, rec in rows.items() if in_range(rec[info.key], rng)]:
                del rows[pk]
            return None
        if kind == "clear":
            rows.clear()
            return None
        entries = self._entries(info, rows, r[2], _range(r[3]))
        if kind == "count":
            return len(entries)
        if kind == "last":
            return copy.deepcopy(entries[-1][1]) if entries else None
        assert kind == "all"
        records = [copy.deepcopy(rec) for _, rec in entries]
        return records[:r[4]] if r[4] else records

    def _entries(self, info, rows, index, rng):
        out = []
        for pk, rec in rows.items():
            keys = [rec[info.key]] if index is None else index_keys(
                rec, next(s for s in info.indexes if s.name == index))
            out += [(key_of(k), pk, rec) for k in keys if rng is None or in_range(k, rng)]
        out.sort(key=lambda e: (e[0], e[1]))
        return [(k, rec) for k, _, rec in out]

    def run(self, stores, program):
        """One transaction, like _idb.run: all or nothing; (result, requests made)."""
        self.transactions += 1
        work = copy.deepcopy(self.data)
        try:
            batch = next(program)
        except StopIteration as stop:
            return stop.value
        single = isinstance(batch, Final)
        while True:
            results = [self._execute(work, stores, r) for r in batch]
            if single:
                self.data = work
                try:
                    program.send(results)
                except StopIteration as stop:
                    return stop.value
                raise AssertionError("a program asked for a batch after its final one")
            try:
                batch = program.send(results)
            except StopIteration as stop:
                self.data = work
                return stop.value


SCHEMA = {
    "users": StoreInfo("users", "id", (
        IndexSpec("age", ("age",)),
        IndexSpec("email", ("email",), unique=True),
        IndexSpec("tags", ("tags",), multi_entry=True),
    )),
    "notes": StoreInfo("notes", "id"),
    "_audit": StoreInfo("_audit", "seq"),
}


@pytest.fixture
def mem():
    m = Memory(SCHEMA)
    m.run(["users"], create(Tx(SCHEMA), [
        ("users", {"id": i, "age": 20 + i, "email": f"u{i}@x", "tags": [f"t{i % 3}", "all"]})
        for i in range(10)]))
    return m


def tx(hooks=None):
    return Tx(SCHEMA, hooks)


def test_create_gives_uuid_keys_and_refuses_lists_in_plain_indexes(mem):
    out = mem.run(["notes"], create(tx(), [("notes", {"text": "a"}), ("notes", {"id": 5})]))
    assert len(out[0]["id"]) == 36 and out[1] == {"id": 5}
    with pytest.raises(InvalidInputError, match="not multi-entry"):
        mem.run(["users"], create(tx(), [("users", {"id": 99, "age": [1, 2]})]))
    assert 99 not in mem.data["users"]


def test_duplicate_key_or_unique_value_writes_nothing(mem):
    before = copy.deepcopy(mem.data)
    for items in ([("users", {"id": 50}), ("users", {"id": 3})],
                  [("users", {"id": 51, "email": "u1@x"})]):
        with pytest.raises(ConstraintError):
            mem.run(["users"], create(tx(), items))
    assert mem.data == before


def test_get_read_count(mem):
    assert mem.run(["users"], get(tx(), [("users", 3), ("users", 77)])) == \
        [mem.data["users"][(1, 3)], None]
    node = validate_filter({"tags": "t1", "age": {"$lt": 28}})
    got = mem.run(["users"], read(tx(), "users", node))
    assert [r["id"] for r in got] == [1, 4, 7]
    got = mem.run(["users"], read(tx(), "users", validate_filter({}), check_sort("age"), 2, 1))
    assert [r["id"] for r in got] == [1, 2]
    desc = mem.run(["users"], read(tx(), "users", validate_filter({"age": {"$gte": 25}}),
                                   check_sort(("age", "desc")), 3))
    assert [r["id"] for r in desc] == [9, 8, 7]
    assert mem.run(["users"], count(tx(), "users", validate_filter({"tags": "all"}))) == 10
    assert mem.run(["users"], count(tx(), "users", validate_filter({"age": {"$gt": 25}}))) == 4
    assert mem.run(["users"], count(tx(), "users", validate_filter(None))) == 10


def test_read_with_limit_asks_indexeddb_for_that_many_only(mem):
    mem.requests.clear()
    mem.run(["users"], read(tx(), "users", validate_filter({}), (), 3, 2))
    assert mem.requests == [["all", "users", None, None, 5]]


def test_update_merges_and_cannot_change_the_key(mem):
    n = mem.run(["users"], update(tx(), "users", validate_filter({"tags": "t0"}), {"vip": True}))
    assert n == 4
    assert mem.data["users"][(1, 3)] == {"id": 3, "age": 23, "email": "u3@x",
                                         "tags": ["t0", "all"], "vip": True}
    with pytest.raises(InvalidInputError, match="key"):
        mem.run(["users"], update(tx(), "users", validate_filter({}), {"id": 1}))
    with pytest.raises(ConstraintError):
        mem.run(["users"], update(tx(), "users", validate_filter({"id": 1}), {"email": "u2@x"}))
    assert mem.data["users"][(1, 1)]["email"] == "u1@x"


def test_delete_by_key_range_without_reading_and_by_filter(mem):
    mem.requests.clear()
    assert mem.run(["users"], delete(tx(), "users", validate_filter({"id": {"$gte": 8}}))) == 2
    assert [r[0] for r in mem.requests] == ["count", "delr"]
    assert mem.run(["users"], delete(tx(), "users", validate_filter({"age": {"$lt": 22}}))) == 2
    assert mem.run(["users"], delete(tx(), "users", validate_filter({"nope": 1}))) == 0
    assert sorted(k[1] for k in mem.data["users"]) == [2, 3, 4, 5, 6, 7]
    assert mem.run(["users"], delete(tx(), "users", validate_filter({}))) == 6
    assert mem.data["users"] == {}


def test_bulk_update_and_delete(mem):
    n = mem.run(["users"], bulk_update(tx(), "users", [
        {"id": 1, "age": 1}, {"id": 1, "x": 2}, {"id": 404, "age": 0}]))
    assert n == 1 and mem.data["users"][(1, 1)]["age"] == 1 and mem.data["users"][(1, 1)]["x"] == 2
    assert mem.run(["users"], bulk_delete(tx(), "users", [1, 2, 2, 404])) == 2


def test_run_ops_is_one_transaction_and_rolls_back_whole(mem):
    ops = [
        {"op": "create", "collection": "notes", "data": {"id": "n"}},
        {"op": "update", "collection": "users", "filter": {"age": {"$gte": 28}}, "data": {"a": 1}},
        {"op": "get", "collection": "notes", "id": "n"},
        {"op": "read", "collection": "users", "filter": {"a": 1}},
        {"op": "count", "collection": "notes"},
        {"op": "delete", "collection": "users", "filter": {"a": 1}},
    ]
    out = mem.run(["notes", "users"], run_ops(tx(), ops))
    assert out[0] == {"id": "n"} and out[1] == 2 and out[2] == {"id": "n"}
    assert [r["id"] for r in out[3]] == [8, 9] and out[4] == 1 and out[5] == 2
    before = copy.deepcopy(mem.data)
    with pytest.raises(ConstraintError):
        mem.run(["notes", "users"], run_ops(tx(), [
            {"op": "delete", "collection": "users", "filter": {}},
            {"op": "create", "collection": "notes", "data": {"id": "n"}}]))
    assert mem.data == before


def test_unknown_and_internal_collections_are_refused(mem):
    for name in ("ghosts", "_audit"):
        with pytest.raises(UnknownCollectionError):
            mem.run([name], read(tx(), name))


class Audit(Hooks):
    """What an audit log will do: read the chain's head first, write one record per
    change in the same transaction."""

    def __init__(self):
        self.heads, self.committed_changes = [], []

    def scope(self, collections):
        return ["_audit"]

    def begin(self):
        return [["last", "_audit", None, None]]

    def started(self, results):
        self.seq = results[0]["seq"] if results[0] else 0
        self.heads.append(self.seq)

    def on_write(self, change: Change):
        self.seq += 1
        return [["add", "_audit", {"seq": self.seq, "op": change.op, "key": change.key}]]

    def merge(self, collection, stored, patch):
        return {**stored, **patch, "rev": stored.get("rev", 0) + 1}

    def committed(self, database, changes):
        self.committed_changes.append([(c.op, c.key) for c in changes])


def test_hooks_write_in_the_same_transaction_and_roll_back_with_it(mem):
    audit = Audit()
    scope = ["users", "_audit"]
    t = tx(audit)
    mem.run(scope, hooked(t, update(t, "users", validate_filter({"id": {"$in": [1, 2]}}),
                                    {"v": 1})))
    audit.committed(None, t.changes)
    assert [r["op"] for r in mem.data["_audit"].values()] == ["update", "update"]
    assert mem.data["users"][(1, 1)]["rev"] == 1  # the merge hook decided the record
    t = tx(audit)
    with pytest.raises(ConstraintError):
        mem.run(scope, hooked(t, run_ops(t, [
            {"op": "delete", "collection": "users", "filter": {"id": 5}},
            {"op": "create", "collection": "users", "data": {"id": 1}}])))
    assert len(mem.data["_audit"]) == 2 and (1, 5) in mem.data["users"]
    t = tx(audit)
    mem.run(scope, hooked(t, bulk_delete(t, "users", [5, 6])))
    assert [r["op"] for r in mem.data["_audit"].values()][-2:] == ["delete", "delete"]
    assert audit.heads == [0, 2, 2]


def test_a_hook_can_refuse_a_filter(mem):
    class NoSecrets(Hooks):
        def check_filter(self, collection, node):
            if "secret" in str(node):
                raise InvalidInputError("secret is encrypted")

    with pytest.raises(InvalidInputError, match="encrypted"):
        mem.run(["users"], read(tx(NoSecrets()), "users", validate_filter({"secret": 1})))


# --- the queue --------------------------------------------------------------------------------


def test_queue_groups_runs_in_order_and_fails_only_the_bad_record():
    async def scenario():
        log = []

        async def creates(items):
            await asyncio.sleep(0)
            log.append(("tx", list(items)))
            if "bad" in items:
                raise ConstraintError("duplicate")
            return [f"ok:{i}" for i in items]

        queue = SerialQueue({"create": creates})

        async def other():
            log.append(("other",))
            return "other"

        names = ["r0", "r1", "r2", "bad", "r3", "r4", "r5"]
        futures = [queue.submit("create", name) for name in names]
        futures.append(queue.submit("other", other))
        futures.append(queue.submit("create", "late"))
        results = await asyncio.gather(*futures, return_exceptions=True)
        return log, results, queue.transactions

    log, results, transactions = run(scenario())
    assert [type(r).__name__ if isinstance(r, Exception) else r for r in results] == [
        "ok:r0", "ok:r1", "ok:r2", "ConstraintError", "ok:r3", "ok:r4", "ok:r5", "other",
        "ok:late"]
    first = log[0]
    assert first == ("tx", ["r0", "r1", "r2", "bad", "r3", "r4", "r5"])  # one group
    # halves until "bad" is alone; then "other", then "late", in arrival order
    assert log[-2:] == [("other",), ("tx", ["late"])]
    singles = [entry for entry in log if entry[0] == "tx" and entry[1] == ["bad"]]
    assert len(singles) == 1 and transactions <= 10


def test_queue_skips_jobs_whose_caller_gave_up():
    async def scenario():
        ran = []

        async def job(tag):
            ran.append(tag)
            return tag

        queue = SerialQueue({})
        first = queue.submit("other", lambda: job("a"))
        dropped = queue.submit("other", lambda: job("b"))
        dropped.cancel()
        last = queue.submit("other", lambda: job("c"))
        return await first, await last, ran

    assert run(scenario()) == ("a", "c", ["a", "c"])


# --- schema and argument checks (the page and the worker run the same ones) --------------------


def test_normalize_schema_forms():
    out = normalize_schema({
        "users": {"key": "uid", "indexes": {
            "age": "age", "email": {"fields": "email", "unique": True},
            "tags": {"fields": "tags", "multi_entry": True}, "name": ["last", "first"],
            "city": "address.city"}},
        "notes": None,
        "logs": {"indexes": ["level", ["day", "hour"]]},
    })
    assert out["stores"]["users"] == {"key": "uid", "indexes": {
        "age": {"path": "age", "unique": False, "multi": False},
        "email": {"path": "email", "unique": True, "multi": False},
        "tags": {"path": "tags", "unique": False, "multi": True},
        "name": {"path": ["last", "first"], "unique": False, "multi": False},
        "city": {"path": "address.city", "unique": False, "multi": False}}}
    assert out["stores"]["notes"] == {"key": "id", "indexes": {}}
    assert set(out["stores"]["logs"]["indexes"]) == {"level", "day+hour"}


@pytest.mark.parametrize("collections, fragment", [
    ({}, "non-empty dict"),
    ([], "non-empty dict"),
    ({"_audit": {}}, "reserved"),
    ({"": {}}, "non-empty"),
    ({"a": {"keys": "id"}}, "unknown option"),
    ({"a": {"key": "a.b"}}, "identifier"),
    ({"a": {"indexes": {"i": "first name"}}}, "identifiers"),
    ({"a": {"indexes": {"i": "name.length"}}}, ".length"),
    ({"a": {"indexes": {"i": ["x"]}}}, "two or more"),
    ({"a": {"indexes": {"i": {"fields": ["x", "y"], "multi_entry": True}}}}, "compound"),
    ({"a": {"indexes": {"i": {"fields": "x", "unique": "yes"}}}}, "bool"),
    ({"a": {"indexes": {"i": {"field": "x"}}}}, "unknown option"),
    ({"a": 5}, "must be a dict"),
])
def test_normalize_schema_refuses(collections, fragment):
    with pytest.raises(InvalidInputError) as info:
        normalize_schema(collections)
    assert fragment in str(info.value)


def test_keys_records_and_databases():
    for good in ("", "k", 0, -1.5, 2**53 - 1):
        assert check_key(good) == good
    for bad in (True, None, [1], {"a": 1}, float("nan"), float("inf"), 2**53, b"x"):
        with pytest.raises(InvalidInputError):
            check_key(bad)
    record = prepare_record({"a": (1, 2)}, "id")
    assert list(record) == ["id", "a"] and record["a"] == [1, 2]
    assert prepare_record({"uid": 3}, "uid") == {"uid": 3}
    with pytest.raises(InvalidInputError, match=r"\$"):
        prepare_record({"a": [{"$b": 1}]}, "id")
    assert check_database("db", 3) == ("db", 3)
    for name, version in (("", 1), ("db", 0), ("db", True), ("db", 1.5), (5, 1)):
        with pytest.raises(InvalidInputError):
            check_database(name, version)


def test_check_op():
    keys = {"users": "id"}
    made = check_op({"op": "create", "collection": "users", "data": {"a": 1}}, keys)
    assert len(made["data"]["id"]) == 36
    assert check_op({"op": "read", "collection": "users", "filter": {"a": 1}, "limit": 2},
                    keys) == {"op": "read", "collection": "users", "filter": {"a": 1},
                              "sort": None, "limit": 2, "offset": 0}
    # The seed's spelling, "type", names the operation as well.
    assert check_op({"type": "count", "collection": "users", "filter": None}, keys) == \
        {"op": "count", "collection": "users", "filter": None}
    assert check_op({"type": "get", "op": "get", "collection": "users", "id": 3},
                    keys) == {"op": "get", "collection": "users", "id": 3}
    for bad, cls in (({"op": "drop", "collection": "users"}, InvalidInputError),
                     ({"type": "drop", "collection": "users"}, InvalidInputError),
                     ({"op": "get", "type": "count", "collection": "users", "id": 1},
                      InvalidInputError),
                     ({"op": "get", "collection": "ghosts", "id": 1}, UnknownCollectionError),
                     ({"op": "update", "collection": "users", "filter": {"$x": 1}, "data": {}},
                      InvalidInputError),
                     ({"op": "get", "collection": "users", "id": None}, InvalidInputError),
                     ("create", InvalidInputError)):
        with pytest.raises(cls):
            check_op(bad, keys)
