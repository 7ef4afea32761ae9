"""The jobs benchmark: durable jobs beside a naive plain-JS IndexedDB queue, same run.

The naive queue runs in one plain Worker: jobs added in one transaction, then each job
claimed in one transaction and completed in another (two per job), with a no-op between.
Ours runs no-op jobs end to end (claim, the handler in a Pyodide worker, completion)
on a store that has already churned CHURN jobs.
"""

from __future__ import annotations

from typing import Any

from conftest import Harness
from job_kills import run_kills

N = 1000
BULK = 5000
CHURN = 10_000
KILLS = 1000
CHECKPOINTS = 40
PIPELINE_EVENTS = 1000
LATENCY_SAMPLES = 40

NAIVE_JS = """async ([n, name]) => {
    const src = `
      const req = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result);
                                                   r.onerror = () => no(r.error); });
      const done = (tx) => new Promise((ok, no) => {
        tx.oncomplete = ok;
        tx.onerror = tx.onabort = () => no(tx.error);
      });
      self.onmessage = async (e) => {
        const { n, name } = e.data;
        const open = indexedDB.open(name, 1);
        open.onupgradeneeded = () => {
          open.result.createObjectStore("jobs", { keyPath: "id" }).createIndex("state", "state");
        };
        const db = await req(open);
        let t0 = performance.now();
        const add = db.transaction("jobs", "readwrite");
        for (let i = 0; i < n; i++) add.objectStore("jobs").put({ id: "j" + i, state: "waiting" });
        await done(add);
        const addMs = performance.now() - t0;
        t0 = performance.now();
        for (let i = 0; i < n; i++) {
          const claim = db.transaction("jobs", "readwrite");
          const store = claim.objectStore("jobs");
          const cursor = await req(store.index("state").openCursor(IDBKeyRange.only("waiting")));
          const job = cursor.value;
          job.state = "active";
          store.put(job);
          await done(claim);
          const finish = db.transaction("jobs", "readwrite");
          job.state = "completed";
          finish.objectStore("jobs").put(job);
          await done(finish);
        }
        self.postMessage({ addMs, runMs: performance.now() - t0 });
      };`;
    const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
    const out = await new Promise((resolve) => {
        w.onmessage = (e) => resolve(e.data);
        w.postMessage({ n, name });
    });
    w.terminate();
    return out;
}"""

BASE = """
import asyncio, js, time
from workerbridge import WorkerBridge
from workerbridge.jobs.engine import Jobs
B = WorkerBridge(workers=2, modules=["./jobwork.py"], fallback="never")
await B.start()
await B.pool.wait_all_ready()
"""

SETUP = BASE + """
J = Jobs(B.pool, db="bench-jobs", poll=0.05, capacity=32)
DONE = [0]
J.on("completed", lambda e: DONE.__setitem__(0, DONE[0] + 1))

async def latency(jobs, queue, samples):
    # add -> the handler starting (its own clock), one job at a time; sorted, in ms
    out = []
    for _ in range(samples):
        t0 = js.Date.now()
        job = await jobs.add(queue, "work.span", {"seconds": 0})
        out.append((await job.result(timeout=30))["start"] - t0)
    return sorted(out)

async def run_noops(n):
    start = DONE[0]
    t0 = time.perf_counter()
    await J.add_bulk([{"queue": "noop", "handler": "work.noop"} for _ in range(n)])
    while DONE[0] - start < n:
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0
"""


