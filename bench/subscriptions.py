"""The subscriptions section: a change published in one tab, heard by a matching
subscriber in another (BroadcastChannel, then routing by pattern and filter there)."""

from __future__ import annotations

from typing import Any

from conftest import Harness

SAMPLES = 200
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
        return {"samples": len(heard), "p50_ms": heard[len(heard) // 2],
                "p95_ms": heard[int(0.95 * (len(heard) - 1))]}
    finally:
        context.close()


def subscriptions_rows(s: dict[str, Any]) -> list[str]:
    ok = s["samples"] == SAMPLES and s["p95_ms"] < 50
    return [f"| subscriptions: a change → the matching subscriber in another tab, p50 / p95 "
            f"({s['samples']} changes, 51 subscriptions) | {s['p50_ms']:.0f} / "
            f"{s['p95_ms']:.0f} ms | — | — | p95 < 50 ms {'✓' if ok else '— not met'} |"]
