"""WorkerBridge.storage in real Chromium: IndexedDB in a real worker, two real tabs.

Every test uses a database of its own (a fresh uuid name). Expected results are
computed on the page with plain Python over the same records, never by the code under
test; raw IndexedDB is read with plain JS where a test needs an independent view.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conftest import PAGE_HELPERS, Harness

SETUP = """
import asyncio, json, os, random, time, uuid
import js
import workerbridge
from workerbridge import WorkerBridge
S = WorkerBridge.storage
B = WorkerBridge.default()

USERS = {"users": {"indexes": {
    "age": "age",
    "email": {"fields": "email", "unique": True},
    "tags": {"fields": "tags", "multi_entry": True},
    "name": ["last", "first"],
}}, "notes": {}}

async def fresh(collections=USERS, version=1, s=None):
    name = "t-" + uuid.uuid4().hex
    await (s or S).define(name, version, collections)
    return name

async def tx_count(name):
    return (await B.request("storage", "stats", {}))[name]["transactions"]

def raw_count_js():
    return js.Function.new("db", "store", '''
        return new Promise((res, rej) => {
          const r = indexedDB.open(db);
          r.onsuccess = () => { const d = r.result;
            const q = d.transaction(store).objectStore(store).count();
            q.onsuccess = () => { d.close(); res(q.result); }; q.onerror = () => rej(q.error); };
          r.onerror = () => rej(r.error);
        });''')

raw_count = raw_count_js()