def bench_jobs(browser: Any, origin: str) -> dict[str, Any]:
    context = browser.new_context()
    try:
        h = Harness(context.new_page(), origin)
        out: dict[str, Any] = {}
        naive = h.js(NAIVE_JS, [N, "bench-naive"])
        out["naive_jobs_per_s"] = N / (naive["runMs"] / 1000)
        naive_bulk = h.js(NAIVE_JS.replace("for (let i = 0; i < n; i++) {\n          const claim",
                                           "for (let i = 0; i < 0; i++) {\n          const claim"),
                          [BULK, "bench-naive-bulk"])
        out["naive_bulk_per_s"] = BULK / (naive_bulk["addMs"] / 1000)
        h.py(SETUP)
        h.py("await J.queue('noop', concurrency=64)")
        out["churn_s"] = h.py(f"await run_noops({CHURN})", timeout=1800)
        out["noop_s"] = h.py(f"await run_noops({N})", timeout=600)
        out["jobs_per_s"] = N / out["noop_s"]
        out["bulk_s"] = h.py(f"""
            t0 = time.perf_counter()
            await J.add_bulk([{{"queue": "idle", "handler": "work.noop"}} for _ in range({BULK})])
            time.perf_counter() - t0
        """, timeout=600)
        out["bulk_per_s"] = BULK / out["bulk_s"]
        # add -> the handler starting, one job at a time, in this tab.
        h.py("await J.queue('lat', concurrency=4)")
        lat = h.py(f"await latency(J, 'lat', {LATENCY_SAMPLES})")
        out["claim_p50_ms"] = lat[len(lat) // 2]
        out["claim_p95_ms"] = lat[int(0.95 * (len(lat) - 1))]
        # from another tab: this one adds, the other one runs.
        other = Harness(context.new_page(), origin)
        other.py(SETUP.replace('db="bench-jobs"', 'db="bench-jobs-x"'))
        other.py("await J.queue('far', concurrency=4)")
        h.py("K = Jobs(B.pool, db='bench-jobs-x')")
        far = h.py(f"await latency(K, 'far', {LATENCY_SAMPLES})")
        out["claim_other_tab_p95_ms"] = far[int(0.95 * (len(far) - 1))]
        crash = h.py("""
            await J.queue("crash")
            job = await J.add("crash", "work.crash_once", {})
            await job.result(timeout=60)
            hist = (await job.status())["history"]
            (hist[1]["start"] - hist[0]["end"]) * 1000
        """)
        out["crash_recovery_ms"] = crash
        # A workflow step's checkpoint: the transaction that ends a step (its result
        # stored, the step marked done, the next step's job added) beside the one that
        # ends a plain job, each timed alone, on claimed jobs nobody else runs.
        cp = h.py(f"""
            from workerbridge.jobs import store
            from workerbridge.jobs.claims import QueueLimits
            n = {CHECKPOINTS}
            await J._tx(store.add([store.JobSpec("cp-plain", "work.noop") for _ in range(n)],
                                  time.time()))
            steps = [store.StepSpec("a", "work.noop"), store.StepSpec("b", "work.noop")]
            for i in range(n):
                record = store.workflow_record(f"cp-{{i}}", "cp", "workflow:cp", steps, None,
                                               time.time())
                await J._tx(store.start_workflow(record, time.time()))
            times = {{}}
            for queue in ("cp-plain", "workflow:cp"):
                claimed = await J._tx(store.claim(time.time(), "bench", 60,
                                                  {{queue: QueueLimits(n)}}, n))
                spent = []
                for job in claimed.jobs:
                    t0 = time.perf_counter()
                    await J._tx(store.complete(job["id"], {{"x": 1}}, time.time()))
                    spent.append((time.perf_counter() - t0) * 1000)
                times[queue] = sorted(spent)[len(spent) // 2]
            [times["cp-plain"], times["workflow:cp"]]
        """)
        out["plain_complete_ms"], out["step_complete_ms"] = cp
        out["checkpoint_overhead_ms"] = cp[1] - cp[0]
        # A 3-stage pipeline of pass-through stages: events published in one
        # transaction, each stage's job ended (and the next one's added) in batches; in
        # an engine of capacity 32 (the anchor's), and in one that runs 64 at once (short
        # jobs: more in flight, more ended per transaction). Each in a database of its
        # own, with the sections' engine above stopped (its loops would poll meanwhile).
        h.py("await J.close(timeout=0)\nawait K.close(timeout=0)")
        other.py("await J.close(timeout=0)")
        for capacity in (32, 64):
            seconds = h.py(f"""
                from workerbridge import Stage
                E = Jobs(B.pool, db="bench-pipe-{capacity}", poll=0.05, capacity={capacity})
                P = await E.pipeline("bench", [Stage(f"s{{i}}", "work.pass", concurrency=64)
                                               for i in range(3)])
                ENDS = [0]
                E.on("completed", lambda e: ENDS.__setitem__(0, ENDS[0] + 1)
                     if e.get("queue") == "pipeline:bench:s2" else None)
                t0 = time.perf_counter()
                await P.publish_many([{{"n": n}} for n in range({PIPELINE_EVENTS})])
                while ENDS[0] < {PIPELINE_EVENTS}:
                    await asyncio.sleep(0.01)
                took = time.perf_counter() - t0
                await P.close(5)
                await E.close(timeout=0)
                took
            """, timeout=600)
            suffix = "" if capacity == 32 else f"_{capacity}"
            out[f"pipeline{suffix}_s"] = seconds
            out[f"pipeline{suffix}_events_per_s"] = PIPELINE_EVENTS / seconds
        out["chaos"] = bench_jobs_chaos(browser, origin)
        out["ratio_throughput"] = out["jobs_per_s"] / out["naive_jobs_per_s"]
        out["ratio_bulk"] = out["bulk_per_s"] / out["naive_bulk_per_s"]
        return out
    finally:
        context.close()


def bench_jobs_chaos(browser: Any, origin: str) -> dict[str, Any]:
    """KILLS worker kills across two tabs, one closed a fifth of the way (job_kills)."""
    context = browser.new_context()
    try:
        a, b = (Harness(context.new_page(), origin) for _ in range(2))
        for h in (a, b):
            h.py(BASE)
        return run_kills(a, b, "bench-kills", KILLS)
    finally:
        context.close()


def _mark(ok: bool) -> str:
    return "✓" if ok else "— not met"


def jobs_rows(j: dict[str, Any]) -> list[str]:
    c = j.get("chaos")
    chaos = [] if c is None else [
        f"| jobs: chaos, {c['kills']:,} worker kills over two tabs (one closed) | "
        f"{c['lost']} of {c['acknowledged']:,} acknowledged jobs lost; "
        f"{c['extra_per_kill']:.2f} extra runs per kill | — | — | 0 lost "
        f"{_mark(c['lost'] == 0 and c['states'] == ['completed'])} |"]
    pipeline = [] if "pipeline_events_per_s" not in j else [
        f"| pipelines: 3-stage no-op pipeline, durable end to end ({PIPELINE_EVENTS:,} "
        f"events, a fresh store), tab capacity 32 | {j['pipeline_events_per_s']:,.0f} "
        f"events/s | no-op "
        f"jobs, one stage, capacity 32: {j['jobs_per_s']:,.0f} jobs/s | "
        f"{j['pipeline_events_per_s'] / j['jobs_per_s']:.2f}× "
        f"| ≥ 500 events/s {_mark(j['pipeline_events_per_s'] >= 500)} |"]
    if "pipeline_64_events_per_s" in j:
        pipeline.append(
            f"| pipelines: the same, tab capacity 64 | {j['pipeline_64_events_per_s']:,.0f} "
            f"events/s | as above | {j['pipeline_64_events_per_s'] / j['jobs_per_s']:.2f}× "
            f"| ≥ 500 events/s {_mark(j['pipeline_64_events_per_s'] >= 500)} |")
    return [*chaos, *pipeline,
        f"| jobs: no-op jobs end to end, one tab ({N:,}, after {CHURN:,} churned) | "
        f"{j['jobs_per_s']:,.0f} jobs/s | naive JS queue, 2 transactions a job "
        f"{j['naive_jobs_per_s']:,.0f} jobs/s | {j['ratio_throughput']:.2f}× | ≥ 1,000 jobs/s "
        f"{_mark(j['jobs_per_s'] >= 1000)} |",
        f"| jobs: bulk add ({BULK:,}) | {j['bulk_per_s']:,.0f} jobs/s | naive JS, one "
        f"transaction {j['naive_bulk_per_s']:,.0f} jobs/s | {j['ratio_bulk']:.2f}× | ≥ 5,000 "
        f"jobs/s {_mark(j['bulk_per_s'] >= 5000)} |",
        f"| jobs: add → handler starts, p50 / p95, same tab | {j['claim_p50_ms']:.0f} / "
        f"{j['claim_p95_ms']:.0f} ms | — | — | p95 < 20 ms {_mark(j['claim_p95_ms'] < 20)} |",
        f"| jobs: add → handler starts, p95, from another tab | "
        f"{j['claim_other_tab_p95_ms']:.0f} ms | — | — | < 50 ms "
        f"{_mark(j['claim_other_tab_p95_ms'] < 50)} |",
        f"| jobs: a crashed worker's job running again | {j['crash_recovery_ms']:.0f} ms | — "
        f"| — | < 1 s {_mark(j['crash_recovery_ms'] < 1000)} |",
        f"| jobs: workflow step checkpoint overhead (median) | "
        f"{j['checkpoint_overhead_ms']:.1f} ms (ending a step "
        f"{j['step_complete_ms']:.1f} ms) | ending a plain job {j['plain_complete_ms']:.1f} ms "
        f"| — | < 5 ms {_mark(j['checkpoint_overhead_ms'] < 5)} |",
    ]
