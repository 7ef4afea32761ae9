"""Durable jobs in real Chromium: real IndexedDB, real workers, real reloads, real kills.

Each test uses a database of its own. The page's Python drives ``workerbridge.jobs``; the
handlers are in pages/jobwork.py.
"""

from __future__ import annotations

import itertools
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import PAGE_HELPERS, Harness
from job_kills import run_kills

SETUP = """
import asyncio, js, time
from workerbridge import WorkerBridge, Backoff, Retry, Fail
from workerbridge.jobs import engine as _engine
OPEN_JOBS = []

def Jobs(*args, **kwargs):
    # every engine a test makes, so that the test's end can stop its loops
    jobs = _engine.Jobs(*args, **kwargs)
    OPEN_JOBS.append(jobs)
    return jobs

B = WorkerBridge(workers=WORKERS, modules=["./jobwork.py"], fallback="never")
await B.start()
await B.pool.wait_all_ready()
"""


def page(context: Any, origin: str, workers: int = 2) -> Harness:
    h = Harness(context.new_page(), origin)
    h.py(PAGE_HELPERS + SETUP.replace("WORKERS", str(workers)))
    return h


@pytest.fixture(scope="module")
def ctx(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture(scope="module")
def h(ctx: Any, server: str) -> Harness:
    return page(ctx, server)


@pytest.fixture(autouse=True)
def stop_engines(h: Harness) -> Iterator[None]:
    """Each test's job engines stop claiming when it ends (their loops would otherwise
    go on polling their databases through the rest of the module)."""
    yield
    h.py("""
        for jobs in OPEN_JOBS:
            await jobs.close(timeout=0)
        OPEN_JOBS.clear()
    """)


def test_a_job_runs_in_a_worker_and_its_result_is_stored(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-basic")
        await J.queue("q", concurrency=2)
        job = await J.add("q", "work.echo", {"x": 1, "data": b"\\x00\\xff"})
        result = await job.result(timeout=30)
        status = await job.status()
        plain = await B.request("work", "echo", {"y": 2})
        [job.id, result["job"], result["payload"]["data"].hex(), status["state"],
         status["attempt"], len(status["history"]), plain["job"]]
    """)
    ident, seen, data, state, attempt, runs, plain_job = got
    assert seen == {"id": ident, "queue": "q", "attempt": 1}
    assert data == "00ff" and state == "completed" and attempt == 1 and runs == 1
    assert plain_job is None  # a plain call is no job


def test_dedup_by_job_id_and_refusals_write_nothing(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-dedup")
        a = await J.add("q", "work.echo", {"n": 1}, job_id="order-7")
        b = await J.add("q", "work.echo", {"n": 1}, job_id="order-7")
        errors = [await failure(J.add("q", "work.echo", {"n": 2}, job_id="order-7")),
                  await failure(J.add("q", "work.nothing", {})),
                  await failure(J.add("q", "work.echo", {"s": {1, 2}})),
                  await failure(J.add("q", "work.echo", {}, delay=-1)),
                  await failure(J.add("q", "work.echo", {}, attempts=0))]
        listed = await J.list()
        [a.id, b.id, [e[0] for e in errors], len(listed)]
    """)
    assert got[0] == got[1] == "order-7"
    assert got[2] == ["InvalidInputError", "UnknownOperationError", "InvalidTypeError",
                      "InvalidInputError", "InvalidInputError"]
    assert got[3] == 1


def test_retries_and_recovery_by_error_type(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-recovery")
        J.recovery({"KeyError": Retry(3, delay=0.05), PermissionError: Fail()})
        await J.queue("q", concurrency=3)
        ok = await J.add("q", "work.flaky", {"error": "KeyError", "until": 3})
        denied = await J.add("q", "work.flaky", {"error": "PermissionError", "secret": "s3cr3t"},
                             attempts=5)
        plain = await J.add("q", "work.flaky", {"error": "ValueError"}, attempts=2,
                            backoff=Backoff(base=0.05, jitter=False))
        first = await ok.result(timeout=30)
        errs = [await failure(denied.result(timeout=30)), await failure(plain.result(timeout=30))]
        states = [await x.status() for x in (ok, denied, plain)]
        [first, errs, [[h["error_type"] for h in s["history"]] for s in states],
         [s["state"] for s in states]]
    """)
    first, errs, histories, states = got
    assert first == {"attempt": 3}
    assert histories == [["KeyError", "KeyError", None], ["PermissionError"],
                         ["ValueError", "ValueError"]]
    assert states == ["completed", "failed", "failed"]
    assert errs[0][0] == "RemoteError" and "PermissionError" in errs[0][1]
    assert "s3cr3t" not in errs[0][1]  # the handler's message quoted the payload: kept out
    assert errs[1][0] == "RemoteError"


def test_a_timeout_stops_running_code_and_counts_as_a_failed_attempt(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-timeout")
        await J.queue("q")
        t0 = time.monotonic()
        job = await J.add("q", "work.spin", {"seconds": 60}, timeout=0.5, attempts=2,
                          backoff=Backoff(base=0.05, jitter=False))
        err = await failure(job.result(timeout=60))
        took = time.monotonic() - t0
        status = await job.status()
        after = await B.request("work", "echo", {"z": 1})  # the pool still serves
        [err[0], took, [h["error_type"] for h in status["history"]], after["payload"]]
    """)
    assert got[0] == "RequestTimeoutError"
    assert got[1] < 20, "the spinning handler was not stopped"
    assert got[2] == ["RequestTimeoutError", "RequestTimeoutError"]
    assert got[3] == {"z": 1}


def test_a_job_whose_worker_crashed_runs_again_within_a_second(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-crash")
        await J.queue("q")
        job = await J.add("q", "work.crash_once", {}, attempts=1)
        result = await job.result(timeout=60)
        status = await job.status()
        [result, status["history"], status["stalls"]]
    """)
    result, history, stalls = got
    assert result["attempt"] == 2  # the duplicate run shows
    assert [h["error_type"] for h in history] == ["WorkerCrashedError", None]
    assert stalls == 1
    assert history[1]["start"] - history[0]["end"] < 1.0


def test_groups_run_one_at_a_time_per_key(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-groups", capacity=4)
        await J.queue("g", concurrency=4, group_concurrency=1)
        jobs = await J.add_bulk([{"queue": "g", "handler": "work.span",
                                  "payload": {"seconds": 0.15, "group": k}, "group": k}
                                 for k in ["a"] * 4 + ["b"] * 2])
        [await j.result(timeout=30) for j in jobs]
    """)
    for key in ("a", "b"):
        spans = sorted((r["start"], r["end"]) for r in got if r["group"] == key)
        assert all(s2 >= e1 for (_, e1), (s2, _) in itertools.pairwise(spans)), spans
    a = sorted((r["start"], r["end"]) for r in got if r["group"] == "a")
    b = sorted((r["start"], r["end"]) for r in got if r["group"] == "b")
    assert b[0][0] < a[0][1] or a[0][0] < b[0][1], "the two groups never ran side by side"


def test_jobs_added_before_a_reload_run_after_it(ctx: Any, server: str):
    first = page(ctx, server)
    ids = first.py("""
        J = Jobs(B.pool, db="t-reload")   # no queue declared here: nothing runs yet
        jobs = await J.add_bulk([{"queue": "later", "handler": "work.echo",
                                  "payload": {"n": i}} for i in range(20)])
        [j.id for j in jobs]
    """)
    first.page.reload()
    first.page.wait_for_function("window.pyReady === true", timeout=120_000)
    first.py(PAGE_HELPERS + SETUP.replace("WORKERS", "2"))
    got = first.py(f"""
        J = Jobs(B.pool, db="t-reload")
        await J.queue("later", concurrency=4)
        results = [await (await J.get(i)).result(timeout=60) for i in {ids!r}]
        [r["payload"]["n"] for r in results]
    """)
    assert got == list(range(20))
    first.page.close()


def test_another_tab_takes_over_a_job_whose_tab_crashed(ctx: Any, server: str):
    a = page(ctx, server)
    ident = a.py("""
        J = Jobs(B.pool, db="t-failover", lease=1.5)
        await J.queue("x")
        job = await J.add("x", "work.span", {"seconds": 600})
        while (await job.status())["state"] != "active":
            await asyncio.sleep(0.05)
        job.id
    """)
    b = page(ctx, server)
    # The tab closes as a crashed one would: without letting its jobs go (its pagehide
    # listener removed), so its lease has to end before another tab takes the job. (A
    # tab that closes normally lets them go at once: the next test. CDP's Page.crash
    # never returned here.)
    a.py("js.window.removeEventListener('pagehide', J._lifecycle)")
    a.page.close()
    got = b.py(f"""
        t0 = time.monotonic()
        J = Jobs(B.pool, db="t-failover", lease=1.5)
        await J.queue("x")
        job = await J.get({ident!r})
        while (await job.status())["attempt"] < 2:
            await asyncio.sleep(0.05)
        taken = time.monotonic() - t0
        await job.cancel()
        status = await job.status()
        [taken, status["state"], [h["error_type"] for h in status["history"]]]
    """)
    taken, state, history = got
    # The lease (1.5 s) ends at most 1.5 s after the last renewal; within 2 s of that the
    # other tab runs it.
    assert taken < 1.5 + 2.0, taken
    assert history[0] == "Stalled" and state == "cancelled"
    b.page.close()


RUN_LONG = """
J = Jobs(B.pool, db="DB", lease=60)
await J.queue("x")
job = await J.add("x", "work.span", {"seconds": SECONDS})
while (await job.status())["state"] != "active":
    await asyncio.sleep(0.05)
job.id
"""

TAKEN_HERE = """
t0 = time.monotonic()
J = Jobs(B.pool, db="DB", lease=60)
await J.queue("x")
job = await J.get(IDENT)
while (await job.status())["owner"] != J.owner and time.monotonic() - t0 < 20:
    await asyncio.sleep(0.05)
status = await job.status()
[time.monotonic() - t0, status["owner"] == J.owner, status["attempt"],
 [h["error_type"] for h in status["history"]]]
"""


def test_a_reloaded_tab_puts_its_running_jobs_back_at_once(ctx: Any, server: str):
    tab = page(ctx, server)
    ident = tab.py(RUN_LONG.replace("DB", "t-hide").replace("SECONDS", "600"))
    tab.page.reload()  # pagehide: the lease (60 s) is given back, not left to run out
    tab.page.wait_for_function("window.pyReady === true", timeout=120_000)
    tab.py(PAGE_HELPERS + SETUP.replace("WORKERS", "2"))
    taken, mine, attempt, runs = tab.py(TAKEN_HERE.replace("DB", "t-hide")
                                        .replace("IDENT", repr(ident)))
    # Taken at the first claim after the reload; with the lease left to run out, it would
    # wait 60 s (the loop gives up at 20). The run the reload cut short is in the history
    # but is not counted as a stall.
    assert mine and taken < 10, taken
    assert (attempt, runs) == (2, ["Released", None]), (attempt, runs)
    tab.py("await job.cancel()")
    tab.page.close()


def test_an_add_in_one_tab_wakes_the_claim_loop_of_another(ctx: Any, server: str,
                                                            h: Harness):
    other = page(ctx, server)
    other.py('J = Jobs(B.pool, db="t-wake", poll=60)\nawait J.queue("w")')
    got = h.py("""
        J = Jobs(B.pool, db="t-wake")  # adds only: this tab declares no queue
        t0 = time.monotonic()
        result = await (await J.add("w", "work.echo", {"n": 1})).result(timeout=30)
        [time.monotonic() - t0, result["payload"]]
    """)
    # The other tab polls only once a minute: its BroadcastChannel woke it.
    assert got[0] < 10 and got[1] == {"n": 1}, got
    other.page.close()


def test_each_run_of_a_schedule_fires_once_with_three_tabs_open(ctx: Any, server: str):
    tabs = [page(ctx, server, workers=1) for _ in range(3)]
    for tab in tabs:  # every tab declares the same schedule, as every page load would
        tab.py("""
            J = Jobs(B.pool, db="t-cron", poll=0.05)
            await J.queue("ticks", concurrency=3)
            info = await J.schedule("tick", cron="* * * * * *", handler="work.echo",
                                    queue="ticks", payload={"tick": True})
        """)
    time.sleep(4.0)
    # Stop the schedule first: a fire that committed before it is recorded in its tab's
    # list once the transaction's answer reaches Python, well within the pause.
    tabs[0].py("""
        await J.unschedule("tick")
        await asyncio.sleep(1.0)
    """)
    fired = [tab.py("[run for name, run in J.fired]") for tab in tabs]
    stored = tabs[0].py("""[j["id"] for j in await J.list("ticks")]""")
    runs = [run for f in fired for run in f]
    assert len(runs) >= 3, fired
    assert len(runs) == len(set(runs)), "a run was fired twice"
    # Every job the schedule added was fired by exactly one tab, and each run made one.
    assert sorted(stored) == sorted(f"schedule:tick:{run}" for run in runs)
    assert sum(1 for f in fired if f) >= 1
    for tab in tabs:
        tab.page.close()


def test_missed_runs_are_caught_up_by_policy(h: Harness):
    got = h.py("""
        from datetime import datetime, timezone
        start = datetime(2026, 1, 1, 10, 30, tzinfo=timezone.utc).timestamp()
        T = [start]
        out = {}
        for policy in ("all", "once", "skip"):
            T[0] = start
            J = Jobs(B.pool, db=f"t-catchup-{policy}", clock=lambda: T[0], poll=0.05)
            await J.schedule("hourly", cron="0 * * * *", handler="work.echo", queue="h",
                             catch_up=policy)
            # No tab from 10:30 to 15:45: the runs at 11:00 … 15:00 were missed.
            T[0] = start + 5.25 * 3600
            for _ in range(200):
                sched = (await J.schedules())[0]
                if sched["fired"] + sched["dropped"] >= 5:
                    break
                await asyncio.sleep(0.05)
            sched = (await J.schedules())[0]
            out[policy] = [sched["fired"], sched["dropped"], len(await J.list("h"))]
            await J.close(timeout=0)
        out
    """)
    assert got == {"all": [5, 0, 5], "once": [1, 4, 1], "skip": [0, 5, 0]}


def test_bad_schedules_are_refused_and_write_nothing(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-badsched")
        errs = [await failure(J.schedule("x", cron="61 * * * *", handler="work.echo", queue="q")),
                await failure(J.schedule("x", cron="* * * * *", tz="Mars/Base", handler="work.echo", queue="q")),
                await failure(J.schedule("x", cron="* * * * *", handler="work.none", queue="q")),
                await failure(J.schedule("x", cron="* * * * *", handler="work.echo", queue="q", catch_up="some")),
                await failure(J.schedule_once("y", at=-5, handler="work.echo", queue="q"))]
        [[e[0] for e in errs], await J.schedules()]
    """)
    assert got == [["InvalidInputError", "InvalidInputError", "UnknownOperationError",
                    "InvalidInputError", "InvalidInputError"], []]


def test_events_reach_every_tab_after_the_commit(ctx: Any, server: str, h: Harness):
    other = page(ctx, server, workers=1)
    other.py("""
        SEEN = []
        W = Jobs(B.pool, db="t-events")
        for name in ("added", "active", "completed", "failed", "retrying", "progress"):
            W.on(name, lambda e: SEEN.append([e["event"], e.get("id"), e.get("error_type")]))
    """)
    got = h.py("""
        J = Jobs(B.pool, db="t-events")
        LOCAL = []
        off = J.on("completed", lambda e: LOCAL.append(e["id"]))
        await J.queue("q", concurrency=2)
        ok = await J.add("q", "work.echo", {"n": 1})
        bad = await J.add("q", "work.flaky", {"error": "KeyError"}, attempts=2,
                          backoff=Backoff(base=0.01, jitter=False))
        await ok.result(timeout=30)
        await failure(bad.result(timeout=30))
        # the record is committed before the event: a listener can read it
        state = (await ok.status())["state"]
        off()
        await J.add("q", "work.echo", {"n": 2})
        await asyncio.sleep(0.5)
        [ok.id, bad.id, LOCAL, state]
    """)
    ok, bad, local, state = got
    assert local == [ok] and state == "completed"
    seen = other.py("""
        for _ in range(100):
            if any(e[0] == "failed" for e in SEEN):
                break
            await asyncio.sleep(0.05)
        SEEN
    """)
    mine = [e for e in seen if e[1] in (ok, bad)]
    assert ["added", ok, None] in mine and ["active", ok, None] in mine
    assert ["completed", ok, None] in mine
    assert ["retrying", bad, "KeyError"] in mine and ["failed", bad, "KeyError"] in mine
    assert mine.index(["added", ok, None]) < mine.index(["completed", ok, None])
    other.page.close()


def test_metrics_health_and_retention(h: Harness):
    got = h.py("""
        J = Jobs(B.pool, db="t-metrics", capacity=2)
        await J.queue("m", concurrency=2, remove_on_complete=3, remove_on_fail={"count": 1})
        jobs = await J.add_bulk([{"queue": "m", "handler": "work.span",
                                  "payload": {"seconds": 0.05}} for _ in range(6)])
        bad = await J.add_bulk([{"queue": "m", "handler": "work.flaky",
                                 "payload": {"error": "ValueError"}} for _ in range(2)])
        later = await J.add("m", "work.echo", {}, delay=3600)
        for j in jobs:
            await j.result(timeout=30)
        for j in bad:
            await failure(j.result(timeout=30))
        await asyncio.sleep(0.5)
        metrics = await J.metrics()
        health = await J.health()
        strict = await J.health(max_waiting=-1)
        [metrics["queues"]["m"], metrics["workers"], health, strict]
    """)
    m, workers, health, strict = got
    assert (m["completed"], m["failed"], m["delayed"], m["waiting"]) == (3, 1, 1, 0)
    assert m["run_time_mean"] is not None and m["run_time_p95"] >= m["run_time_mean"] > 0.04
    assert m["throughput_per_minute"] >= 3
    assert workers == 2 and health == {"status": "healthy", "reasons": []}
    assert strict["status"] == "degraded" and "jobs waiting" in strict["reasons"][0]


WORKFLOW = """
from workerbridge.jobs.engine import Step
DONE = []
J = Jobs(B.pool, db="t-wf", lease=1.5)
J.workflow("invoice", [Step("validate", "work.step"),
                       Step("charge", "work.step", retry=Retry(2, delay=0.1)),
                       Step("notify", "work.step")],
           on_success=lambda e: DONE.append(e["id"]))
"""

EXECUTIONS_JS = """async () => {
    const keys = await (await caches.open("wf-exec")).keys();
    const counts = {};
    for (const k of keys) {
        const job = decodeURIComponent(new URL(k.url).pathname.split("/")[2]);
        counts[job] = (counts[job] || 0) + 1;
    }
    return counts;
}"""


def test_a_workflow_resumes_after_a_reload_and_never_reruns_a_finished_step(ctx: Any,
                                                                            server: str):
    tab = page(ctx, server)
    tab.py(WORKFLOW + textwrap.dedent("""
        wf = await J.start_workflow("invoice", {"slow_step": "charge", "slow": 3},
                                    workflow_id="inv-1")
        while (await wf.status())["steps"][1].get("job") != "active":
            await asyncio.sleep(0.05)
    """))
    tab.page.reload()  # in the middle of "charge"
    tab.page.wait_for_function("window.pyReady === true", timeout=120_000)
    tab.py(PAGE_HELPERS + SETUP.replace("WORKERS", "2"))
    got = tab.py(WORKFLOW + textwrap.dedent("""
        wf = await J.start_workflow("invoice", {"other": "input"}, workflow_id="inv-1")
        result = await wf.result(timeout=60)
        status = await wf.status()
        for _ in range(40):
            if DONE:
                break
            await asyncio.sleep(0.05)
        [result, status, DONE]
    """))
    result, status, done = got
    assert result["trail"] == ["validate", "charge", "notify"]
    assert result["slow_step"] == "charge"  # the first start's input: the id found it
    assert status["state"] == "completed"
    assert [s["state"] for s in status["steps"]] == ["done", "done", "done"]
    assert done == ["inv-1"]
    runs = tab.js(EXECUTIONS_JS)
    # The step that was running when the page went away ran again; the finished one never.
    assert runs == {"workflow:inv-1:0": 1, "workflow:inv-1:1": 2, "workflow:inv-1:2": 1}
    tab.page.close()


def test_a_code_workflow_sleeps_durably_through_a_reload(ctx: Any, server: str):
    tab = page(ctx, server)
    declare = 'J = Jobs(B.pool, db="t-wf-code", lease=1.5)\nJ.workflow("invoice-code")\n'
    slept_at = tab.py(declare + textwrap.dedent("""
        wf = await J.start_workflow("invoice-code", {"nap": 2.5}, workflow_id="code-1")
        while len((await J._tx(_engine.store.get_workflow("code-1"), "readonly"))["steps"]) < 2:
            await asyncio.sleep(0.05)
        time.time()
    """))
    tab.page.reload()  # while it sleeps
    tab.page.wait_for_function("window.pyReady === true", timeout=120_000)
    tab.py(PAGE_HELPERS + SETUP.replace("WORKERS", "2"))
    got = tab.py(declare + textwrap.dedent("""
        wf = await J.start_workflow("invoice-code", {"other": 1}, workflow_id="code-1")
        result = await wf.result(timeout=60)
        record = await J._tx(_engine.store.get_workflow("code-1"), "readonly")
        charge = await J._record("workflow:code-1:2")
        [result, [(s["kind"], s["name"], s["state"]) for s in record["steps"]],
         record["steps"][1]["wake_at"], charge["history"][0]["start"],
         await failure(J.start_workflow("nope-code", {})),
         await failure(B.request("workflow", "invoice-code", {}))]
    """))
    result, steps, wake_at, charge_start, undeclared, as_call = got
    assert result["trail"] == ["validate", "charge", "notify"] and result["nap"] == 2.5
    assert steps == [["step", "validate", "done"], ["sleep", "sleep", "done"],
                     ["step", "charge", "done"], ["step", "notify", "done"]]
    assert wake_at >= slept_at + 2.0 and charge_start >= wake_at
    runs = {k: v for k, v in tab.js(EXECUTIONS_JS).items() if k.startswith("workflow:code-1")}
    assert runs == {"workflow:code-1:0": 1, "workflow:code-1:2": 1, "workflow:code-1:3": 1}
    assert undeclared[0] == "InvalidInputError" and as_call[0] == "InvalidInputError"
    tab.page.close()


def test_a_failed_step_fails_its_workflow(h: Harness):
    got = h.py("""
        from workerbridge.jobs.engine import Step
        ERR = []
        J = Jobs(B.pool, db="t-wf-fail")
        J.workflow("w", [Step("a", "work.step"), Step("b", "work.step")],
                   on_error=lambda e: ERR.append(e["id"]))
        wf = await J.start_workflow("w", {"fail_step": "b"})
        err = await failure(wf.result(timeout=30))
        status = await wf.status()
        for _ in range(40):
            if ERR:
                break
            await asyncio.sleep(0.05)
        [err[0], [s["state"] for s in status["steps"]], status["state"], ERR == [wf.id],
         await failure(J.start_workflow("nope", {}))]
    """)
    assert got[0] == "RemoteError"
    assert got[1] == ["done", "failed"] and got[2] == "failed" and got[3] is True
    assert got[4][0] == "InvalidInputError"


PIPELINE = """
from workerbridge.jobs.graph import Stage
J = Jobs(B.pool, db="t-pipe", lease=1.5)
P = await J.pipeline("flow", [Stage("a", "pipe.step", concurrency=2, prefetch=1),
                              Stage("b", "pipe.step"),
                              Stage("c", "pipe.step"), Stage("d", "pipe.step")],
                     branches={"b": ["c", "d"], "c": []})
"""


def test_a_pipeline_with_a_branch_loses_nothing_through_a_reload(ctx: Any, server: str):
    tab = page(ctx, server)
    tab.py(PIPELINE + textwrap.dedent("""
        await P.publish_many([{"n": n, "sleep": 0.02} for n in range(40)],
                             keys=[f"e{n}" for n in range(40)])
        while (await P.metrics())["a"]["done"] < 10:
            await asyncio.sleep(0.02)
    """))
    tab.page.reload()  # mid-stream
    tab.page.wait_for_function("window.pyReady === true", timeout=120_000)
    tab.py(PAGE_HELPERS + SETUP.replace("WORKERS", "2"))
    got = tab.py(PIPELINE + textwrap.dedent("""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = await P.metrics()
            if all(s["waiting"] == 0 and s["running"] == 0 for s in m.values()):
                break
            await asyncio.sleep(0.1)
        ends = {}
        for stage in ("c", "d"):
            rows = await J._tx(_engine.store.listing(f"pipeline:flow:{stage}", "completed"),
                               "readonly")
            ends[stage] = sorted((r["result"]["n"], r["result"]["trail"]) for r in rows)
        [m, ends, P.version, await P.dead_letters(), await failure(P.publish({"n": 1}, key="")),
         J._queues["pipeline:flow:a"].per_tab]
    """))
    metrics, ends, version, dead, bad_key, prefetch = got
    assert prefetch == 1
    assert {k: (v["done"], v["failed"]) for k, v in metrics.items()} == {
        "a": (40, 0), "b": (40, 0), "c": (20, 0), "d": (20, 0)}
    # Every even event once: none lost, none twice.
    assert ends["c"] == [[n, ["a", "b", "c"]] for n in range(0, 40, 2)]
    assert ends["d"] == [[n, ["a", "b", "d"]] for n in range(0, 40, 2)]
    assert version == 1 and dead == [] and bad_key[0] == "InvalidInputError"
    tab.page.close()


def test_bad_pipelines_are_refused_and_write_nothing(h: Harness):
    got = h.py("""
        from workerbridge.jobs.graph import Stage
        J = Jobs(B.pool, db="t-pipe-bad")
        out = [await failure(J.pipeline("x", [Stage("a", "pipe.step"), Stage("b", "pipe.step")],
                                        branches={"b": ["a"]})),
               await failure(J.pipeline("x", [Stage("a", "no.such")])),
               await failure(J.pipeline("x", [Stage("a", "pipe.step")], branches={"z": []}))]
        out.append(len(await J.list()))
        out
    """)
    assert [e[0] for e in got[:3]] == ["InvalidInputError", "UnknownOperationError",
                                       "InvalidInputError"]
    assert got[3] == 0


def test_no_acknowledged_job_is_lost_over_200_worker_kills(ctx: Any, server: str):
    """Workers terminated at random while jobs run, and one of the two tabs closed half
    way: every job that add() acknowledged completes; duplicates are counted per kill."""
    b = page(ctx, server)
    got = run_kills(page(ctx, server), b, "t-kills", 200)
    assert got["kills"] == 200
    assert got["lost"] == 0, "an acknowledged job is missing"
    assert got["states"] == ["completed"], got["states"]
    print(f"200 kills, {got['acknowledged']} jobs: {got['extra_runs']} extra runs "
          f"({got['extra_per_kill']:.2f} per kill)")
    b.page.close()
