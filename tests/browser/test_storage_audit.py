"""The storage audit log in real Chromium: records written in the write's own IndexedDB
transaction, a SHA-256 chain re-checked on the page with hashlib, and tampering done to
the raw ``_audit`` store with plain JS IndexedDB.
"""

from __future__ import annotations

import re

import pytest

from conftest import PAGE_HELPERS, ROOT, Harness

SETUP = """
import asyncio, hashlib, json, time, uuid
import js
from workerbridge import WorkerBridge
from workerbridge.storage.audit import next_record
S = WorkerBridge.storage
B = WorkerBridge.default()

COLLS = {"users": {"indexes": {"age": "age"}}, "notes": {"key": "n"}}

async def fresh(s=None, **audit):
    name = "a-" + uuid.uuid4().hex
    await (s or S).define(name, 1, COLLS)
    if audit.get("on", True):
        await (s or S).enable_audit_log(audit.get("actor"))
    return name

_raw = js.Function.new("db", "edits", '''return new Promise((res, rej) => {
    const r = indexedDB.open(db);
    r.onerror = () => rej(r.error);
    r.onsuccess = () => {
      const d = r.result, tx = d.transaction("_audit", "readwrite"), s = tx.objectStore("_audit");
      for (const [op, v] of JSON.parse(edits)) {
        if (op === "put") s.put(v); else s.delete(v);
      }
      const all = s.getAll();
      tx.oncomplete = () => { d.close(); res(JSON.stringify(all.result)); };
      tx.onabort = () => { d.close(); rej(tx.error); };
    };
  });''')

async def raw_audit(name, edits=()):
    '''The raw _audit store, after applying edits: ["put", record] or ["del", seq].'''
    return json.loads(await _raw(name, json.dumps(list(edits))))

def rehash(rec):
    '''An independent check of one record's hash: the documented canonical JSON.'''
    body = {k: v for k, v in rec.items() if k != "hash"}
    body["v"] = 1
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()

def chained(records):
    prev = "0" * 64
    for i, rec in enumerate(records, 1):
        if rec["seq"] != i or rec["prev_hash"] != prev or rec["hash"] != rehash(rec):
            return False
        prev = rec["hash"]
    return True

def brief(records):
    return [[r["operation"], r["collection"], r["record_id"], r["actor"]] for r in records]
""" + PAGE_HELPERS


@pytest.fixture(scope="module")
def au(harness: Harness) -> Harness:
    harness.py(SETUP)
    return harness


def test_every_kind_of_write_appends_one_chained_record(au: Harness):
    out = au.py("""
        name = await fresh(actor="alice")
        t0 = js.Date.now()
        await S.create("users", {"id": "u1", "age": 30})
        # Creates made in one turn share a message and a transaction (group commit).
        await asyncio.gather(*(S.create("notes", {"n": i}) for i in range(5)))
        await S.bulk_create("users", [{"id": f"b{i}", "age": 40 + i} for i in range(3)])
        await S.update("users", {"age": {"$gte": 41}}, {"vip": True})
        await S.set_actor("bob")
        await S.bulk_update("users", [{"id": "b0", "age": 1}, {"id": "missing", "age": 2}])
        await S.delete("notes", {"n": {"$lt": 2}})
        await S.bulk_delete("users", ["b2", "missing"])
        await S.set_actor(None)
        await S.transaction([
            {"op": "create", "collection": "notes", "data": {"n": 1.5}},
            {"op": "update", "collection": "users", "filter": {"id": "u1"}, "data": {"age": 31}},
            {"op": "read", "collection": "users"},
            {"op": "delete", "collection": "notes", "filter": {"n": 4}}])
        t1 = js.Date.now()
        logged = await S.query_audit_logs()
        raw = await raw_audit(name)
        report = await S.verify_audit_log()
        [brief(logged), logged == raw, chained(raw),
         all(t0 <= r["timestamp"] <= t1 for r in raw), report]
    """)
    logged, same_as_raw, chained, in_time, report = out
    assert logged == [
        ["create", "users", "u1", "alice"],
        *[["create", "notes", i, "alice"] for i in range(5)],
        *[["create", "users", f"b{i}", "alice"] for i in range(3)],
        ["update", "users", "b1", "alice"], ["update", "users", "b2", "alice"],
        ["update", "users", "b0", "bob"],
        ["delete", "notes", 0, "bob"], ["delete", "notes", 1, "bob"],
        ["delete", "users", "b2", "bob"],
        ["create", "notes", 1.5, None], ["update", "users", "u1", None],
        ["delete", "notes", 4, None],
    ]
    assert same_as_raw and chained and in_time
    assert report["ok"] and report["checked"] == 18 and report["first_bad_seq"] is None
    assert report["head"]["seq"] == 18 and report["anchored"]


