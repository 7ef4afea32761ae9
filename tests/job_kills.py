"""Jobs under worker kills, for the suite (200 kills) and the benchmark's chaos run
(1,000): two tabs run one queue, workers are terminated at random while jobs run, and
one tab is closed half way. Every job that ``add`` acknowledged must complete."""

from __future__ import annotations

import time
from typing import Any

SETUP = """
import random
IDS = []
J = Jobs(B.pool, db="DB", lease=1.0, poll=0.05, capacity=4, max_stalls=10_000)
await J.queue("k", concurrency=8)

async def supply():
    # keep work waiting, so that there is always a running job to kill
    if not await J.list("k", "waiting", limit=1):
        jobs = await J.add_bulk([{"queue": "k", "handler": "work.span",
                                  "payload": {"seconds": 0.05}} for _ in range(20)])
        IDS.extend(j.id for j in jobs)

async def kills(n, seed):
    rng = random.Random(seed)
    done = 0
    while done < n:
        await supply()
        await asyncio.sleep(rng.uniform(0.01, 0.08))
        busy = [i for i, s in enumerate(B.pool._slots) if s.state == "ready" and s.load]
        if busy and B.pool.restart_worker(rng.choice(busy), "killed by the test"):
            done += 1
    return done
"""


def run_kills(a: Any, b: Any, db: str, kills: int) -> dict[str, Any]:
    """``a`` and ``b``: harnesses of two tabs with a pool (``B``) and ``Jobs``. A fifth
    of the kills happen with both tabs open, then ``a`` closes, with leased jobs, and
    ``b`` takes the rest. Returns what was acknowledged and what the store holds."""
    t0 = time.monotonic()
    a.py(SETUP.replace("DB", db))
    b.py(SETUP.replace("DB", db))
    first = kills // 5
    # Each kill waits for a worker that runs a job, and every killed worker boots again:
    # on two cores that takes a while, hence the long limits.
    done = a.py(f"await kills({first}, 1)", timeout=600 + kills)
    added_by_a = a.py("IDS")
    a.page.close()  # a tab with leased jobs goes away
    done += b.py(f"await kills({kills - first}, 2)", timeout=600 + 2 * kills)
    got = b.py(f"""
        ids = set(IDS) | set({added_by_a!r})
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rows = await J.list("k")
            if all(r["state"] == "completed" for r in rows):
                break
            await asyncio.sleep(0.2)
        rows = await J.list("k")
        stored = {{r["id"] for r in rows}}
        [len(ids), len(ids - stored), sorted({{r["state"] for r in rows}}),
         sum(r["attempt"] - 1 for r in rows)]
    """, timeout=300)
    acknowledged, lost, states, extra_runs = got
    return {"kills": done, "acknowledged": acknowledged, "lost": lost, "states": states,
            "extra_runs": extra_runs, "extra_per_kill": extra_runs / max(done, 1),
            "seconds": time.monotonic() - t0}
