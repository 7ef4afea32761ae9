"""Field encryption by classification in real Chromium: SubtleCrypto in a real worker,
ciphertexts in real IndexedDB, read back with plain JS for an independent view.

Every test uses a database of its own. Expected values are the ones the page wrote; the
raw view of the store is taken by plain JS, never through the code under test.
"""

from __future__ import annotations

import pytest

from conftest import PAGE_HELPERS, Harness

SETUP = """
import asyncio, json, os, uuid
import js
from workerbridge import WorkerBridge
S = WorkerBridge.storage
B = WorkerBridge.default()

LEVELS = {"ssn": "PII", "salary": "SENSITIVE", "team": "INTERNAL", "name": "public"}
USERS = {"users": {"indexes": ["team"]}, "notes": {}}
KEY = None

async def setup(s=None, key=True):
    global KEY
    s = s or S
    name = "f-" + uuid.uuid4().hex
    await s.define(name, 1, USERS)
    await s.classify_data("users", LEVELS)
    if key:
        if KEY is None:
            KEY = await B.crypto.derive_key("correct horse", b"pepper and salt!", 1000)
        await s.set_encryption_key(KEY)
    return name

# Every string, number and byte string (as Latin-1 and as UTF-8) in a store, found by
# plain JS; and each record with its encrypted fields shown as their envelope's keys.
raw_view = js.Function.new("db", "store", '''
  return new Promise((res, rej) => {
    const r = indexedDB.open(db);
    r.onerror = () => rej(r.error);
    r.onsuccess = () => { const d = r.result;
      const q = d.transaction(store).objectStore(store).getAll();
      q.onerror = () => rej(q.error);
      q.onsuccess = () => { d.close();
        const texts = [];
        const walk = (v) => {
          if (v === null || v === undefined) return;
          if (typeof v === "string") texts.push(v);
          else if (typeof v === "number" || typeof v === "boolean") texts.push(String(v));
          else if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
            const u = v instanceof ArrayBuffer ? new Uint8Array(v)
                                               : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
            texts.push(new TextDecoder("latin1").decode(u), new TextDecoder().decode(u));
          } else if (Array.isArray(v)) v.forEach(walk);
          else for (const [k, x] of Object.entries(v)) { texts.push(k); walk(x); }
        };
        walk(q.result);
        const shape = (x) => (x && typeof x === "object" && "$enc" in x) ? Object.keys(x).sort() : x;
        res(JSON.stringify({texts, records: q.result.map((rec) =>
          Object.fromEntries(Object.entries(rec).map(([k, x]) => [k, shape(x)])))}));
      };
    };
  });''')

async def raw(db, store="users"):
    return json.loads(await raw_view(db, store))

# Copies stored field values between records with plain JS: [[from id, field, to id, field]].
raw_move = js.Function.new("db", "store", "moves", '''
  return new Promise((res, rej) => {
    const r = indexedDB.open(db);
    r.onerror = () => rej(r.error);
    r.onsuccess = () => { const d = r.result;
      const t = d.transaction(store, "readwrite"); const os = t.objectStore(store);
      const q = os.getAll();
      q.onsuccess = () => {
        const byId = new Map(q.result.map((x) => [x.id, x]));
        const changed = new Map();
        for (const [a, fa, b, fb] of moves) {
          const to = changed.get(b) || structuredClone(byId.get(b));
          to[fb] = byId.get(a)[fa]; changed.set(b, to);
        }
        for (const rec of changed.values()) os.put(rec);
      };
      t.oncomplete = () => { d.close(); res(true); };
      t.onerror = () => rej(t.error);
    };
  });''')
""" + PAGE_HELPERS


@pytest.fixture(scope="module")
def fs(harness: Harness) -> Harness:
    harness.py(SETUP)
    return harness