def test_off_by_default_and_off_again_after_disable(au: Harness):
    out = au.py("""
        name = await fresh(on=False)
        await S.create("users", {"id": "quiet"})
        await S.bulk_create("users", [{"id": f"q{i}"} for i in range(3)])
        await S.enable_audit_log()
        await S.create("users", {"id": "heard"})
        await S.disable_audit_log()
        await S.delete("users", {})
        refused = await failure(S.set_actor("x"))
        raw = await raw_audit(name)
        [brief(raw), refused[0], (await S.verify_audit_log())["ok"], await S.count("users")]
    """)
    assert out == [[["create", "users", "heard", None]], "InvalidInputError", True, 0]


def test_an_aborted_transaction_leaves_no_audit_record(au: Harness):
    out = au.py("""
        name = await fresh()
        await S.create("users", {"id": "a"})
        bad = await failure(S.transaction([
            {"op": "create", "collection": "users", "data": {"id": "t1"}},
            {"op": "update", "collection": "users", "filter": {}, "data": {"x": 1}},
            {"op": "create", "collection": "users", "data": {"id": "a"}}]))   # duplicate
        bulk = await failure(S.bulk_create("users", [{"id": "c"}, {"id": "a"}]))
        # One duplicate in a group of creates fails only its own call.
        group = await asyncio.gather(*(failure(S.create("users", {"id": k}))
                                       for k in ["g1", "a", "g2"]))
        raw = await raw_audit(name)
        [bad[0], bulk[0], [g and g[0] for g in group], brief(raw), chained(raw),
         sorted(r["id"] for r in await S.read("users"))]
    """)
    bad, bulk, group, logged, chained, ids = out
    assert bad == bulk == "ConstraintError" and group == [None, "ConstraintError", None]
    assert [r[2] for r in logged] == ["a", "g1", "g2"] and chained
    assert ids == ["a", "g1", "g2"]


TAMPER = {
    # kind: (edits of the raw store, given its records; expected first_bad_seq; reason word)
    "modified": ("[['put', {**raw[2], 'actor': 'mallory'}]]", 3, "altered"),
    "deleted": ("[['del', 3]]", 3, "missing"),
    "inserted": ("[['put', forged]] + [['put', {**r, 'seq': r['seq'] + 1}] for r in raw[3:]]",
                 5, "altered"),
    "reordered": ("[['put', {**raw[3], 'seq': 3}], ['put', {**raw[2], 'seq': 4}]]", 3,
                  "altered"),
    # Record 3 replaced by a self-consistent forgery: record 4 no longer links to it.
    "replaced": ("[['put', replaced]]", 3, "link"),
}


@pytest.mark.parametrize("kind", list(TAMPER))
def test_verify_finds_a_tampered_record_and_says_where(au: Harness, kind: str):
    edits, first_bad, word = TAMPER[kind]
    out = au.py(f"""
        name = await fresh(actor="alice")
        for i in range(6):
            await S.create("users", {{"id": f"u{{i}}"}})
        before = await S.verify_audit_log()
        raw = await raw_audit(name)
        # A well-formed record an attacker hashes into the chain after record 3.
        forged = next_record(raw[2], "delete", "users", "u0", raw[2]["timestamp"]).to_dict()
        replaced = next_record(raw[1], "create", "users", "u2", raw[2]["timestamp"],
                               "mallory").to_dict()
        await raw_audit(name, {edits})
        after = await S.verify_audit_log()
        await S.create("users", {{"id": "later"}})   # writes go on; the break stays
        [before["ok"], after, (await S.verify_audit_log())["first_bad_seq"]]
    """)
    ok_before, after, still = out
    assert ok_before and not after["ok"] and after["head"] is None
    assert after["first_bad_seq"] == first_bad == still
    assert word in after["reason"]


