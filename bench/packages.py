"""The packages benchmark: a pool of 4 booting with packages, beside the same pool without.

Four pools, each in a fresh browser context (an empty snapshot cache; the HTTP cache
holds the bundle and the wheels, as it would for a returning user):

- none: no packages, cold (the first worker makes the snapshot, 3 boot from it), then a
  second pool in the same context, all four from the cached snapshot;
- pure: attrs, idna and python-dateutil (with six), the same two boots;
- compiled: the same three and msgspec (a PEP 783 wheel), which turns snapshots off, so
  all four boot plainly each time.

The anchor of each figure is the pool without packages booted the same way in the same
run. Each boot runs ROUNDS times; the best is reported (the machine is shared).
"""

from __future__ import annotations

from typing import Any

from conftest import Harness

PURE = ["attrs", "idna", "python-dateutil"]
COMPILED = [*PURE, "msgspec"]
ROUNDS = 2

BOOT = """
import js
from workerbridge import WorkerPool

async def boot_pool(packages):
    t = js.performance.now()
    pool = WorkerPool(["./pkgs.py"], size=4, packages=packages, fallback="never")
    await pool.wait_all_ready()
    ms = js.performance.now() - t
    infos = pool.ready_info()
    use = ["dateutil", "attrs", "idna"] + (["msgspec"] if "msgspec" in packages else [])
    if packages:  # the packages work in every worker
        for _ in range(8):
            r = await pool.execute("pkgs", "report", {"use": use, "date": "2024-01-31"})
            assert r["next_month"] == "2024-02-29T00:00:00", r
    await pool.terminate()
    return {"ms": ms, "snapshot": sorted(i["snapshot"] for i in infos)}

cold = await boot_pool(PACKAGES)
warm = await boot_pool(PACKAGES)
{"cold": cold, "warm": warm}
"""


def bench_packages(browser: Any, origin: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, packages in (("none", []), ("pure", PURE), ("compiled", COMPILED)):
        runs = []
        for _ in range(ROUNDS):
            context = browser.new_context()
            try:
                page = Harness(context.new_page(), origin)
                runs.append(page.py(f"PACKAGES = {packages!r}\n" + BOOT))
            finally:
                context.close()
        out[name] = {
            "cold_ms": min(r["cold"]["ms"] for r in runs),
            "warm_ms": min(r["warm"]["ms"] for r in runs),
            "cold_snapshot": runs[0]["cold"]["snapshot"],
            "warm_snapshot": runs[0]["warm"]["snapshot"],
        }
    base = out["none"]
    for name in ("pure", "compiled"):
        out[name]["cold_ratio"] = out[name]["cold_ms"] / base["cold_ms"]
        out[name]["warm_ratio"] = out[name]["warm_ms"] / base["warm_ms"]
    return out


def _states(states: list[str]) -> str:
    return ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))


def packages_rows(p: dict[str, Any]) -> list[str]:
    none = p["none"]
    rows = []
    for name, label in (("pure", "3 pure packages (attrs, idna, python-dateutil + six)"),
                        ("compiled", "the same and a compiled one (msgspec 0.23.0)")):
        f = p[name]
        rows.append(
            f"| pool of 4 with {label}: ready, cold (empty cache; snapshots: "
            f"{_states(f['cold_snapshot'])}) | {f['cold_ms'] / 1000:.2f} s | the same pool "
            f"without packages {none['cold_ms'] / 1000:.2f} s | {f['cold_ratio']:.2f}× | — |")
        rows.append(
            f"| pool of 4 with {label}: ready again (snapshots: "
            f"{_states(f['warm_snapshot'])}) | {f['warm_ms'] / 1000:.2f} s | the same pool "
            f"without packages, from its snapshot {none['warm_ms'] / 1000:.2f} s | "
            f"{f['warm_ratio']:.2f}× | — |")
    return rows