def test_protected_fields_are_never_stored_in_the_clear_on_any_write_path(fs: Harness):
    out = fs.py("""
        name = await setup()
        def person(i):
            return {"id": f"u{i}", "name": f"Name-{i}", "team": f"team-{i % 2}",
                    "ssn": f"SSN-{i:03d}-77-1234", "salary": {"base": 910000 + i, "cur": "EURO"}}
        await S.create("users", person(0))                                   # create
        await asyncio.gather(*(S.create("users", person(i)) for i in (1, 2, 3)))  # group commit
        await S.bulk_create("users", [person(i) for i in (4, 5)])             # bulk_create
        await S.update("users", {"team": "team-0"}, {"ssn": "SSN-UPDATED-BY-FILTER"})
        await S.bulk_update("users", [{"id": "u1", "salary": "SALARY-BULK-UPDATED"}])
        await S.transaction([
            {"op": "create", "collection": "users", "data": person(6)},
            {"op": "update", "collection": "users", "filter": {"id": "u3"},
             "data": {"salary": "SALARY-IN-TRANSACTION"}}])
        view = await raw(name)
        secrets = ([f"SSN-{i:03d}-77-1234" for i in range(7)]
                   + [str(910000 + i) for i in range(7)]
                   + ["EURO", "SSN-UPDATED-BY-FILTER", "SALARY-BULK-UPDATED",
                      "SALARY-IN-TRANSACTION"])
        blob = "\\n".join(view["texts"])
        leaked = [s for s in secrets if s in blob]
        clear = [s for s in [f"Name-{i}" for i in range(7)] + ["team-0", "team-1"]
                 if s not in blob]
        shapes = {r["id"]: [r["ssn"], r["salary"]] for r in view["records"]}
        expected = {f"u{i}": person(i) for i in range(7)}
        for uid in ("u0", "u2", "u4"):  # u6 came later
            expected[uid]["ssn"] = "SSN-UPDATED-BY-FILTER"
        expected["u1"]["salary"] = "SALARY-BULK-UPDATED"
        expected["u3"]["salary"] = "SALARY-IN-TRANSACTION"
        got = {uid: await S.get("users", uid) for uid in expected}
        listed = await S.read("users")
        in_tx = await S.transaction([{"op": "get", "collection": "users", "id": "u3"},
                                     {"op": "read", "collection": "users",
                                      "filter": {"team": "team-1"}}])
        [leaked, clear, shapes, len(view["records"]), got == expected,
         listed == [expected[r["id"]] for r in listed] and len(listed) == 7,
         in_tx[0] == expected["u3"],
         sorted(r["id"] for r in in_tx[1]) == ["u1", "u3", "u5"]
         and all(r == expected[r["id"]] for r in in_tx[1])]
    """)
    leaked, clear, shapes, n, got_ok, listed_ok, tx_get_ok, tx_read_ok = out
    assert leaked == [], "plaintext of a protected field is in IndexedDB"
    assert clear == [], "INTERNAL/PUBLIC fields should be stored in the clear"
    sealed = ["$enc", "alg", "ct", "nonce"]  # bound to its record by the associated data
    bound = ["$enc", "alg", "ct", "mac", "nonce"]  # an update by filter's: bound by a mac
    assert shapes == {"u0": [bound, sealed], "u1": [sealed, sealed], "u2": [bound, sealed],
                      "u3": [sealed, bound], "u4": [bound, sealed], "u5": [sealed, sealed],
                      "u6": [sealed, sealed]}
    assert n == 7 and got_ok and listed_ok and tx_get_ok and tx_read_ok


@pytest.mark.parametrize("via", ["create", "update", "bulk_update", "transaction"])
def test_every_value_type_round_trips(fs: Harness, via: str):
    out = fs.py(f"""
        await setup()
        values = ["text é 😀", "", 0, -7, 2**53 - 1, 3.25, -1e-300, True, False, None,
                  [], [1, "a", None, [2.5]], {{"k": {{"deep": [1, {{"x": None}}]}}}},
                  b"\\x00\\xff raw", b"", os.urandom(64)]
        via = {via!r}
        ok = []
        for i, v in enumerate(values):
            rid = f"r{{i}}"
            if via == "create":
                await S.create("users", {{"id": rid, "ssn": v, "salary": v, "name": "n"}})
            else:
                await S.create("users", {{"id": rid, "name": "n", "team": rid}})
                if via == "update":
                    await S.update("users", {{"team": rid}}, {{"ssn": v, "salary": v}})
                elif via == "bulk_update":
                    await S.bulk_update("users", [{{"id": rid, "ssn": v, "salary": v}}])
                else:
                    await S.transaction([{{"op": "update", "collection": "users",
                                          "filter": {{"id": rid}},
                                          "data": {{"ssn": v, "salary": v}}}}])
            back = await S.get("users", rid)
            ok.append([back["ssn"] == v and type(back["ssn"]) is type(v),
                       back["salary"] == v and type(back["salary"]) is type(v)])
        ok
    """)
    assert out == [[True, True]] * 16