def test_tail_truncation_is_found_through_anchors_not_through_the_chain(au: Harness):
    out = au.py("""
        F = WorkerBridge(modules=["./faults.py"])
        SF = F.storage
        name = await fresh(s=SF)
        for i in range(5):
            await SF.create("users", {"id": f"u{i}"})
        # The worker remembers its newest write: a cut tail shows at once.
        await raw_audit(name, [["del", 5]])
        by_worker = await SF.verify_audit_log()
        # A fresh bridge (another worker, no anchor) sees only the stored chain: intact.
        O = WorkerBridge()
        await O.storage.define(name, 1, COLLS)
        chain_alone = await O.storage.verify_audit_log()
        await O.close()
        # After a restart the worker has forgotten; the page's anchor (the newest head
        # verified in this session) still finds the cut.
        name2 = await fresh(s=SF)
        for i in range(4):
            await SF.create("users", {"id": f"u{i}"})
        anchored = await SF.verify_audit_log()
        await failure(F.request("faults", "close", {}, retries=0))
        await F.pool.wait_all_ready()
        await raw_audit(name2, [["del", 4], ["del", 3]])
        after_restart = await SF.verify_audit_log()
        # An anchor kept elsewhere (from an earlier session) is passed in.
        kept = anchored["head"]
        O = WorkerBridge()
        await O.storage.define(name2, 1, COLLS)
        given = await O.storage.verify_audit_log(expected_head=kept)
        await O.close()
        await F.close()
        [by_worker, chain_alone, kept, SF.audit_anchor(), after_restart, given]
    """)
    by_worker, chain_alone, kept, anchor, after_restart, given = out
    assert not by_worker["ok"] and "truncated" in by_worker["reason"]
    assert by_worker["first_bad_seq"] == 5
    assert chain_alone["ok"] and chain_alone["checked"] == 4 and not chain_alone["anchored"]
    assert kept["seq"] == 4 and anchor == kept
    for report in (after_restart, given):
        assert not report["ok"] and report["first_bad_seq"] == 3
        assert "truncated" in report["reason"]


def test_query_by_fields_and_time_range_matches_plain_python(au: Harness):
    out = au.py("""
        name = await fresh()
        marks = []
        for phase, actor in enumerate(["ann", "ben", "ann"]):
            await S.set_actor(actor)
            await asyncio.sleep(0.02)
            marks.append(js.Date.now())
            # 20 ms on each side of a mark: the worker stamps records with its own clock,
            # whole milliseconds that may trail the page's Date.now() by a few (a phase's
            # first writes once fell at or before the mark taken just before them).
            await asyncio.sleep(0.02)
            await S.bulk_create("users", [{"id": f"p{phase}-{i}", "age": i} for i in range(4)])
            await S.update("users", {"id": f"p{phase}-1"}, {"age": 9})
            await S.delete("users", {"id": f"p{phase}-2"})
            await asyncio.sleep(0.02)
        marks.append(js.Date.now())
        everything = await S.query_audit_logs()
        cases = [
            ({"operation": "update"}, None),
            ({"actor": "ann", "operation": "create"}, None),
            ({"record_id": "p1-2"}, None),
            ({"collection": "notes"}, None),
            (None, (marks[1], marks[2])),
            ({"actor": "ann"}, (None, marks[1])),
            ({"operation": "delete"}, (marks[1], None)),
            (None, (marks[3], None)),
        ]
        results = []
        for flt, window in cases:
            lo, hi = window or (None, None)
            want = [r for r in everything
                    if all(r[k] == v for k, v in (flt or {}).items())
                    and (lo is None or r["timestamp"] >= lo) and (hi is None or r["timestamp"] <= hi)]
            got = await S.query_audit_logs(flt, window)
            results.append([len(got), got == want])
        index = await js.Function.new("db", '''return new Promise((res) => {
            const r = indexedDB.open(db);
            r.onsuccess = () => { const d = r.result;
              res(Array.from(d.transaction("_audit").objectStore("_audit").indexNames));
              d.close(); }; });''')(name)
        [len(everything), results, list(index)]
    """)
    total, results, index = out
    assert total == 18 and index == ["timestamp"]
    assert [n for n, _ in results] == [3, 8, 2, 0, 6, 6, 2, 0]
    assert all(same for _, same in results)


def test_settings_survive_a_worker_restart(au: Harness):
    out = au.py("""
        F = WorkerBridge(modules=["./faults.py"])
        SF = F.storage
        name = await fresh(s=SF, actor="carol")
        await SF.create("users", {"id": "before"})
        crashed = await failure(F.request("faults", "close", {}, retries=0))
        await F.pool.wait_all_ready()
        await SF.create("users", {"id": "after"})
        raw = await raw_audit(name)
        report = await SF.verify_audit_log()
        await F.close()
        [crashed[0], F.stats().restarts, brief(raw), chained(raw), report["ok"]]
    """)
    assert out == ["WorkerCrashedError", 1, [["create", "users", "before", "carol"],
                                             ["create", "users", "after", "carol"]], True, True]


