"""Host tests of outboxes in the job store: events appended in order and once per id,
taken under a lease one tab holds, removed only once acknowledged; a pipeline's
transport stage appends to its outbox in the transaction that ends the stage before it."""

from __future__ import annotations

import pytest

from test_jobs_store import FULL_SCHEMA
from test_storage_programs import Memory
from workerbridge import InvalidInputError, InvalidTypeError
from workerbridge.jobs import store
from workerbridge.jobs.claims import QueueLimits
from workerbridge.jobs.graph import Stage, build
from workerbridge.jobs.outbox import check_headers, check_url

SCHEMA = {k: FULL_SCHEMA[k] for k in store.STORES}


def run(db: Memory, program):
    return db.run(store.STORES, program)


def events(name: str, n: int, start: int = 0):
    return [(name, f"e{i}", f"k{i % 2}", {"n": i}) for i in range(start, start + n)]


def test_events_are_kept_in_order_once_per_id_and_per_outbox():
    db = Memory(SCHEMA)
    assert run(db, store.outbox_add(events("a", 3), 0.0)) == 3
    assert run(db, store.outbox_add(events("a", 3, 2) + events("b", 1, 9), 1.0)) == 3
    got = run(db, store.outbox_take("a", "tab1", 5.0, 2.0, 10))
    assert [e["id"] for e in got] == ["e0", "e1", "e2", "e3", "e4"]  # e2 once
    assert [e["key"] for e in got[:2]] == ["k0", "k1"]
    assert [e["id"] for e in run(db, store.outbox_take("b", "tab1", 5.0, 2.0, 10))] == ["e9"]
    assert run(db, store.outbox_count("a")) == 5


def test_one_tab_sends_at_a_time_and_only_acknowledged_events_leave():
    db = Memory(SCHEMA)
    run(db, store.outbox_add(events("a", 4), 0.0))
    assert len(run(db, store.outbox_take("a", "tab1", 5.0, 1.0, 2))) == 2
    assert run(db, store.outbox_take("a", "tab2", 5.0, 2.0, 2)) is None  # tab1's lease
    assert run(db, store.outbox_remove("a", "tab1", ["e0"], 5.0, 3.0))  # e1 unacknowledged
    again = run(db, store.outbox_take("a", "tab1", 5.0, 3.5, 2))
    assert [e["id"] for e in again] == ["e1", "e2"]  # e1 first: sent again, in order
    # A lease that ended, or whose tab let go, passes on; the old holder removes nothing.
    assert run(db, store.outbox_take("a", "tab2", 5.0, 9.0, 1)) is not None
    assert not run(db, store.outbox_remove("a", "tab1", ["e1"], 5.0, 9.5))
    assert run(db, store.outbox_count("a")) == 3
    assert run(db, store.outbox_take("a", "tab3", 5.0, 9.6, 1, gone={"tab2"})) is not None
    run(db, store.outbox_release("a", "tab3"))
    assert run(db, store.outbox_take("a", "tab1", 5.0, 9.7, 1)) is not None


def test_a_transport_stage_appends_to_its_outbox_once_per_event():
    db = Memory(SCHEMA)
    graph = build([Stage("writer", "p.write"), Stage("router", "p.route", split=True),
                   Stage("transport", "outbox:server")])
    run(db, store.put_pipeline(store.pipeline_record("chg", graph)))
    run(db, store.publish("chg", [({"n": 1}, "e1")], 0.0))
    limits = {store.stage_queue("chg", s): QueueLimits(10) for s in ("writer", "router")}
    (job,) = run(db, store.claim(1.0, "me", 50, limits)).jobs
    run(db, store.complete(job["id"], {"key": "c1"}, 2.0))
    (job,) = run(db, store.claim(3.0, "me", 50, limits)).jobs
    assert job["pipeline"]["stage"] == "router"
    run(db, store.complete_many([(job["id"], [{"key": "c1", "n": 1}, {"n": 2}])], 4.0))
    sent = run(db, store.outbox_take("server", "me", 5.0, 5.0, 10))
    assert [(e["key"], e["data"]) for e in sent] == [("c1", {"key": "c1", "n": 1}),
                                                     (None, {"n": 2})]
    # The router's job ending again (its run repeated) appends nothing twice.
    assert run(db, store.outbox_add([("server", sent[0]["id"], None, {})], 6.0)) == 0
    assert store.JOBS not in {r[1] for r in db.requests if r[0] == "add"
                              and r[2].get("handler", "").startswith("outbox:")}


def test_transport_stages_end_the_way_and_are_not_first():
    with pytest.raises(InvalidInputError, match="cannot be the first"):
        build([Stage("t", "outbox:x"), Stage("a", "p.a")])
    with pytest.raises(InvalidInputError, match="ends its way"):
        build([Stage("a", "p.a"), Stage("t", "outbox:x"), Stage("b", "p.b")])
    with pytest.raises(InvalidInputError, match="outbox:NAME"):
        Stage("t", "outbox:no way")
    assert build([Stage("a", "p.a"), Stage("t", "outbox:x"), Stage("b", "p.b")],
                 {"t": [], "a": ["t", "b"]}).successors("a") == ("t", "b")


@pytest.mark.parametrize("url", ["ftp://x/y", "javascript:alert(1)", "", "ws://", "/rel",
                                 "file:///etc/passwd", 42, "http://" + "a" * 3000])
def test_outbox_urls_are_http_or_ws_and_absolute(url):
    with pytest.raises(InvalidInputError):
        check_url(url)


def test_good_urls_and_headers():
    for url in ("ws://127.0.0.1:8080/", "wss://example.org/sock", "https://api.example.org/e",
                "http://localhost/x"):
        assert check_url(url) == url
    assert check_headers({"authorization": "Bearer x"}) == {"authorization": "Bearer x"}
    with pytest.raises(InvalidTypeError):
        check_headers({"a": 1})


def test_event_keys():
    assert store.event_key({"key": "c1"}) == "c1"
    assert store.event_key({"channel": {"app": "a", "model": "m", "id": 3}}) == "a/m/3"
    assert store.event_key([1]) is None