def test_a_ciphertext_moved_to_another_record_or_field_fails_to_open(fs: Harness):
    out = fs.py("""
        name = await setup()
        await S.bulk_create("users", [{"id": i, "ssn": f"s{i}", "salary": i, "team": "t"}
                                      for i in ("a", "b", "c", "d", "e")])
        await S.update("users", {"id": "d"}, {"ssn": "by filter"})   # sealed with a mac
        before = [await S.get("users", i) for i in ("a", "b", "c", "d", "e")]
        await raw_move(name, "users", js.JSON.parse(json.dumps([
            ["a", "ssn", "b", "ssn"],        # another record, same field
            ["c", "ssn", "c", "salary"],     # same record, another field
            ["d", "ssn", "e", "ssn"]])))     # an update's bound ciphertext, another record
        after = [await failure(S.get("users", i)) for i in ("b", "c", "e")]
        listing = await failure(S.read("users"))
        untouched = [await S.get("users", i) for i in ("a", "d")]
        # Gets made in one turn share a transaction: the tampered record fails alone.
        together = await asyncio.gather(*(failure(S.get("users", i)) for i in "abcde"))
        [before[0]["ssn"], before[3]["ssn"], after, listing, untouched == [before[0], before[3]],
         [t and t[0] for t in together]]
    """)
    a_ssn, d_ssn, after, listing, untouched, together = out
    assert together == [None, "IntegrityError", "IntegrityError", None, "IntegrityError"]
    assert a_ssn == "sa" and d_ssn == "by filter"
    assert [e[0] for e in after] == ["IntegrityError"] * 3
    assert listing[0] == "IntegrityError"
    assert untouched  # the worker keeps serving the records that were not tampered with


def test_a_wrong_key_on_read_is_an_integrity_error_not_garbage(fs: Harness):
    out = fs.py("""
        await setup()
        await S.create("users", {"id": 1, "ssn": "one", "team": "x"})
        await S.update("users", {"team": "x"}, {"salary": 100})
        await S.create("users", {"id": 2, "team": "clear only"})
        other = await B.crypto.derive_key("wrong horse", b"pepper and salt!", 1000)
        await S.set_encryption_key(other)
        wrong = [await failure(S.get("users", 1)), await failure(S.read("users", {"id": 1}))]
        clear_only = await S.get("users", 2)
        await S.set_encryption_key(KEY)
        [[w[0] for w in wrong], clear_only, await S.get("users", 1)]
    """)
    wrong, clear_only, right = out
    assert wrong == ["IntegrityError", "IntegrityError"]
    assert clear_only == {"id": 2, "team": "clear only"}
    assert right == {"id": 1, "ssn": "one", "team": "x", "salary": 100}


def test_filters_and_sorts_on_protected_fields_are_refused(fs: Harness):
    out = fs.py("""
        name = await setup()
        await S.create("users", {"id": 1, "ssn": "x", "team": "t"})
        page = [
            await failure(S.read("users", {"ssn": "x"})),
            await failure(S.read("users", {"$or": [{"team": "t"}, {"salary": {"$gt": 1}}]})),
            await failure(S.read("users", sort="ssn")),
            await failure(S.read("users", sort=[("team", "asc"), ("salary.base", "desc")])),
            await failure(S.count("users", {"ssn": {"$in": ["x"]}})),
            await failure(S.update("users", {"ssn": "x"}, {"team": "u"})),
            await failure(S.delete("users", {"salary": None})),
            await failure(S.explain("users", {"ssn": "x"})),
            await failure(S.transaction([{"op": "read", "collection": "users",
                                          "filter": {"ssn": "x"}}])),
        ]
        # The worker refuses too, for a call that skips the page's checks.
        worker = await failure(S._send("read", {"collection": "users",
                                                "filter": {"ssn": "x"}}, False))
        exists = await S.read("users", {"ssn": {"$exists": True}})
        [[p[0] for p in page], "encrypted" in page[0][1], worker and worker[0],
         [r["id"] for r in exists], await S.count("users", {"team": "t"})]
    """)
    page, says_why, worker, exists, still = out
    assert page == ["InvalidFilterError"] * 9
    assert says_why and worker == "InvalidFilterError"
    assert exists == [1] and still == 1


def test_a_missing_key_refuses_protected_writes_and_writes_nothing(fs: Harness):
    out = fs.py("""
        name = await setup(key=False)
        page = [await failure(S.create("users", {"id": 1, "ssn": "x"})),
                await failure(S.bulk_create("users", [{"id": 2}, {"id": 3, "salary": 1}])),
                await failure(S.update("users", {}, {"ssn": "x"})),
                await failure(S.transaction([{"op": "create", "collection": "users",
                                              "data": {"id": 4, "ssn": "x"}}]))]
        # A call that skips the page's checks is refused by the worker: nothing written.
        worker = await failure(S._send("create", {"collection": "users",
                                                  "data": {"id": 5, "ssn": "x"}}, True))
        clear = await S.create("users", {"id": 6, "team": "no protected field"})
        [[p[0] for p in page], "set_encryption_key" in page[0][1], worker and worker[0],
         [r["id"] for r in (await raw(name))["records"]], clear]
    """)
    page, says_how, worker, stored, clear = out
    assert page == ["InvalidInputError"] * 4 and says_how
    assert worker == "InvalidInputError"
    assert stored == [6] and clear == {"id": 6, "team": "no protected field"}


