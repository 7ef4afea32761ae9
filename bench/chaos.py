"""The chaos section: ``run_chaos`` (tests/pages/chaos.py) at full size, on its own page.

5,000 calls through a pool of 4 while a worker is killed every 150-350 calls; the figures
that matter are the ones that must be zero (calls left pending, answers given to the
wrong call, errors outside the workerbridge hierarchy) and how long the pool takes to get
back to full size after a kill.
"""

from __future__ import annotations

from typing import Any

from conftest import CHAOS_SETUP, Harness

CALLS = 5000


def bench_chaos(context: Any, origin: str) -> dict[str, Any]:
    harness = Harness(context.new_page(), origin)
    harness.py(CHAOS_SETUP)
    report: dict[str, Any] = harness.py(f"""
        r = await CHAOS["run_chaos"](CP, calls={CALLS}, concurrency=32, seed=1,
                                     kill_every=(150, 350))
        await CP.pool.terminate()
        r
    """, timeout=900)
    harness.page.close()
    return report


def chaos_rows(c: dict[str, Any]) -> list[str]:
    """README table rows for one chaos report."""
    errors = ", ".join(f"{n} {name}" for name, n in sorted(c["errors"].items())) or "none"
    kills = ", ".join(f"{n} {name}" for name, n in sorted(c["kills"].items()))
    clean = c["pending"] == c["wrong_results"] == 0 and not c["untyped_errors"]
    return [
        f"| chaos: {c['calls']:,} calls on a pool of 4, workers killed at random ({kills}) "
        f"| {c['results']:,} results, typed errors: {errors}; {c['restarts']} restarts "
        f"in {c['seconds']:.0f} s | — | — | — |",
        f"| chaos: calls left pending; answers given to another call; untyped errors "
        f"| {c['pending']}; {c['wrong_results']}; {sum(c['untyped_errors'].values())} "
        f"| — | — | 0; 0; 0 {'✓' if clean else '— not met'} |",
        f"| chaos: time back to full pool size after a kill, p50 / p99 "
        f"({c['recoveries']} recoveries) | {c['recover_p50_ms'] / 1000:.2f} s / "
        f"{c['recover_p99_ms'] / 1000:.2f} s | — | — | — |",
    ]