""" + PAGE_HELPERS


@pytest.fixture(scope="module")
def st(harness: Harness) -> Harness:
    harness.py(SETUP)
    return harness


@pytest.fixture(scope="module")
def other(harness: Harness) -> Iterator[Harness]:
    """A second tab of the same origin, in the same browser context."""
    page = harness.page.context.new_page()
    second = Harness(page, harness.origin)
    second.py(SETUP)
    yield second
    page.close()


def test_crud_round_trip(st: Harness):
    out = st.py("""
        name = await fresh()
        a = await S.create("users", {"first": "Ada", "last": "Lovelace", "age": 36,
                                     "email": "ada@x", "tags": ["math", "poet"]})
        b = await S.create("users", {"id": "b", "first": "Alan", "last": "Turing", "age": 41,
                                     "email": "alan@x", "tags": ["math"]})
        got = await S.get("users", a["id"])
        missing = await S.get("users", "nope")
        n_update = await S.update("users", {"tags": "math"}, {"seen": True})
        after = await S.get("users", "b")
        n_count = await S.count("users")
        n_delete = await S.delete("users", {"age": {"$lt": 40}})
        left = await S.read("users")
        [str(uuid.UUID(a["id"], version=4)) == a["id"], got == a, missing, n_update, after,
         n_count, n_delete, left]
    """)
    is_uuid, same, missing, n_update, after, n_count, n_delete, left = out
    assert is_uuid and same and missing is None
    assert n_update == 2
    assert after == {"id": "b", "first": "Alan", "last": "Turing", "age": 41, "email": "alan@x",
                     "tags": ["math"], "seen": True}
    assert n_count == 2 and n_delete == 1 and left == [after]


def test_values_round_trip_unchanged(st: Harness):
    out = st.py("""
        await fresh({"docs": {}})
        doc = {"id": 7, "s": "héllo \\U0001F600", "f": 1.5, "big": 2**53 - 1, "neg": -3,
               "none": None, "t": True, "list": [1, "two", [3.0], {"x": None}],
               "nested": {"a": {"b": {"c": [b"\\x00\\xff"]}}}, "bin": os.urandom(33)}
        await S.create("docs", doc)
        back = await S.get("docs", 7)
        [back == doc, type(back["bin"]).__name__, back["bin"] == doc["bin"]]
    """)
    assert out == [True, "bytes", True]


def test_read_filters_sort_limit_offset_match_plain_python(st: Harness):
    out = st.py("""
        await fresh()
        rng = random.Random(7)
        rows = [{"id": i, "first": rng.choice("ABCDE"), "last": rng.choice(["X", "Y", "Z"]),
                 "age": rng.randint(1, 90), "email": f"u{i}@x",
                 "tags": rng.sample(["a", "b", "c", "d"], rng.randint(0, 3)),
                 "score": rng.choice([None, 1.5, 2, "n/a"])} for i in range(120)]
        await S.bulk_create("users", rows)
        cases = [
            ({"age": {"$gte": 30, "$lt": 60}}, None, lambda r: 30 <= r["age"] < 60),
            ({"tags": "b"}, None, lambda r: "b" in r["tags"]),
            ({"tags": {"$in": ["a", "d"]}, "age": {"$ne": 5}}, None,
             lambda r: ("a" in r["tags"] or "d" in r["tags"]) and r["age"] != 5),
            ({"last": "Y", "first": {"$in": ["A", "B"]}}, None,
             lambda r: r["last"] == "Y" and r["first"] in "AB"),
            ({"$or": [{"age": {"$lt": 10}}, {"score": None}]}, None,
             lambda r: r["age"] < 10 or r["score"] is None),
            ({"score": {"$gt": 1}}, None, lambda r: type(r["score"]) in (int, float) and r["score"] > 1),
            ({"nope": {"$exists": False}}, None, lambda r: True),
            ({"email": "u17@x"}, None, lambda r: r["id"] == 17),
        ]
        results = []
        for flt, _, pred in cases:
            got = await S.read("users", flt)
            results.append([r["id"] for r in got] == [r["id"] for r in rows if pred(r)])
        page = await S.read("users", {"age": {"$gt": 20}}, sort=[("last", "desc"), "age"],
                            limit=10, offset=5)
        expect = sorted([r for r in rows if r["age"] > 20], key=lambda r: r["age"])
        expect = sorted(expect, key=lambda r: r["last"], reverse=True)[5:15]
        results.append(page == expect)
        results.append(await S.count("users", {"tags": "c"}) == sum("c" in r["tags"] for r in rows))
        results.append([r["id"] for r in await S.read("users", limit=3, offset=2)] == [2, 3, 4])
        results
    """)
    assert out == [True] * len(out) and len(out) == 11


def test_indexed_queries_touch_fewer_records(st: Harness):
    out = st.py("""
        await fresh()
        await S.bulk_create("users", [{"id": i, "age": i % 100, "email": f"u{i}@x",
                                       "first": "F" + str(i % 3), "last": "L" + str(i % 7),
                                       "tags": [f"t{i % 10}", "all"]} for i in range(1000)])
        out = {}
        for label, flt in [("age", {"age": 42}), ("range", {"age": {"$gte": 95}}),
                           ("unique", {"email": "u5@x"}), ("multi", {"tags": "t3"}),
                           ("compound", {"last": "L2", "first": "F1"}), ("key", {"id": {"$in": [3, 4]}}),
                           ("none", {"nope": 1})]:
            out[label] = await S.explain("users", flt)
        out
    """)
    assert out["age"]["index"] == "age" and out["age"]["scanned"] == 10 == out["age"]["matched"]
    assert out["range"]["index"] == "age" and out["range"]["scanned"] == 50
    assert out["unique"]["index"] == "email" and out["unique"]["scanned"] == 1
    assert out["multi"]["index"] == "tags" and out["multi"]["scanned"] == 100
    assert out["compound"]["index"] == "name"
    expected = sum(1 for i in range(1000) if i % 3 == 1 and i % 7 == 2)
    assert out["compound"]["scanned"] == out["compound"]["matched"] == expected
    assert out["key"]["index"] is None and out["key"]["scanned"] == 2
    assert out["none"]["index"] is None and out["none"]["scanned"] == 1000
    assert out["none"]["matched"] == 0 and out["none"]["residual"] == {"nope": {"$eq": 1}}


def test_index_scans_agree_with_full_scans_on_utf16_order(st: Harness):
    # IndexedDB orders strings by UTF-16 code units: U+10000 sorts before U+FFFF there.
    out = st.py("""
        await fresh({"w": {"indexes": ["s"]}})
        words = ["a", "\\uffff", "\\U00010000", "\\ue000", "z", "\\U0010ffff", "é", ""]
        await S.bulk_create("w", [{"id": i, "s": w, "copy": w} for i, w in enumerate(words)])
        res = []
        for bound in ["\\uffff", "\\U00010000", "\\ue000", "a"]:
            for op in ["$lt", "$gte"]:
                by_index = [r["id"] for r in await S.read("w", {"s": {op: bound}})]
                by_scan = [r["id"] for r in await S.read("w", {"copy": {op: bound}})]
                res.append(by_index == by_scan)
        ordered = [r["s"] for r in await S.read("w", sort="s")]
        res + [ordered == sorted(words, key=lambda w: w.encode("utf-16-be"))]
    """)
    assert out == [True] * 9


def test_id_collision_and_unique_index_write_nothing(st: Harness):
    out = st.py("""
        name = await fresh()
        await S.create("users", {"id": "x", "email": "e@x"})
        dup = await failure(S.create("users", {"id": "x", "email": "other@x"}))
        uniq = await failure(S.create("users", {"email": "e@x"}))
        bulk = await failure(S.bulk_create("users", [{"id": "y"}, {"id": "z"}, {"id": "x"}]))
        upd = await failure(S.update("users", {"id": "y"}, {"email": "e@x"}))
        [dup[0], uniq[0], bulk[0], upd, await S.count("users"), await raw_count(name, "users"),
         await S.get("users", "x")]
    """)
    assert out[:3] == ["ConstraintError"] * 3
    assert out[3] is None  # "y" was never written: nothing matched, nothing updated
    assert out[4] == 1 == out[5]
    assert out[6] == {"id": "x", "email": "e@x"}


def test_bad_input_is_typed_and_the_worker_keeps_serving(st: Harness):
    out = st.py("""
        name = await fresh()
        sent_before = B.stats().processed
        page_side = [
            await failure(S.create("nope", {})),
            await failure(S.read("users", {"age": {"$regex": "x"}})),
            await failure(S.read("users", {"$where": "1"})),
            await failure(S.create("users", {"s": {1, 2}})),
            await failure(S.create("users", {"f": lambda: 1})),
            await failure(S.create("users", {"n": float("nan")})),
            await failure(S.create("users", {"id": True})),
            await failure(S.create("users", {"$x": 1})),
            await failure(S.create("users", "not a dict")),
            await failure(S.read("users", sort=[("age", "sideways")])),
            await failure(S.read("users", limit=-1)),
            await failure(S.delete("users", None)),
            await failure(S.transaction([{"op": "drop", "collection": "users"}])),
        ]
        sent_after_page = B.stats().processed
        worker_side = [
            await failure(B.request("storage", "read", {"db": name, "v": 1, "collection": "users",
                                                        "filter": {"a": {"$bad": 1}}})),
            await failure(B.request("storage", "read", {"db": name, "v": 1, "collection": "ghosts"})),
            await failure(S.create("users", {"age": [1, 2]})),  # a list in a plain index
        ]
        [[p[0] for p in page_side], sent_after_page - sent_before, [w[0] for w in worker_side],
         await S.count("users"), await S.create("users", {"id": 1}) == {"id": 1}]
    """)
    page_side, sent, worker_side, count, serving = out
    assert page_side == ["UnknownCollectionError", "InvalidFilterError", "InvalidFilterError",
                         "InvalidInputError", "InvalidInputError", "InvalidInputError",
                         "InvalidInputError", "InvalidInputError", "InvalidTypeError",
                         "InvalidInputError", "InvalidInputError", "InvalidInputError",
                         "InvalidInputError"]
    assert sent == 0, "bad input reached the worker"
    assert worker_side == ["InvalidFilterError", "UnknownCollectionError", "InvalidInputError"]
    assert count == 0 and serving


def test_transaction_is_all_or_nothing(st: Harness):
    out = st.py("""
        name = await fresh()
        await S.create("users", {"id": "keep", "age": 1})
        ok = await S.transaction([
            {"op": "create", "collection": "users", "data": {"id": "a", "age": 10}},
            {"op": "create", "collection": "notes", "data": {"id": "n1", "text": "hi"}},
            {"op": "update", "collection": "users", "filter": {"age": {"$gte": 10}}, "data": {"v": 2}},
            {"op": "get", "collection": "users", "id": "a"},
            {"op": "read", "collection": "users", "filter": {}, "sort": ("age", "desc")},
            {"op": "count", "collection": "notes"},
            {"op": "delete", "collection": "users", "filter": {"id": "keep"}},
        ])
        before = [await S.count("users"), await S.count("notes")]
        failed = await failure(S.transaction([
            {"op": "create", "collection": "notes", "data": {"id": "n2"}},
            {"op": "update", "collection": "users", "filter": {"id": "a"}, "data": {"v": 3}},
            {"op": "delete", "collection": "notes", "filter": {"id": "n1"}},
            {"op": "create", "collection": "users", "data": {"id": "a"}},  # collides
        ]))
        after = [await S.count("users"), await S.count("notes"), await S.get("users", "a"),
                 await S.get("notes", "n1")]
        [ok, before, failed[0], after]
    """)
    ok, before, failed, after = out
    assert ok[0] == {"id": "a", "age": 10} and ok[1] == {"id": "n1", "text": "hi"}
    assert ok[2] == 1 and ok[3] == {"id": "a", "age": 10, "v": 2}
    assert ok[4] == [{"id": "a", "age": 10, "v": 2}, {"id": "keep", "age": 1}]
    assert ok[5] == 1 and ok[6] == 1
    assert before == [1, 1]
    assert failed == "ConstraintError"
    assert after == [1, 1, {"id": "a", "age": 10, "v": 2}, {"id": "n1", "text": "hi"}]


def test_awaiting_inside_a_raw_transaction_fails_but_ours_never_does(st: Harness):
    out = st.py("""
        # The classic failure, in this very Pyodide: a Python await between two requests
        # of one IndexedDB transaction ends it.
        open_raw = js.Function.new("n", '''return new Promise((res, rej) => {
            const r = indexedDB.open(n, 1);
            r.onupgradeneeded = () => r.result.createObjectStore("s", {keyPath: "id"});
            r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });''')
        raw = await open_raw("raw-" + uuid.uuid4().hex)
        tx = raw.transaction("s", "readwrite")
        store = tx.objectStore("s")
        store.put(js.JSON.parse('{"id": 1}'))
        await asyncio.sleep(0)
        try:
            store.put(js.JSON.parse('{"id": 2}'))
            classic = "no error"
        except Exception as exc:
            classic = exc.name if hasattr(exc, "name") else type(exc).__name__
        raw.close()

        # Ours: 40 operations, each update/delete/read calling Python back inside the
        # transaction to match, merge and sort, in one transaction.
        name = await fresh()
        await S.bulk_create("users", [{"id": i, "age": i} for i in range(20)])
        ops = []
        for i in range(20):
            ops.append({"op": "update", "collection": "users", "filter": {"age": {"$gte": i}},
                        "data": {"step": i}})
            ops.append({"op": "read", "collection": "users", "filter": {"step": i}})
        results = await S.transaction(ops)
        final = await S.read("users")
        [classic, [results[2 * i] for i in range(20)], [len(results[2 * i + 1]) for i in range(20)],
         [r["step"] for r in final]]
    """)
    classic, updated, read_sizes, steps = out
    assert classic == "TransactionInactiveError"
    assert updated == [20 - i for i in range(20)]
    assert read_sizes == [20 - i for i in range(20)]  # seen inside the transaction
    assert steps == list(range(20))


def test_bulk_operations_are_one_transaction_each(st: Harness):
    out = st.py("""
        name = await fresh()
        t0 = await tx_count(name)
        made = await S.bulk_create("users", [{"age": i} for i in range(500)])
        t1 = await tx_count(name)
        ids = [r["id"] for r in made]
        n_up = await S.bulk_update("users", [{"id": ids[i], "age": -i} for i in range(100)]
                                   + [{"id": "missing", "age": 0}])
        t2 = await tx_count(name)
        n_del = await S.bulk_delete("users", ids[:50] + ["missing"])
        t3 = await tx_count(name)
        first = await S.get("users", ids[60])
        [t1 - t0, t2 - t1, t3 - t2, n_up, n_del, await S.count("users"), first["age"]]
    """)
    assert out == [1, 1, 1, 100, 50, 450, -60]


def test_concurrent_creates_share_transactions_and_fail_alone(st: Harness):
    out = st.py("""
        name = await fresh()
        await S.create("users", {"id": "taken"})
        t0 = await tx_count(name)
        calls = [S.create("users", {"id": f"r{i}", "age": i}) for i in range(300)]
        calls.insert(150, S.create("users", {"id": "taken"}))
        results = await asyncio.gather(*calls, return_exceptions=True)
        t1 = await tx_count(name)
        errors = [type(r).__name__ for r in results if isinstance(r, Exception)]
        got = await asyncio.gather(*[S.get("users", f"r{i}") for i in range(300)])
        t2 = await tx_count(name)
        [errors, t1 - t0, await S.count("users"), all(g["age"] == i for i, g in enumerate(got)),
         t2 - t1]
    """)
    errors, create_txs, count, all_found, get_txs = out
    assert errors == ["ConstraintError"]
    assert count == 301 and all_found
    # 301 creates in a few groups; the group holding the bad one retried in halves.
    assert create_txs <= 30 and get_txs <= 5


def test_calls_of_one_turn_to_an_idle_worker_take_two_transactions(st: Harness):
    # The first call leaves at once (nothing is on its way: no reason to wait); the
    # others made in the same turn follow in one message, all queued in the worker before
    # the first of them runs, so they share one transaction.
    out = st.py("""
        name = await fresh()
        t0 = await tx_count(name)
        await asyncio.gather(*[S.create("users", {"age": i}) for i in range(50)])
        t1 = await tx_count(name)
        # One message of 50 creates to an idle worker: one transaction.
        ops = [["create", S._s.stamp({"collection": "users", "data": {"id": f"b{i}"}})]
               for i in range(50)]
        outcomes = await B.request("storage", "batch", {"ops": ops})
        [t1 - t0, await tx_count(name) - t1, [o[0] for o in outcomes] == [1] * 50,
         await S.count("users")]
    """)
    assert out == [2, 1, True, 100]


def test_events_and_metrics(st: Harness):
    out = st.py("""
        B2 = WorkerBridge(workers=2)
        S2 = B2.storage  # storage gets a one-worker pool of its own
        seen = []
        async def later(detail):
            await asyncio.sleep(0)
            seen.append(("async", detail["operation"]))
        stop = S2.on("operation-completed", lambda d: seen.append(("ok", d["operation"], d["collection"])))
        S2.on("operation-completed", later)
        S2.on("operation-failed", lambda d: seen.append(("failed", d["operation"], d["error"])))
        S2.on("conflict-resolved", lambda d: seen.append(("conflict", d)))
        S2.on("operation-failed", lambda d: 1 / 0)  # a broken listener is logged, not raised
        await fresh(s=S2)
        await S2.create("users", {"id": 1})
        await failure(S2.create("users", {"id": 1}))
        await failure(S2.read("users", {"a": {"$nope": 1}}))
        stop()
        await S2.get("users", 1)
        S2.emit("conflict-resolved", {"collection": "users", "id": 1})
        await asyncio.sleep(0.05)
        try:
            S2.on("nope", print)
            bad = None
        except workerbridge.InvalidInputError:
            bad = "InvalidInputError"
        m = S2.get_operation_metrics()
        from workerbridge.storage.calls import state_of
        own = state_of(B2).pool
        await B2.close()  # closes storage's own worker too
        [seen, bad, {k: v for k, v in m.items() if k != "by_operation"}, m["by_operation"]["create"],
         m["by_operation"]["get"]["total"], own is not B2.pool and own._closed]
    """)
    seen, bad, metrics, create, gets, own_closed = out
    assert own_closed
    assert ["ok", "define", None] in seen and ["ok", "create", "users"] in seen
    assert ["failed", "create", "ConstraintError"] in seen
    assert ["failed", "read", "InvalidFilterError"] in seen
    assert ["conflict", {"collection": "users", "id": 1}] in seen
    assert ["async", "create"] in seen
    assert not any(s[0] == "ok" and s[1] == "get" for s in seen), "unsubscribed listener called"
    assert bad == "InvalidInputError"
    assert metrics["total"] == 5 and metrics["succeeded"] == 3 and metrics["failed"] == 2
    assert metrics["success_rate"] == pytest.approx(0.6)
    assert 0 < metrics["average_latency_ms"] < 10_000
    assert create["total"] == 2 and create["failed"] == 1 and create["success_rate"] == 0.5
    assert gets == 1


def test_execute_operation_in_the_seed_shape(st: Harness):
    out = st.py("""
        await fresh()
        run = S.execute_operation
        made = await run({"type": "crud", "operation": "create",
                          "payload": {"collection": "users", "data": {"id": "u", "age": 3}}})
        by_id = await run({"type": "crud", "operation": "read", "payload": {"collection": "users", "id": "u"}})
        found = await run({"type": "crud", "operation": "read",
                           "payload": {"collection": "users", "filter": {"age": 3}}})
        n_up = await run({"type": "crud", "operation": "update",
                          "payload": {"collection": "users", "id": "u", "data": {"age": 4}}})
        n_del = await run({"type": "crud", "operation": "delete",
                           "payload": {"collection": "users", "filter": {"age": 4}}})
        bad = await failure(run({"type": "sql", "operation": "read", "payload": {}}))
        [made, by_id, found, n_up, n_del, bad[0]]
    """)
    assert out == [{"id": "u", "age": 3}, {"id": "u", "age": 3}, [{"id": "u", "age": 3}], 1, 1,
                   "InvalidInputError"]


def test_persist_and_estimate_run_on_the_page(st: Harness):
    out = st.py("""
        [await S.persist(), await S.persisted(), await S.estimate()]
    """)
    persisted, again, estimate = out
    assert isinstance(persisted, bool) and again == persisted
    assert estimate["quota"] > 0 and estimate["usage"] >= 0


def test_schema_upgrades_keep_data_and_refuse_mismatches(st: Harness):
    out = st.py("""
        name = "t-" + uuid.uuid4().hex
        v1 = await S.define(name, 1, {"a": {"indexes": ["x"]}, "gone": {}})
        await S.bulk_create("a", [{"id": i, "x": i, "y": i % 2} for i in range(10)])
        v2 = await S.define(name, 2, {"a": {"indexes": ["y"]}, "b": {"key": "code"}})
        again = await S.define(name, 2, {"a": {"indexes": ["y"]}, "b": {"key": "code"}})
        explain = await S.explain("a", {"y": 1})
        await S.create("b", {"code": 5})
        differs = await failure(S.define(name, 2, {"a": {"indexes": ["z"]}}))
        older = await failure(S.define(name, 1, {"a": {}}))
        keyed = await failure(S.define(name, 3, {"a": {"key": "other"}}))
        still = [await S.count("a"), await S.get("b", 5)]
        [v1, v2, again, explain["index"], explain["matched"], differs, older[0], keyed[0], still]
    """)
    v1, v2, again, index, matched, differs, older, keyed, still = out
    assert v1["collections"] == ["a", "gone"] and v2["collections"] == ["a", "b"] == again["collections"]
    assert index == "y" and matched == 5
    assert differs[0] == "StorageError" and "raise the version" in differs[1]
    assert older == "StorageBlockedError"
    assert keyed == "StorageError"
    assert still == [10, {"code": 5}]  # a failed upgrade left version 2 and its data


def test_another_tab_upgrading_closes_ours_cleanly(st: Harness, other: Harness):
    name = st.py("""
        shared = "t-" + uuid.uuid4().hex
        await S.define(shared, 1, {"c": {}})
        await S.create("c", {"id": 1})
        shared
    """)
    t0 = time.monotonic()
    up = other.py(f"""
        v2 = await S.define({name!r}, 2, {{"c": {{"indexes": ["n"]}}}})
        await S.create("c", {{"id": 2, "n": 1}})
        [v2["version"], await S.count("c")]
    """)
    assert up == [2, 2]
    assert time.monotonic() - t0 < 20, "the upgrade waited on the old tab"
    stale = st.py("""
        [await failure(S.count("c")), await failure(S.get("c", 1))]
    """)
    assert [s[0] for s in stale] == ["StorageBlockedError"] * 2
    assert "newer version" in stale[0][1]
    again = st.py(f"""
        await S.define({name!r}, 2, {{"c": {{"indexes": ["n"]}}}})
        [await S.count("c"), await S.get("c", 2)]
    """)
    assert again == [2, {"id": 2, "n": 1}]


def test_a_tab_that_never_lets_go_blocks_with_a_clear_error(st: Harness, other: Harness):
    name = st.py("""
        held = "t-" + uuid.uuid4().hex
        await S.define(held, 1, {"c": {}})
        held
    """)
    # The other tab opens the database with plain JS and ignores versionchange.
    other.js("""(name) => new Promise((res) => {
        const r = indexedDB.open(name); r.onsuccess = () => { window.__held = r.result; res(); };
    })""", name)
    out = st.py(f"""
        t0 = time.monotonic()
        err = await failure(S.define({name!r}, 2, {{"c": {{"indexes": ["n"]}}}}, blocked_timeout=1.0))
        [err, time.monotonic() - t0]
    """)
    err, waited = out
    assert err[0] == "StorageBlockedError" and "another tab" in err[1]
    assert 0.9 < waited < 10
    other.js("() => window.__held.close()")
    time.sleep(0.3)
    # The abandoned upgrade did not happen later behind our back: still version 1.
    version = other.js("""(name) => new Promise((res) => {
        const r = indexedDB.open(name); r.onsuccess = () => { const v = r.result.version; r.result.close(); res(v); };
    })""", name)
    assert version == 1
    assert st.py(f"""(await S.define({name!r}, 2, {{"c": {{"indexes": ["n"]}}}}))["version"]""") == 2


def test_killing_the_worker_mid_batch_loses_no_acknowledged_write(st: Harness, other: Harness):
    out = st.py("""
        K = WorkerBridge(workers=1)
        SK = K.storage
        name = await fresh({"k": {"indexes": ["tx"]}}, s=SK)
        acked = []
        async def batch(t):
            await SK.bulk_create("k", [{"tx": t, "i": i, "pad": "x" * 200} for i in range(200)])
            acked.append(t)
        tasks = [asyncio.ensure_future(batch(t)) for t in range(60)]
        while len(acked) < 5:
            await asyncio.sleep(0.002)
        await K.pool.terminate(force=True)  # worker.terminate(): mid-transaction
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        [name, sorted(acked), sum(isinstance(o, workerbridge.ShutdownError) for o in outcomes)]
    """)
    name, acked, refused = out
    assert len(acked) >= 5 and refused > 0 and len(acked) + refused == 60
    counts = other.py(f"""
        await S.define({name!r}, 1, {{"k": {{"indexes": ["tx"]}}}})
        [await S.count("k", {{"tx": t}}) for t in range(60)]
    """)
    assert all(counts[t] == 200 for t in acked), "an acknowledged write was lost"
    assert set(counts) <= {0, 200}, "a partial transaction is visible"
    assert counts.count(0) > 0, "the kill did not land mid-batch"


def test_a_restarted_worker_reopens_the_database(st: Harness):
    out = st.py("""
        F = WorkerBridge(modules=["./faults.py"])
        SF = F.storage
        await fresh(s=SF)
        await SF.create("users", {"id": 1})
        crashed = await failure(F.request("faults", "close", {}, retries=0))
        await F.pool.wait_all_ready()
        got = await SF.get("users", 1)   # the new worker opens the database by itself
        await SF.create("users", {"id": 2})
        result = [crashed[0], F.stats().restarts, got, await SF.count("users")]
        await F.close()
        result
    """)
    assert out == ["WorkerCrashedError", 1, {"id": 1}, 2]


def test_hooks_write_audit_records_in_the_same_transaction_and_encode_fields(st: Harness):
    # tests/pages/storage_hooks.py installs the seams later features use: an audit record
    # per write, in the write's own transaction, and a field stored as bytes.
    out = st.py("""
        H = WorkerBridge(modules=["./storage_hooks.py"])
        SH = H.storage
        name = await fresh({"users": {"indexes": ["age"]}}, s=SH)
        await SH.create("users", {"id": "a", "age": 1, "secret": "hunter2"})
        await SH.bulk_create("users", [{"id": "b", "age": 2}, {"id": "c", "age": 3}])
        n = await SH.update("users", {"age": {"$gte": 2}}, {"secret": "s3"})
        bad = await failure(SH.transaction([
            {"op": "delete", "collection": "users", "filter": {"id": "a"}},
            {"op": "create", "collection": "users", "data": {"id": "b"}}]))
        refused = await failure(SH.read("users", {"$or": [{"age": 1}, {"secret": "hunter2"}]}))
        got = await SH.get("users", "a")
        audit = await H.request("probe", "audit", {"db": name})
        raw = await js.Function.new("db", '''return new Promise((res) => {
            const r = indexedDB.open(db);
            r.onsuccess = () => { const q = r.result.transaction("users").objectStore("users").get("a");
              q.onsuccess = () => { const s = q.result.secret; r.result.close();
                res([Object.prototype.toString.call(s), new TextDecoder().decode(s)]); }; }; });''')(name)
        await H.close()
        [n, bad[0], refused, got, [[a["seq"], a["op"], a["key"]] for a in audit], list(raw)]
    """)
    n, bad, refused, got, audit, raw = out
    assert n == 2 and bad == "ConstraintError"
    assert refused[0] == "InvalidInputError" and "encrypted" in refused[1]
    assert got == {"id": "a", "age": 1, "secret": "hunter2"}
    assert audit == [[1, "create", "a"], [2, "create", "b"], [3, "create", "c"],
                     [4, "update", "b"], [5, "update", "c"]]  # nothing of the failed one
    assert raw[0] == "[object Uint8Array]" and raw[1] == "2retnuh"


def test_settings_reach_a_restarted_worker_before_its_first_call(st: Harness):
    # Features' settings (say, "encrypt these fields") live in the worker. One that
    # restarted has none: a call made under them is refused there, and the page sends
    # the settings again and then the call — never a write without them.
    out = st.py("""
        H = WorkerBridge(modules=["./storage_hooks.py", "./faults.py"])
        SH = H.storage
        name = await fresh(s=SH)
        await SH._configure("probe", {"off": True})   # the probe hooks step aside
        await SH.create("users", {"id": "x", "secret": "s1"})
        crashed = await failure(H.request("faults", "close", {}, retries=0))
        await H.pool.wait_all_ready()
        await SH.create("users", {"id": "y", "secret": "s2"})
        audit = await H.request("probe", "audit", {"db": name})
        given = await H.request("probe", "settings", {"db": name})
        raw = await js.Function.new("db", '''return new Promise((res) => {
            const r = indexedDB.open(db);
            r.onsuccess = () => { const q = r.result.transaction("users").objectStore("users").getAll();
              q.onsuccess = () => { r.result.close(); res(q.result.map((x) => typeof x.secret)); }; }; });''')(name)
        await H.close()
        [crashed[0], H.stats().restarts, len(audit), given, list(raw)]
    """)
    assert out == ["WorkerCrashedError", 1, 0, {"probe": {"off": True}}, ["string", "string"]]


def test_quota_exceeded_is_a_storage_quota_error_and_writes_nothing(harness: Harness):
    # A real quota: Chromium's own per-origin override (DevTools protocol). Chromium's
    # IndexedDB caches an origin's free space for up to 30 s once it has asked, so the
    # override is set on an origin that has not used IndexedDB yet: the same server as
    # "localhost" is another origin than "127.0.0.1".
    origin = harness.origin.replace("127.0.0.1", "localhost")
    page = harness.page.context.new_page()
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": 1 << 20})
        fresh_origin = Harness(page, origin)
        fresh_origin.py(SETUP)
        out = fresh_origin.py("""
            await fresh({"blobs": {}})
            small = await S.create("blobs", {"id": "small"})
            failed = None
            for attempt in range(8):
                before = await S.count("blobs")
                err = await failure(S.bulk_create("blobs", [{"b": os.urandom(100_000)}
                                                            for _ in range(10)]))
                if err is not None:
                    failed = [err, before, await S.count("blobs")]
                    break
            [small, failed]
        """)
    finally:
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin})
        cdp.detach()
        page.close()
    small, failed = out
    assert small == {"id": "small"}
    assert failed is not None, "the quota was never reached"
    (kind, message), before, after = failed
    assert kind == "StorageQuotaError" and "quota" in message
    assert before == after, "a refused transaction left records behind"


def test_a_read_and_its_answer_take_no_extra_turn_of_the_workers_event_loop(st: Harness):
    # The worker wakes the read's task when IndexedDB answers, and the handler's own task
    # posts the result: no step waits for the event loop to come round again.
    out = st.py("""
        F = WorkerBridge(modules=["./faults.py"])
        SF = F.storage
        await fresh(s=SF)
        await SF.create("users", {"id": 1, "age": 5})
        await F.request("faults", "count_turns", {})
        got = [await SF.get("users", 1) for _ in range(20)]
        turns = await F.request("faults", "count_turns", {})
        await F.close()
        [got == [{"id": 1, "age": 5}] * 20, turns]
    """)
    assert out[0]
    assert out[1] < 10, f"{out[1]} turns of the event loop for 20 reads"
