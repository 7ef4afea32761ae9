"""Host tests of code workflows: the body's replay (workerbridge.jobs.flow) and how the
store goes on with it (store.complete on a code workflow's jobs)."""

from __future__ import annotations

import pytest

from conftest import run
from test_jobs_store import WF_SCHEMA, wrun
from test_storage_programs import Memory
from workerbridge import InvalidInputError, WorkflowError
from workerbridge.jobs import store
from workerbridge.jobs.claims import QueueLimits
from workerbridge.jobs.flow import Flow, replay
from workerbridge.jobs.policy import Retry

RAN: list[str] = []


async def invoice(w: Flow, data: dict) -> dict:
    RAN.append("body")
    checked = await w.step("validate", "inv.validate", data)
    try:
        await w.sleep(30)
    except Exception:  # a body's own handler must not swallow the stop
        RAN.append("swallowed")
    charged = await w.step("charge", "inv.charge", checked, retry=Retry(3, delay=2))
    return {"charged": charged}


def go(done: list[dict]) -> dict:
    return run(replay(invoice, "w1", {"n": 1}, done))


def test_the_body_stops_at_its_first_unfinished_checkpoint():
    first = go([])
    assert first == {"kind": "step", "name": "validate", "handler": "inv.validate",
                     "payload": {"n": 1}, "attempts": 1, "timeout": None,
                     "backoff": {"base": 1.0, "factor": 2.0, "max": 60.0, "jitter": True}}
    validated = {"kind": "step", "name": "validate", "result": {"ok": 1}}
    assert go([validated]) == {"kind": "sleep", "name": "sleep", "seconds": 30.0}
    slept = {"kind": "sleep", "name": "sleep", "result": None}
    third = go([validated, slept])
    assert (third["name"], third["payload"], third["attempts"]) == ("charge", {"ok": 1}, 3)
    assert third["backoff"] == {"base": 2.0, "factor": 1.0, "max": 2.0, "jitter": False}
    charged = {"kind": "step", "name": "charge", "result": 7}
    assert go([validated, slept, charged]) == {"kind": "done", "result": {"charged": 7}}
    assert "swallowed" not in RAN


def test_a_body_that_calls_other_steps_on_replay_is_refused():
    with pytest.raises(WorkflowError, match="same order"):
        go([{"kind": "step", "name": "charge", "result": 1}])


def test_a_bad_step_fails_in_the_body():
    async def bad(w: Flow, data: object) -> None:
        await w.step("x", "not a handler", data)

    with pytest.raises(InvalidInputError):
        run(replay(bad, "w", None, []))
    with pytest.raises(InvalidInputError):
        run(replay(lambda w, d: w.sleep(-1), "w", None, []))


LIMITS = {"workflow:inv": QueueLimits(concurrency=5)}


def claim_one(db: Memory, now: float) -> dict:
    (job,) = wrun(db, store.claim(now, "me", 50, LIMITS)).jobs
    return job


def test_the_store_runs_a_code_workflow_step_by_step_and_sleeps_durably():
    db = Memory(WF_SCHEMA)
    record = store.workflow_record("w1", "inv", "workflow:inv", None, {"n": 1}, 0.0)
    wrun(db, store.start_workflow(record, 0.0))
    now = 1.0
    seen = []
    while True:
        job = claim_one(db, now)
        seen.append(job["id"])
        if job["handler"] == "workflow.inv":  # a run of the body, on the results so far
            out = run(replay(invoice, "w1", job["payload"]["input"],
                                     job["payload"]["done"]))
        else:
            out = {"steps": job["payload"], "by": job["workflow"]["step"]}
        ended = wrun(db, store.complete(job["id"], out, now))
        if ended.workflow["state"] != "running":
            break
        # A duplicate run of the same job (after a crash) changes nothing.
        assert not wrun(db, store.complete(job["id"], out, now))
        if out.get("kind") == "sleep":
            assert wrun(db, store.claim(now + 29, "me", 50, LIMITS)).jobs == ()
            now += 30
        now += 1
    assert seen == ["workflow:w1:run:0", "workflow:w1:0", "workflow:w1:run:1",
                    "workflow:w1:run:2", "workflow:w1:2", "workflow:w1:run:3"]
    wf = wrun(db, store.get_workflow("w1"))
    assert wf["state"] == "completed"
    assert wf["result"] == {"charged": {"steps": {"steps": {"n": 1}, "by": "validate"},
                                        "by": "charge"}}
    assert [(s["kind"], s["name"], s["state"]) for s in wf["steps"]] == [
        ("step", "validate", "done"), ("sleep", "sleep", "done"), ("step", "charge", "done")]
    charge = db.data["jobs"][next(k for k in db.data["jobs"] if k[1] == "workflow:w1:2")]
    assert charge["attempts"] == 3


def test_a_failing_body_fails_its_workflow():
    db = Memory(WF_SCHEMA)
    record = store.workflow_record("w2", "inv", "workflow:inv", None, None, 0.0)
    wrun(db, store.start_workflow(record, 0.0))
    job = claim_one(db, 1.0)
    failure = wrun(db, store.fail(job["id"], ["WorkflowError"], "diverged", 2.0))
    assert failure.workflow == {"id": "w2", "name": "inv", "state": "failed"}
    assert wrun(db, store.get_workflow("w2"))["steps"] == []