def test_bad_input_is_refused_on_the_page_and_the_worker_keeps_serving(au: Harness):
    out = au.py("""
        name = await fresh()
        errors = [
            await failure(S.enable_audit_log(5)),
            await failure(S.enable_audit_log("")),
            await failure(S.set_actor("\\ud800")),
            await failure(S.query_audit_logs({"hash": "x"})),
            await failure(S.query_audit_logs({"operation": 3})),
            await failure(S.query_audit_logs("users")),
            await failure(S.query_audit_logs(None, (5, 1))),
            await failure(S.query_audit_logs(None, ("a", None))),
            await failure(S.verify_audit_log(expected_head={"seq": 0, "hash": "0" * 64})),
            await failure(S.verify_audit_log(expected_head=[1])),
        ]
        await S.create("users", {"id": "ok"})
        # A damaged newest record: nothing sound to chain onto, so writes are refused
        # (and nothing is written) until the log is looked at.
        raw = await raw_audit(name, [["put", {"seq": 1, "junk": True}]])
        refused = await failure(S.create("users", {"id": "blocked"}))
        [[e[0] for e in errors], refused[0], await S.count("users"), len(raw),
         (await S.verify_audit_log())["first_bad_seq"]]
    """)
    errors, refused, count, stored, first_bad = out
    assert errors == ["InvalidTypeError", "InvalidInputError", "InvalidInputError",
                      "InvalidFilterError", "InvalidTypeError", "InvalidTypeError",
                      "InvalidInputError", "InvalidTypeError", "InvalidInputError",
                      "InvalidTypeError"]
    assert refused == "IntegrityError" and count == 1 and stored == 1 and first_bad == 1


def test_a_large_bulk_insert_is_logged_and_verifies(au: Harness):
    out = au.py("""
        name = await fresh()
        t = time.perf_counter()
        await S.bulk_create("users", [{"id": i, "age": i % 90} for i in range(5000)])
        took = time.perf_counter() - t
        report = await S.verify_audit_log()
        [report["ok"], report["checked"], len(await S.query_audit_logs({"record_id": 4321})),
         took]
    """)
    ok, checked, found, took = out
    assert ok and checked == 5000 and found == 1 and took < 60


def test_docs_example_runs(au: Harness):
    doc = (ROOT / "docs" / "storage.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", doc, re.S)
                 if "enable_audit_log(actor=" in b)
    name = au.py('"docs-audit-" + uuid.uuid4().hex')
    got = au.py(block.replace('"audited-shop"', repr(name)) + "\n[report, updates]")
    report, updates = got
    assert report["ok"] and report["checked"] == 1 and report["head"]["seq"] == 1
    assert updates == []


def test_a_database_made_without_the_audit_store_says_so_until_its_version_is_raised(
        au: Harness):
    # The same collections at the same version, made by other code: define() opens it
    # as it is, and the audit log's store can only come with an upgrade.
    out = au.py("""
        _legacy = js.Function.new("db", '''return new Promise((res, rej) => {
            const r = indexedDB.open(db, 1);
            r.onupgradeneeded = () => {
              const d = r.result;
              d.createObjectStore("users", { keyPath: "id" }).createIndex("age", "age");
              d.createObjectStore("notes", { keyPath: "n" });
            };
            r.onerror = () => rej(r.error);
            r.onsuccess = () => { r.result.close(); res(true); };
          });''')
        name = "legacy-" + uuid.uuid4().hex
        await _legacy(name)
        await S.define(name, 1, COLLS)
        await S.create("users", {"id": "u0", "age": 1})
        await S.enable_audit_log("bob")
        refused = [await failure(S.create("users", {"id": "u1", "age": 2})),
                   await failure(S.verify_audit_log()),
                   await failure(S.query_audit_logs())]
        kept = [await S.get("users", "u0"), await S.get("users", "u1")]
        await S.define(name, 2, COLLS)
        await S.create("users", {"id": "u2", "age": 3})
        report = await S.verify_audit_log()
        await S.disable_audit_log()
        {"refused": refused, "kept": kept, "audit": brief(await raw_audit(name)),
         "ok": report["ok"]}
    """)
    for kind, message in out["refused"]:
        assert kind == "StorageError"
        assert "'_audit'" in message and "higher version" in message
    assert out["kept"] == [{"id": "u0", "age": 1}, None]
    assert out["audit"] == [["create", "users", "u2", "bob"]] and out["ok"]
