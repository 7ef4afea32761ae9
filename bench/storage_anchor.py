"""The storage benchmark's anchor: Dexie.js doing the same work in plain JS on the page.

Dexie (npm ``dexie``, a pinned dev dependency) is served from node_modules by the bench's
own dev server, never a CDN: add ``dexie_mount()`` to ``start_server(extra=...)``, then
``dexie_anchor(harness)`` runs, in a fresh database it deletes afterwards:

- ``bulkPut`` of `RECORDS` small records ``{id, n, name, tags}`` into a table indexed on n;
- `READS` point reads by id, one awaited after another, then all issued at once;
- a range query on the n index returning 10 % of the records;
- `SINGLE_ADDS` single ``add`` calls issued at once (Dexie gives each its own transaction).

`bench_records` and `read_ids` give the bridge's side of the benchmark the same records
and the same ids. ``python bench/storage_anchor.py`` runs the anchor once and prints it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEXIE_DIST = ROOT / "node_modules" / "dexie" / "dist"
DEXIE_PREFIX = "/bench/dexie"
DEXIE_URL = DEXIE_PREFIX + "/dexie.mjs"  # the self-contained ES module build

RECORDS = 100_000
READS = 10_000
SINGLE_ADDS = 2_000  # Dexie runs each add as a transaction of its own: slow, so fewer
STRIDE = 7919  # a prime: STRIDE * i mod RECORDS visits distinct records in a scattered order


def dexie_mount() -> str:
    """The ``PREFIX=DIR`` mount that serves Dexie's ES module build."""
    if not (DEXIE_DIST / "dexie.mjs").is_file():
        raise FileNotFoundError("node_modules/dexie is missing: run `python3 build.py`")
    return f"{DEXIE_PREFIX}={DEXIE_DIST}"


def bench_records(n: int = RECORDS) -> list[dict[str, Any]]:
    """The records both sides write (the same as the JS below builds)."""
    return [{"id": f"rec-{i}", "n": i, "name": f"name-{i}", "tags": [f"t{i % 10}", "bench"]}
            for i in range(n)]


def read_ids(n: int = RECORDS, reads: int = READS) -> list[str]:
    """The ids both sides read back, in the same scattered order."""
    return [f"rec-{(i * STRIDE) % n}" for i in range(reads)]


def range_bounds(n: int = RECORDS) -> tuple[int, int]:
    """[low, high) on n: the middle tenth of the records."""
    low = n * 45 // 100
    return low, low + n // 10


DEXIE_JS = """async ([url, n, reads, stride, low, high, singles]) => {
    let Dexie;
    try {
        ({ Dexie } = await import(url));
    } catch (e) {
        throw new Error("Dexie did not load from " + url + " (is dexie_mount() served?)");
    }
    const name = "wb-bench-dexie-" + Date.now() + "-" + Math.random().toString(36).slice(2);
    const db = new Dexie(name);
    db.version(1).stores({ items: "id, n" });
    await db.open();
    try {
        const rows = new Array(n);
        for (let i = 0; i < n; i++) {
            rows[i] = { id: "rec-" + i, n: i, name: "name-" + i, tags: ["t" + (i % 10), "bench"] };
        }
        const ids = new Array(reads);
        for (let i = 0; i < reads; i++) ids[i] = "rec-" + ((i * stride) % n);
        const out = { dexie: Dexie.semVer, records: n, reads };

        let t = performance.now();
        await db.items.bulkPut(rows);
        out.bulk_put_ms = performance.now() - t;

        let found = 0;
        t = performance.now();
        for (const id of ids) if (await db.items.get(id)) found++;
        out.point_reads_sequential_ms = performance.now() - t;

        t = performance.now();
        const all = await Promise.all(ids.map((id) => db.items.get(id)));
        out.point_reads_concurrent_ms = performance.now() - t;
        out.point_reads_found = found + all.filter(Boolean).length;

        t = performance.now();
        const hits = await db.items.where("n").between(low, high, true, false).toArray();
        out.range_query_ms = performance.now() - t;
        out.range_query_hits = hits.length;
        out.range_query_ok = hits.length === high - low && hits[0].n === low &&
            hits[hits.length - 1].n === high - 1;
        t = performance.now();
        const adds = [];
        for (let i = 0; i < singles; i++) {
            adds.push(db.items.add({ id: crypto.randomUUID(), n: -i }));
        }
        await Promise.all(adds);
        out.single_adds_ms = performance.now() - t;
        out.stored = await db.items.count();
        return out;
    } finally {
        db.close();
        await Dexie.delete(name);
    }
}"""


def dexie_anchor(harness: Any, n: int = RECORDS, reads: int = READS) -> dict[str, Any]:
    """Run the three Dexie figures once on the harness's page; times in ms."""
    low, high = range_bounds(n)
    out: dict[str, Any] = harness.js(DEXIE_JS, [DEXIE_URL, n, reads, STRIDE, low, high,
                                                 SINGLE_ADDS])
    if out["stored"] != n + SINGLE_ADDS or out["point_reads_found"] != 2 * reads \
            or not out["range_query_ok"]:
        raise AssertionError(f"the Dexie anchor read back wrong results: {out}")
    out["bulk_put_records_per_s"] = n / (out["bulk_put_ms"] / 1000)
    out["point_reads_sequential_per_s"] = reads / (out["point_reads_sequential_ms"] / 1000)
    out["point_reads_concurrent_per_s"] = reads / (out["point_reads_concurrent_ms"] / 1000)
    out["single_adds_per_s"] = SINGLE_ADDS / (out["single_adds_ms"] / 1000)
    return out


def main() -> int:
    """Run the anchor once, as the bench would, and print its figures."""
    sys.path.insert(0, str(ROOT / "tests"))
    from playwright.sync_api import sync_playwright

    from conftest import CHROMIUM_FLAGS, Harness, start_server

    server, origin = start_server(isolation=True, extra=(dexie_mount(),))
    chromium = os.environ.get("WORKERBRIDGE_CHROMIUM", "/usr/bin/chromium")
    try:
        # A profile on disk, as bench/run.py uses: IndexedDB then writes to disk.
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=chromium, args=CHROMIUM_FLAGS)
            harness = Harness(context.new_page(), origin)
            figures = dexie_anchor(harness)
            foreign = [u for u in harness.requests if not u.startswith(origin)]
            left = harness.js("async () => (await indexedDB.databases()).map((d) => d.name)")
            context.close()
    finally:
        server.shutdown()
    print(json.dumps({"figures": figures, "foreign_requests": foreign,
                      "databases_left": left}, indent=2))
    return 1 if foreign or any(name.startswith("wb-bench-dexie") for name in left) else 0


if __name__ == "__main__":
    sys.exit(main())
