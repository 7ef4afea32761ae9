"""Host tests of pipelines in the job store: events pass from stage to stage in the
transaction that ends each stage's job (workerbridge.jobs.store)."""

from __future__ import annotations

import pytest

from test_jobs_store import WF_SCHEMA, wrun
from test_storage_programs import Memory
from workerbridge import InvalidInputError
from workerbridge.jobs import store
from workerbridge.jobs.claims import QueueLimits
from workerbridge.jobs.graph import Stage, build, insert

GRAPH = build([Stage("writer", "p.write"), Stage("router", "p.route", split=True),
               Stage("ws", "p.send"), Stage("audit", "p.audit")],
              {"router": ["ws", "audit"], "ws": []})


def take(db: Memory, stage: str) -> list[dict]:
    got = wrun(db, store.claim(100.0, "me", 50, {store.stage_queue("chg", stage): QueueLimits(10)}))
    return list(got.jobs)


def test_events_pass_on_fan_out_split_and_drop():
    db = Memory(WF_SCHEMA)
    record = wrun(db, store.put_pipeline(store.pipeline_record("chg", GRAPH)))
    assert record["version"] == 1
    wrun(db, store.publish("chg", [({"n": 1}, "e1"), ({"n": 2}, None)], 0.0))
    assert wrun(db, store.publish("chg", [({"n": 1}, "e1")], 0.5))[0]["id"] == "pl:chg:e1"
    first, second = take(db, "writer")
    assert first["payload"] == {"n": 1} and first["pipeline"]["stage"] == "writer"
    # Ended together (as the page batches them): one passes on, one is dropped (a filter).
    ended = wrun(db, store.complete_many([(first["id"], {"n": 10}), (second["id"], None)],
                                         2.0))
    assert [bool(e) for e in ended] == [True, True]
    (routed,) = take(db, "router")
    assert routed["payload"] == {"n": 10}
    wrun(db, store.complete(routed["id"], [{"to": "a"}, {"to": "b"}], 3.0))  # split
    assert not wrun(db, store.complete(routed["id"], [{"to": "x"}], 3.5))  # once only
    ws, audit = take(db, "ws"), take(db, "audit")
    assert [j["payload"] for j in ws] == [{"to": "a"}, {"to": "b"}]
    assert [j["payload"] for j in audit] == [{"to": "a"}, {"to": "b"}]
    for job in ws + audit:
        wrun(db, store.complete(job["id"], {"sent": True}, 4.0))
    states = [j["state"] for j in wrun(db, store.listing())]
    assert states == ["completed"] * 7  # ws and audit publish nowhere: the way ends


def test_a_changed_definition_is_a_new_version_and_the_same_one_is_not():
    db = Memory(WF_SCHEMA)
    wrun(db, store.put_pipeline(store.pipeline_record("chg", GRAPH)))
    assert wrun(db, store.put_pipeline(store.pipeline_record("chg", GRAPH)))["version"] == 1
    grown = insert(GRAPH, Stage("clean", "p.clean"), after="writer")
    assert wrun(db, store.put_pipeline(store.pipeline_record("chg", grown)))["version"] == 2
    wrun(db, store.publish("chg", [({"n": 1}, None)], 0.0))
    (job,) = take(db, "writer")
    wrun(db, store.complete(job["id"], {"n": 2}, 1.0))
    assert [j["payload"] for j in take(db, "clean")] == [{"n": 2}]


def test_publishing_to_an_unknown_pipeline_writes_nothing():
    db = Memory(WF_SCHEMA)
    with pytest.raises(InvalidInputError):
        wrun(db, store.publish("nope", [({"n": 1}, None)], 0.0))
    assert db.data["jobs"] == {}
