"""The subscriptions section: a change published in one tab, heard by a matching
subscriber in another (BroadcastChannel, then routing by pattern and filter there); and
a write through a pipeline's writer and router stages (storage updated by JSON Patch in a
worker, the change published from a worker) heard the same way."""

from __future__ import annotations

from typing import Any

from conftest import Harness

SAMPLES = 200
WRITES = 60
WRITER = """
from workerbridge import Stage
from workerbridge.jobs.engine import Jobs
W = await WorkerBridge(workers=2, packages=["jsonpatch"], fallback="never").start()
await W.pool.wait_all_ready()
await W.storage.define("bench-subs", 1, {"task": {}})
J = Jobs(W.pool, db="bench-subs-jobs", poll=0.05)
P = await J.pipeline("writes", [Stage("writer", "storage.write_change"),
                                Stage("router", "subscriptions.publish")])
CHANNEL = {"app": "bench", "model": "task", "id": "w1"}
def change(kind, key, **more):
    return {"event": kind, "database": "bench-subs", "version": 1, "channel": CHANNEL,
            "key": key, **more}
await (await P.publish(change("model_created", "c", data={"priority": "high", "t": 0})))\
    .result(timeout=60)
"""
SETUP = """
import asyncio, js
from workerbridge import WorkerBridge
S = WorkerBridge().subscriptions
"""


def bench_subscriptions(browser: Any, origin: str) -> dict[str, Any]:
    context = browser.new_context()
    try:
        writer, reader = (Harness(context.new_page(), origin) for _ in range(2))
        for h in (writer, reader):
            h.py(SETUP)
        # 50 subscriptions that do not match, one that does (with a filter).
        reader.py("""
            HEARD = []
            for i in range(50):
                await S.subscribe({"app": "bench", "model": f"other{i}"}, deliver=HEARD.append)
            def heard(d):
                HEARD.append(js.Date.now() - d["patch"][0]["value"])
            await S.subscribe({"app": "bench", "model": "task"},
                              filter={"priority": {"$eq": "high"}}, deliver=heard)
        """)
        writer.py(f"""
            for i in range({SAMPLES}):
                now = js.Date.now()
                await S.publish({{"event": "model_updated",
                                 "channel": {{"app": "bench", "model": "task", "id": str(i)}},
                                 "record": {{"id": str(i), "priority": "high"}},
                                 "patch": [{{"op": "replace", "path": "/t", "value": now}}]}})
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.5)
        """)
        heard = sorted(reader.py("HEARD"))
        out = {"samples": len(heard), "p50_ms": heard[len(heard) // 2],
               "p95_ms": heard[int(0.95 * (len(heard) - 1))]}
        # A write: publish -> writer stage (JSON Patch in one storage transaction) ->
        # router stage -> the subscriber in the other tab, one write at a time.
        reader.py("WRITES = []\nHEARD.clear()")
        reader.py("""
            await S.subscribe({"app": "bench", "model": "task", "id": "w1"},
                              filter={"priority": {"$eq": "high"}},
                              deliver=lambda d: WRITES.append(
                                  js.Date.now() - d["patch"][0]["value"]))
        """)
        writer.py(WRITER)
        writer.py(f"""
            for i in range({WRITES}):
                await P.publish(change("model_updated", f"u{{i}}", patch=[
                    {{"op": "replace", "path": "/t", "value": js.Date.now()}}]))
                await asyncio.sleep(0.05)
            await P.close(30)
        """, timeout=600)
        wrote = sorted(reader.py("await asyncio.sleep(0.5)\nWRITES"))
        out.update({"writes": len(wrote), "write_p50_ms": wrote[len(wrote) // 2],
                    "write_p95_ms": wrote[int(0.95 * (len(wrote) - 1))]})
        return out
    finally:
        context.close()


def subscriptions_rows(s: dict[str, Any]) -> list[str]:
    ok = s["samples"] == SAMPLES and s["p95_ms"] < 50
    return [f"| subscriptions: a change → the matching subscriber in another tab, p50 / p95 "
            f"({s['samples']} changes, 51 subscriptions) | {s['p50_ms']:.0f} / "
            f"{s['p95_ms']:.0f} ms | — | — | p95 < 50 ms {'✓' if ok else '— not met'} |",
            *([] if "write_p95_ms" not in s else [
                f"| subscriptions: a write through the writer and router stages (JSON Patch "
                f"into storage, published from a worker) → the subscriber in another tab, "
                f"p50 / p95 ({s['writes']} writes) | {s['write_p50_ms']:.0f} / "
                f"{s['write_p95_ms']:.0f} ms | — | — | p95 < 50 ms "
                f"{'✓' if s['writes'] == WRITES and s['write_p95_ms'] < 50 else '— not met'} |"])]