def test_settings_survive_a_worker_restart(fs: Harness):
    out = fs.py("""
        F = WorkerBridge(modules=["./faults.py"])
        SF = F.storage
        name = await setup(s=SF)
        await SF.create("users", {"id": 1, "ssn": "before-crash", "name": "a"})
        crashed = await failure(F.request("faults", "close", {}, retries=0))
        await F.pool.wait_all_ready()
        await SF.create("users", {"id": 2, "ssn": "after-crash", "name": "b"})
        await SF.update("users", {"name": "a"}, {"salary": "updated-after-crash"})
        got = [await SF.get("users", 1), await SF.get("users", 2)]
        refused = await failure(SF.read("users", {"ssn": "after-crash"}))
        blob = "\\n".join((await raw(name))["texts"])
        result = [crashed[0], F.stats().restarts, got, refused and refused[0],
                  [s in blob for s in ("before-crash", "after-crash", "updated-after-crash")]]
        await F.close()
        result
    """)
    crashed, restarts, got, refused, leaked = out
    assert crashed == "WorkerCrashedError" and restarts == 1
    assert got == [{"id": 1, "ssn": "before-crash", "name": "a", "salary": "updated-after-crash"},
                   {"id": 2, "ssn": "after-crash", "name": "b"}]
    assert refused == "InvalidFilterError" and leaked == [False, False, False]


def test_a_given_crypto_key_works_and_bad_keys_are_refused(fs: Harness):
    out = fs.py("""
        name = await setup(key=False)
        subtle = js.crypto.subtle
        gcm = await subtle.generateKey(js.JSON.parse('{"name": "AES-GCM", "length": 256}'),
                                       False, js.JSON.parse('["encrypt", "decrypt"]'))
        await S.set_encryption_key(gcm)
        await S.create("users", {"id": 1, "ssn": "with a CryptoKey"})
        got = await S.get("users", 1)
        cbc = await subtle.generateKey(js.JSON.parse('{"name": "AES-CBC", "length": 256}'),
                                       False, js.JSON.parse('["encrypt", "decrypt"]'))
        short = await subtle.generateKey(js.JSON.parse('{"name": "AES-GCM", "length": 128}'),
                                         False, js.JSON.parse('["encrypt", "decrypt"]'))
        bad = [await failure(S.set_encryption_key(b"16 bytes only!!!")),
               await failure(S.set_encryption_key("a password")),
               await failure(S.set_encryption_key(cbc)),
               await failure(S.set_encryption_key(short))]
        [got, [b[0] for b in bad], await S.get("users", 1) == got]
    """)
    got, bad, still = out
    assert got == {"id": 1, "ssn": "with a CryptoKey"}
    assert bad == ["InvalidInputError", "InvalidTypeError", "InvalidInputError",
                   "InvalidInputError"]
    assert still


def test_bad_classifications_and_values_raise_on_the_page(fs: Harness):
    out = fs.py("""
        name = await setup()
        bad = [await failure(S.classify_data("users", {"ssn": "SECRET"})),
               await failure(S.classify_data("users", {"id": "PII"})),
               await failure(S.classify_data("users", {"a.b": "PII"})),
               await failure(S.classify_data("users", ["ssn"])),
               await failure(S.classify_data("nope", {"ssn": "PII"})),
               await failure(S.classify_data("users", {"team": "PII"})),   # indexed
               await failure(S.create("users", {"id": 1, "ssn": {"photo": b"nested"}})),
               await failure(S.create("users", {"id": 1, "ssn": {1: "int key"}}))]
        levels = S.classification("users")
        await S.create("users", {"id": 1, "ssn": "fine"})
        [[b[0] for b in bad], levels, await S.get("users", 1), await S.count("users")]
    """)
    bad, levels, got, n = out
    assert bad == ["InvalidInputError", "InvalidInputError", "InvalidInputError",
                   "InvalidTypeError", "UnknownCollectionError", "InvalidFilterError",
                   "InvalidTypeError", "InvalidTypeError"]
    assert levels == {"ssn": "PII", "salary": "SENSITIVE", "team": "INTERNAL", "name": "PUBLIC"}
    assert got == {"id": 1, "ssn": "fine"} and n == 1
