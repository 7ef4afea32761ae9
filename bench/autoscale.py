"""The autoscale section: a pool of (1, 4) with one warm worker grows under a backlog.

Measured from the moment a backlog of CPU-busy calls (tests/pages/autoscale.py) is
submitted until each of the 4 workers has answered one of them. The anchor, in the same
page: a fixed pool of 4 made at that moment from the same cached snapshot, given the same
backlog once all 4 are ready, timed from its making the same way. (Given the backlog at
once, a fixed pool sends all of it to its first ready worker, up to ``max_in_flight``, and
the other 3 never serve.) Both sides run ``ROUNDS`` times, alternating; the median is
reported.
"""

from __future__ import annotations

import statistics
from typing import Any

from boot import CACHE, CACHED_JS

from conftest import Harness

ROUNDS = 5
BACKLOG = 300  # crunch calls of N each: longer for one worker than any boot here
N = 150_000
TARGET_MS = 2000.0

SETUP = f"""
import asyncio, js
from workerbridge import WorkerBridge

async def all_served(bridge, t0):
    # ms from t0 until each worker gave its first answer; the rest is then cancelled
    futures = [bridge.pool.submit("autoscale", "crunch", {{"n": {N}, "tag": i}})
               for i in range({BACKLOG})]
    firsts = {{}}
    four = asyncio.get_event_loop().create_future()
    def note(f):
        if not f.cancelled() and f.exception() is None:
            firsts.setdefault(f.result()[2], js.performance.now() - t0)
            if len(firsts) == 4 and not four.done():
                four.set_result(None)
    for f in futures:
        f.add_done_callback(note)
    everything = asyncio.gather(*futures, return_exceptions=True)
    await asyncio.wait([four, everything], return_when=asyncio.FIRST_COMPLETED)
    for f in futures:
        f.cancel()
    await everything
    return sorted(firsts.values())

# The snapshot both sides boot from, made (and cached) before any timing.
await (await WorkerBridge(modules=["./autoscale.py"]).start()).close()
"""

SCALED = """
A = await WorkerBridge(workers=(1, 4), modules=["./autoscale.py"]).start()
warm = A.pool.ready_info()[0]["snapshot"]
await asyncio.sleep(0.5)  # settled: one idle worker
t0 = js.performance.now()
served = await all_served(A, t0)
stats = A.stats()
await A.close()
{"served_ms": served, "warm": warm, "scale_ups": stats.scale_ups}
"""

FIXED = """
t0 = js.performance.now()
F = WorkerBridge(workers=4, modules=["./autoscale.py"])
await F.pool.wait_all_ready()
served = await all_served(F, t0)
snapshots = sorted(i["snapshot"] for i in F.pool.ready_info())
await F.close()
{"served_ms": served, "snapshots": snapshots}
"""


def bench_autoscale(browser: Any, origin: str) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = Harness(context.new_page(), origin)
        page.py(SETUP)
        page.js(CACHED_JS, CACHE)
        scaled, fixed = [], []
        for _ in range(ROUNDS):
            scaled.append(page.py(SCALED))
            fixed.append(page.py(FIXED))
    finally:
        context.close()
    all4 = [r["served_ms"][-1] for r in scaled if len(r["served_ms"]) == 4]
    anchor = [r["served_ms"][-1] for r in fixed if len(r["served_ms"]) == 4]
    out: dict[str, Any] = {
        "rounds": ROUNDS, "backlog": BACKLOG,
        "all_rounds_reached_4": len(all4) == ROUNDS and len(anchor) == ROUNDS,
        "scaled_all4_ms": statistics.median(all4) if all4 else None,
        "scaled_all4_runs_ms": [r["served_ms"] for r in scaled],
        "fixed4_all4_ms": statistics.median(anchor) if anchor else None,
        "fixed4_all4_runs_ms": [r["served_ms"] for r in fixed],
        "warm_worker_snapshot": sorted({r["warm"] for r in scaled}),
        "scale_ups": [r["scale_ups"] for r in scaled],
        "fixed_snapshots": fixed[-1]["snapshots"],
    }
    if all4 and anchor:
        out["ratio"] = out["scaled_all4_ms"] / out["fixed4_all4_ms"]
    return out


def autoscale_rows(a: dict[str, Any]) -> list[str]:
    """README table rows for the autoscale figures."""
    scaled, fixed = a.get("scaled_all4_ms"), a.get("fixed4_all4_ms")
    if scaled is None or fixed is None:
        return [f"| autoscale (1, 4): backlog of {a['backlog']} → all 4 workers serving | "
                "not reached in every round | — | — | ≤ 2 s — not met |"]
    met = "✓" if scaled <= TARGET_MS and a["all_rounds_reached_4"] else "— not met"
    return [f"| autoscale (1, 4), one worker warm: backlog of {a['backlog']} CPU-busy calls "
            f"→ all 4 workers served one (median of {a['rounds']}) | {scaled / 1000:.2f} s "
            f"| fixed pool of 4 made then, from the cached snapshot, {fixed / 1000:.2f} s "
            f"| {a['ratio']:.2f}× | ≤ 2 s {met} |"]
