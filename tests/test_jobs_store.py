"""Host tests of the job store's transaction programs (workerbridge.jobs.store), driven
against test_storage_programs' in-memory model of IndexedDB with an injected clock."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime

import pytest

from test_storage_programs import Memory
from workerbridge import InvalidInputError, InvalidTypeError
from workerbridge.jobs import store
from workerbridge.jobs.claims import QueueLimits
from workerbridge.jobs.policy import Backoff, Fail, Retry, recovery_table
from workerbridge.jobs.store import JobSpec
from workerbridge.storage.idb import schema_from
from workerbridge.storage.query import key_of
from workerbridge.storage.schema import normalize_schema

# The stores as the browser creates them from store.SCHEMA_SPEC.
FULL_SCHEMA = schema_from(normalize_schema(store.SCHEMA_SPEC))
SCHEMA = {k: FULL_SCHEMA[k] for k in ("jobs", "meta")}
LIMITS = {"q": QueueLimits(concurrency=10)}
NO_JITTER = Backoff(base=1, factor=2, jitter=False)


@pytest.fixture
def db() -> Memory:
    return Memory(SCHEMA)


def run(db: Memory, program):
    return db.run(["jobs", "meta"], program)


def stored_job(db: Memory, ident: str) -> dict:
    return db.data["jobs"][key_of(ident)]


def add(db, *specs, now=0.0):
    counter = itertools.count(1)
    taken = {j["id"] for j in db.data["jobs"].values()}

    def make_id():
        while True:
            ident = f"j{next(counter)}"
            if ident not in taken:
                taken.add(ident)
                return ident

    return run(db, store.add(list(specs), now, make_id))


def spec(**kw) -> JobSpec:
    return JobSpec(**{"queue": "q", "handler": "text.word_count", "payload": {"n": 1}, **kw})


def test_add_is_durable_ordered_and_dedups_by_job_id(db):
    first = add(db, spec(), spec(id="fixed", payload={"n": 2}), spec(priority=5))
    assert [j["seq"] for j in first] == [1, 2, 3]
    assert db.data["meta"][key_of("seq")]["value"] == 3
    again = add(db, spec(id="fixed", payload={"n": 2}))
    assert again[0] == first[1] and len(db.data["jobs"]) == 3
    # Same id in one batch: one job.
    both = add(db, spec(id="twice"), spec(id="twice"))
    assert both[0]["id"] == both[1]["id"] == "twice" and len(db.data["jobs"]) == 4


def test_an_id_clash_with_another_payload_writes_nothing(db):
    add(db, spec(id="fixed"))
    before = copy.deepcopy(db.data)
    with pytest.raises(InvalidInputError, match="exists with another handler or payload"):
        add(db, spec(), spec(id="fixed", payload={"n": 99}))
    assert db.data == before


@pytest.mark.parametrize(("kw", "error"), [
    ({"payload": {1, 2}}, InvalidTypeError), ({"payload": {"x": object()}}, InvalidTypeError),
    ({"payload": float("nan")}, InvalidTypeError), ({"payload": {1: "a"}}, InvalidTypeError),
    ({"handler": "nodot"}, InvalidInputError), ({"delay": -1}, InvalidInputError),
    ({"attempts": 0}, InvalidInputError), ({"timeout": 0}, InvalidInputError),
    ({"priority": 1.5}, InvalidTypeError), ({"id": ""}, InvalidInputError),
])
def test_bad_jobs_are_refused_before_anything_is_written(kw, error):
    with pytest.raises(error):
        spec(**kw)


def test_bytes_and_json_payloads_are_accepted():
    assert spec(payload={"data": b"\x00\x01", "list": [1, 2.5, None, True, "s"]}).payload


def test_claims_take_due_jobs_in_order_and_lease_them(db):
    add(db, spec(), spec(priority=5), spec(delay=10))
    claimed = run(db, store.claim(1.0, "tab-a", 50.0, LIMITS))
    assert [j["priority"] for j in claimed.jobs] == [5, 0]
    for job in claimed.jobs:
        stored = stored_job(db, job["id"])
        assert (stored["state"], stored["owner"], stored["lease_until"], stored["attempt"]) == \
            ("active", "tab-a", 51.0, 1)
        assert stored["history"][0]["start"] == 1.0
    # Nothing else is due; the delayed one is taken once due, by whoever claims.
    assert run(db, store.claim(2.0, "tab-b", 5.0, LIMITS)).jobs == ()
    later = run(db, store.claim(10.0, "tab-b", 5.0, LIMITS))
    assert [j["owner"] for j in later.jobs] == ["tab-b"]


def test_concurrency_counts_jobs_leased_by_any_tab(db):
    add(db, *[spec() for _ in range(5)])
    limits = {"q": QueueLimits(concurrency=2)}
    assert len(run(db, store.claim(0, "a", 5, limits)).jobs) == 2
    assert run(db, store.claim(0, "b", 5, limits)).jobs == ()


def test_a_lease_that_ends_puts_the_job_back_and_its_attempt_shows_it(db):
    (job,) = add(db, spec(attempts=3))
    run(db, store.claim(0, "dead-tab", 2.0, LIMITS))
    assert run(db, store.claim(1.9, "b", 2.0, LIMITS)).jobs == ()  # still leased
    taken = run(db, store.claim(2.0, "b", 2.0, LIMITS))
    assert taken.stalled == (job["id"],)
    again = taken.jobs[0]
    assert (again["owner"], again["attempt"], again["stalls"]) == ("b", 2, 1)
    assert [h["error_type"] for h in again["history"]] == ["Stalled", None]


def test_a_tab_that_said_it_went_away_has_its_jobs_put_back_at_once(db):
    a, b = add(db, spec(attempts=1), spec())
    run(db, store.claim(0, "gone-tab", 60.0, {"q": QueueLimits(concurrency=1)}))
    run(db, store.claim(0, "live-tab", 60.0, LIMITS))
    taken = run(db, store.claim(2.0, "other", 60.0, LIMITS, gone={"gone-tab"}))
    assert taken.stalled == (a["id"],) and [j["id"] for j in taken.jobs] == [a["id"]]
    job = stored_job(db, a["id"])
    assert (job["attempt"], job["stalls"], [h["error_type"] for h in job["history"]]) == \
        (2, 0, ["Released", None])
    assert stored_job(db, b["id"])["owner"] == "live-tab"  # another tab's lease: kept


def test_renewing_keeps_the_lease_and_reports_lost_jobs(db):
    a, b = add(db, spec(), spec())
    run(db, store.claim(0, "me", 2.0, LIMITS))
    run(db, store.cancel(b["id"], 1.0))
    assert run(db, store.renew("me", [a["id"], b["id"], "gone"], 1.5, 2.0)) == [b["id"], "gone"]
    assert stored_job(db, a["id"])["lease_until"] == 3.5
    assert run(db, store.claim(3.0, "other", 2.0, LIMITS)).stalled == ()


def test_a_claim_reads_only_its_queues_first_jobs_through_the_claim_index(db):
    add(db, *[spec(queue="idle") for _ in range(300)], *[spec() for _ in range(300)])
    db.requests.clear()
    taken = run(db, store.claim(1.0, "a", 5.0, LIMITS, capacity=4, page=16))
    assert [j["seq"] for j in taken.jobs] == [301, 302, 303, 304]
    reads = [r for r in db.requests if r[0] == "all" and r[1] == "jobs"]
    assert reads and all(r[2] == store.CLAIM_INDEX and r[3]["lo"][0] == "q" for r in reads)
    assert [r[4] for r in reads] == [None, 16]  # the running jobs, then one page


def test_a_claim_reads_on_past_jobs_it_cannot_start(db):
    # 40 delayed jobs of a higher priority and 40 of one busy group come first in claim
    # order; the due job of another group behind them is still found, a page at a time.
    add(db, *[spec(priority=9, delay=100) for _ in range(40)],
        *[spec(priority=5, group="busy") for _ in range(40)], spec(group="free"))
    limits = {"q": QueueLimits(concurrency=10)}
    first = run(db, store.claim(1.0, "a", 5.0, limits, capacity=4, page=8))
    assert [j["group"] for j in first.jobs] == ["busy", "free"]
    db.requests.clear()
    assert run(db, store.claim(1.0, "a", 5.0, limits, capacity=4, page=8)).jobs == ()
    # Nothing it can start: it reads all 79 waiting jobs, 8 at a time (the running ones,
    # then 10 pages, the last not full).
    assert sum(1 for r in db.requests if r[0] == "all" and r[1] == "jobs") == 11


def test_per_tab_leaves_the_rest_to_other_tabs(db):
    add(db, *[spec() for _ in range(6)])
    limits = {"q": QueueLimits(concurrency=10, per_tab=2)}
    assert len(run(db, store.claim(0.0, "a", 50.0, limits)).jobs) == 2
    assert run(db, store.claim(1.0, "a", 50.0, limits)).jobs == ()  # a holds its two
    assert len(run(db, store.claim(1.0, "b", 50.0, limits)).jobs) == 2


def test_a_rate_limit_holds_across_tabs(db):
    add(db, *[spec() for _ in range(6)])
    limits = {"q": QueueLimits(concurrency=10, rate_limit=(2, 10.0))}
    assert len(run(db, store.claim(0.0, "a", 50.0, limits)).jobs) == 2
    assert run(db, store.claim(1.0, "b", 50.0, limits)).jobs == ()
    assert run(db, store.claim(9.9, "a", 50.0, limits)).jobs == ()
    assert len(run(db, store.claim(10.5, "b", 50.0, limits)).jobs) == 2


def test_an_older_database_is_migrated_once(db):
    add(db, spec(priority=3), spec())
    for key, job in db.data["jobs"].items():  # as written before the claim index
        db.data["jobs"][key] = {k: v for k, v in job.items() if k != "rank"}
    assert run(db, store.claim(1.0, "a", 5.0, LIMITS)).jobs == ()  # not in the index
    assert run(db, store.migrate()) is True
    assert run(db, store.migrate()) is False
    assert [j["priority"] for j in run(db, store.claim(1.0, "a", 5.0, LIMITS)).jobs] == [3, 0]


def test_complete_many_ends_several_jobs_in_one_transaction(db):
    a, b, c = add(db, spec(), spec(), spec())
    run(db, store.claim(0.0, "me", 5.0, LIMITS))
    run(db, store.cancel(c["id"], 0.5))
    before = db.transactions
    ended = run(db, store.complete_many([(a["id"], 1), (b["id"], {"x": b"\x01"}),
                                         (c["id"], 3)], 1.0))
    assert [bool(e) for e in ended] == [True, True, False] and db.transactions == before + 1
    assert [stored_job(db, i)["result"] for i in (a["id"], b["id"])] == [1, {"x": b"\x01"}]
    assert stored_job(db, c["id"])["state"] == "cancelled"
    snapshot = copy.deepcopy(db.data)
    with pytest.raises(InvalidTypeError):
        run(db, store.complete_many([(a["id"], 1), (b["id"], {1, 2})], 2.0))
    assert db.data == snapshot


def test_complete_stores_the_result_with_the_end_once(db):
    (job,) = add(db, spec())
    run(db, store.claim(0, "me", 5, LIMITS))
    assert run(db, store.complete(job["id"], {"words": 3}, 1.0, worker=2))
    stored = stored_job(db, job["id"])
    assert (stored["state"], stored["result"], stored["finished_at"]) == \
        ("completed", {"words": 3}, 1.0)
    assert stored["history"][-1]["end"] == 1.0 and stored["history"][-1]["worker"] == 2
    assert not run(db, store.complete(job["id"], {"words": 4}, 2.0))  # a duplicate run
    assert stored_job(db, job["id"])["result"] == {"words": 3}
    with pytest.raises(InvalidTypeError):
        run(db, store.complete(job["id"], object(), 2.0))


def test_failures_retry_by_backoff_then_fail(db):
    (job,) = add(db, spec(attempts=3, backoff=NO_JITTER))
    outcomes = []
    now = 0.0
    for _ in range(3):
        claimed = run(db, store.claim(now, "me", 5, LIMITS))
        assert len(claimed.jobs) == 1, now
        failure = run(db, store.fail(job["id"], ["KeyError", "LookupError", "Exception"],
                                     "boom", now + 0.5))
        outcomes.append((failure.decision.action, failure.decision.delay))
        now = failure.job["due_at"]
    assert outcomes == [("retry", 1.0), ("retry", 2.0), ("fail", 0.0)]
    stored = stored_job(db, job["id"])
    assert stored["state"] == "failed" and stored["error"]["type"] == "KeyError"
    assert [h["error_type"] for h in stored["history"]] == ["KeyError"] * 3


def test_the_recovery_table_decides_by_error_type(db):
    table = recovery_table({"PermissionError": Fail(), "TimeoutError": Retry(5, delay=0)})
    a, b = add(db, spec(attempts=1), spec(attempts=9))
    run(db, store.claim(0, "me", 5, LIMITS))
    retried = run(db, store.fail(a["id"], ["RequestTimeoutError", "WorkerBridgeError",
                                           "TimeoutError", "OSError", "Exception"], "", 1,
                                 [table]))
    ended = run(db, store.fail(b["id"], ["PermissionError", "OSError", "Exception"], "", 1,
                               [table]))
    assert (retried.decision.action, retried.job["state"], retried.job["due_at"]) == \
        ("retry", "waiting", 1)
    assert (ended.decision.action, ended.job["state"]) == ("fail", "failed")


def test_release_puts_running_jobs_back_without_counting_the_attempt(db):
    a, b = add(db, spec(), spec())
    run(db, store.claim(0, "me", 5, LIMITS))
    assert run(db, store.release("me", [a["id"], b["id"]], 1.0)) == [a["id"], b["id"]]
    stored = stored_job(db, a["id"])
    assert (stored["state"], stored["attempt"], stored["history"]) == ("waiting", 0, [])
    assert run(db, store.release("someone-else", [a["id"]], 1.0)) == []


def test_cancel_retry_remove_get_and_list(db):
    a, b, c = add(db, spec(), spec(priority=3), spec(queue="other"))
    assert run(db, store.cancel(a["id"], 1.0)) == "waiting"
    assert run(db, store.cancel(a["id"], 1.0)) == "cancelled"
    assert run(db, store.retry(a["id"], 2.0)) is True
    assert stored_job(db, a["id"])["state"] == "waiting"
    assert run(db, store.retry(b["id"], 2.0)) is False  # not ended
    assert [j["id"] for j in run(db, store.listing("q", "waiting"))] == [b["id"], a["id"]]
    assert [j["id"] for j in run(db, store.listing(None, None, limit=1))] == [b["id"]]
    run(db, store.claim(3.0, "me", 5, {"other": QueueLimits(1)}))
    assert run(db, store.remove(c["id"])) is False  # running: cancel it first
    assert run(db, store.remove(a["id"])) is True
    assert run(db, store.get([a["id"], b["id"]])) == [None, stored_job(db, b["id"])]
    with pytest.raises(InvalidInputError):
        run(db, store.listing("q", "sleeping"))


def test_two_tabs_claiming_in_turn_never_share_a_job(db):
    add(db, *[spec(group=f"g{i % 3}") for i in range(30)])
    limits = {"q": QueueLimits(concurrency=30, group_concurrency=30)}
    seen = []
    for turn in range(10):
        owner = "a" if turn % 2 else "b"
        seen += [j["id"] for j in run(db, store.claim(turn, owner, 100, limits, capacity=4)).jobs]
    assert len(seen) == len(set(seen)) == 30


def test_a_crashed_run_goes_back_at_once_without_using_an_attempt(db):
    (job,) = add(db, spec(attempts=2, backoff=NO_JITTER))
    run(db, store.claim(0.0, "me", 5, LIMITS))
    assert run(db, store.requeue(job["id"], 0.5, "WorkerCrashedError", 2)) == "waiting"
    (again,) = run(db, store.claim(0.5, "me", 5, LIMITS)).jobs
    assert again["attempt"] == 2  # the duplicate run shows
    # Its first real failure still has a retry left: the crash did not use it.
    assert run(db, store.fail(job["id"], ["KeyError"], "", 1.0)).decision.action == "retry"
    (job,) = add(db, spec(attempts=1, queue="crash"))
    for n in range(1, 4):
        run(db, store.claim(float(n) + 5, "me", 5, {"crash": QueueLimits(concurrency=1)}))
        assert run(db, store.requeue(job["id"], n + 5.5, "WorkerCrashedError", 2)) == \
            ("waiting" if n <= 2 else "failed")
    stored = stored_job(db, job["id"])
    assert stored["state"] == "failed" and stored["stalls"] == 3
    assert [h["error_type"] for h in stored["history"]] == ["WorkerCrashedError"] * 3
    assert run(db, store.requeue(job["id"], 9, "WorkerCrashedError", 2)) is None


# --- schedules -------------------------------------------------------------------------------

SCHED_SCHEMA = {**SCHEMA, "schedules": FULL_SCHEMA["schedules"]}
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def sdb() -> Memory:
    return Memory(SCHED_SCHEMA)


def srun(db: Memory, program):
    return db.run(["jobs", "meta", "schedules"], program)


def declare(db, name="tick", cron="*/10 * * * *", catch_up="skip", now=T0, **kw):
    from workerbridge.jobs.schedule import first_run

    nxt = first_run(cron, "UTC", datetime.fromtimestamp(now, UTC)).timestamp()
    rec = store.schedule_record(name, "cron", spec(**kw), nxt, now, cron=cron,
                                catch_up=catch_up, max_catch_up=3)
    return srun(db, store.put_schedule(rec))


def test_a_schedule_fires_each_run_once_whoever_asks(sdb):
    declare(sdb)
    assert srun(sdb, store.fire(T0 + 599)) == []  # 10:09:59: nothing due
    first = srun(sdb, store.fire(T0 + 600.5))
    assert first == [("tick", ["2026-01-01T10:10:00+00:00"])]
    assert srun(sdb, store.fire(T0 + 601)) == []  # the next tab finds it taken
    assert [j["id"] for j in sdb.data["jobs"].values()] == \
        ["schedule:tick:2026-01-01T10:10:00+00:00"]
    (row,) = sdb.data["schedules"].values()
    assert row["fired"] == 1 and row["next_run"] == T0 + 1200


def test_declaring_again_keeps_the_next_run(sdb):
    declare(sdb)
    declare(sdb, now=T0 + 300)  # a reload, five minutes later
    (row,) = sdb.data["schedules"].values()
    assert row["next_run"] == T0 + 600 and row["created_at"] == T0
    declare(sdb, cron="*/5 * * * *", now=T0 + 300)  # new timing: a new next run
    (row,) = sdb.data["schedules"].values()
    assert row["next_run"] == T0 + 600 and row["cron"] == "*/5 * * * *"


@pytest.mark.parametrize(("policy", "jobs"), [("skip", 0), ("once", 1), ("all", 3)])
def test_missed_runs_follow_the_catch_up_policy(sdb, policy, jobs):
    declare(sdb, catch_up=policy)
    # No tab for an hour: runs at 10:10 … 11:00 were missed (6), the page opens at 11:05.
    fired = srun(sdb, store.fire(T0 + 3900))
    assert len(fired[0][1]) == jobs
    assert len(sdb.data["jobs"]) == jobs
    (row,) = sdb.data["schedules"].values()
    assert row["dropped"] == 6 - jobs and row["next_run"] == T0 + 4200


def test_one_time_schedules_fire_once_and_stop(sdb):
    rec = store.schedule_record("once", "once", spec(), T0 + 60, T0, catch_up="once")
    srun(sdb, store.put_schedule(rec))
    assert srun(sdb, store.fire(T0 + 30)) == []
    assert srun(sdb, store.fire(T0 + 3600)) == [("once", ["2026-01-01T10:01:00+00:00"])]
    assert srun(sdb, store.fire(T0 + 7200)) == []
    assert len(sdb.data["jobs"]) == 1
    assert srun(sdb, store.drop_schedule("once")) is True
    assert srun(sdb, store.schedules()) == []


def test_retention_keeps_the_newest_or_the_young(db):
    jobs = add(db, *[spec() for _ in range(5)])
    for n, job in enumerate(jobs):
        run(db, store.claim(float(n), "me", 50, LIMITS))
        run(db, store.complete(job["id"], n, float(n) + 0.5))
    assert run(db, store.prune("q", "completed", 3, None, 10.0)) == 2
    assert sorted(stored_job(db, j["id"])["result"] for j in jobs[2:]) == [2, 3, 4]
    assert run(db, store.prune("q", "completed", None, 7.0, 10.0)) == 1  # ended at 2.5
    assert run(db, store.prune("other", "completed", 0, None, 10.0)) == 0
    with pytest.raises(InvalidInputError):
        run(db, store.prune("q", "active", 0, None, 10.0))


def test_metrics_count_states_retries_and_run_times(db):
    jobs = add(db, spec(), spec(), spec(attempts=2, backoff=NO_JITTER), spec(delay=100))
    run(db, store.claim(0.0, "me", 50, LIMITS))
    run(db, store.complete(jobs[0]["id"], 1, 2.0))
    run(db, store.complete(jobs[1]["id"], 1, 4.0))
    run(db, store.fail(jobs[2]["id"], ["KeyError"], "", 1.0))
    rows = run(db, store.listing())
    m = store.metrics_of(rows, now=30.0)["q"]
    assert (m["completed"], m["waiting"], m["delayed"], m["active"]) == (2, 1, 1, 0)
    assert m["retried"] == 0  # its retry has not run yet
    assert m["run_time_mean"] == 3.0 and m["run_time_p95"] == 4.0
    assert m["throughput_per_minute"] == 2.0


# --- workflows -------------------------------------------------------------------------------

WF_SCHEMA = FULL_SCHEMA
STEPS = [store.StepSpec("validate", "inv.validate"), store.StepSpec("charge", "inv.charge", 2),
         store.StepSpec("notify", "inv.notify")]
WF_LIMITS = {"workflow:inv": QueueLimits(concurrency=5)}


@pytest.fixture
def wdb() -> Memory:
    return Memory(WF_SCHEMA)


def wrun(db: Memory, program):
    return db.run(["jobs", "meta", "schedules", "workflows"], program)


def start(db, wf_id="w1", data=None):
    record = store.workflow_record(wf_id, "inv", "workflow:inv", STEPS, data or {"n": 0}, 0.0)
    return wrun(db, store.start_workflow(record, 0.0))


def run_step(db, now, result):
    (job,) = wrun(db, store.claim(now, "me", 50, WF_LIMITS)).jobs
    return job, wrun(db, store.complete(job["id"], result, now + 0.5))


def test_a_workflow_goes_step_by_step_each_result_the_next_input(wdb):
    start(wdb)
    assert start(wdb, data={"other": 1})["input"] == {"n": 0}  # the same id: the same one
    job, ended = run_step(wdb, 1.0, {"n": 1})
    assert job["id"] == "workflow:w1:0" and job["workflow"]["step"] == "validate"
    assert ended.workflow == {"id": "w1", "name": "inv", "state": "running"}
    job, _ = run_step(wdb, 2.0, {"n": 2})
    assert job["payload"] == {"n": 1} and job["attempts"] == 2
    job, ended = run_step(wdb, 3.0, {"n": 3})
    assert job["payload"] == {"n": 2}
    assert ended.workflow["state"] == "completed"
    wf = wrun(wdb, store.get_workflow("w1"))
    assert wf["result"] == {"n": 3} and [s["state"] for s in wf["steps"]] == ["done"] * 3
    assert [s["result"] for s in wf["steps"]] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_finished_step_is_never_run_again(wdb):
    start(wdb)
    job, _ = run_step(wdb, 1.0, {"n": 1})
    # A duplicate run of step 0 (its tab had lost the lease) finishes later: ignored.
    assert not wrun(wdb, store.complete(job["id"], {"n": 99}, 5.0))
    jobs = wrun(wdb, store.listing())
    assert sorted(j["id"] for j in jobs) == ["workflow:w1:0", "workflow:w1:1"]
    assert wrun(wdb, store.get_workflow("w1"))["steps"][0]["result"] == {"n": 1}


def test_a_step_that_fails_for_good_fails_its_workflow(wdb):
    start(wdb)
    run_step(wdb, 1.0, {"n": 1})
    (job,) = wrun(wdb, store.claim(2.0, "me", 50, WF_LIMITS)).jobs
    first = wrun(wdb, store.fail(job["id"], ["KeyError"], "", 2.5))
    assert first.decision.action == "retry" and first.workflow is None
    (job,) = wrun(wdb, store.claim(100.0, "me", 50, WF_LIMITS)).jobs
    last = wrun(wdb, store.fail(job["id"], ["KeyError"], "", 100.5))
    assert last.decision.action == "fail" and last.workflow["state"] == "failed"
    wf = wrun(wdb, store.get_workflow("w1"))
    assert [s["state"] for s in wf["steps"]] == ["done", "failed", "pending"]
    assert wf["error"]["type"] == "KeyError"
