"""The streamed paths users take: ``hash_file`` with and without ``on_progress``, on a
256 MB ArrayBuffer and File, beside the browser's one-shot engine in the same run, and
the split of the streamed path into its stages (read, copy into the WebAssembly heap,
hash, progress), measured in a worker by bench/pages/streamstages.py. The engines that
could hash a stream are compared in the same run: hashlib (in the stages), and
hash-wasm's SHA-256 (npm, a benchmark-only dependency) in a plain module worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anchors import SUBTLE_JS

from conftest import Harness

MB = 256
HASH_WASM = Path(__file__).resolve().parent.parent / "node_modules" / "hash-wasm" / "dist"
HASH_WASM_PREFIX = "/bench/hash-wasm"

# hash-wasm's SHA-256, fed 8 MB at a time in a module worker, beside SubtleCrypto's
# one-shot digest in the same worker: MB/s of each, best of two.
HASH_WASM_JS = """async ([mb, url]) => {
    const src = `import { createSHA256 } from "${url}";
        self.onmessage = async (e) => {
            const n = e.data * 1048576, c = 8 * 1048576, u8 = new Uint8Array(n);
            for (let i = 0; i < n; i += 4096) u8[i] = i & 255;
            const h = await createSHA256();
            const out = { hash_wasm: 0, subtle: 0 };
            for (let r = 0; r < 2; r++) {
                let t = performance.now();
                h.init();
                for (let o = 0; o < n; o += c) h.update(u8.subarray(o, o + c));
                h.digest("hex");
                out.hash_wasm = Math.max(out.hash_wasm, e.data / ((performance.now() - t) / 1000));
                t = performance.now();
                await crypto.subtle.digest("SHA-256", u8);
                out.subtle = Math.max(out.subtle, e.data / ((performance.now() - t) / 1000));
            }
            self.postMessage(out);
        };`;
    const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })),
                         { type: "module" });
    const out = await new Promise((ok, fail) => {
        w.onmessage = (e) => ok(e.data);
        w.onerror = (e) => fail(new Error(e.message));
        w.postMessage(mb);
    });
    w.terminate();
    return out;
}"""


def hash_wasm_mount() -> str:
    """The ``PREFIX=DIR`` mount that serves hash-wasm's ES module build."""
    if not (HASH_WASM / "index.esm.min.js").is_file():
        raise FileNotFoundError("node_modules/hash-wasm is missing: run `python3 build.py`")
    return f"{HASH_WASM_PREFIX}={HASH_WASM}"
ROUNDS = 2  # alternate ours and the anchor, and keep each side's best: the machine is noisy

SETUP = """
import js
from workerbridge import WorkerBridge
S = await WorkerBridge(modules=["/bench/streamstages.py"]).start()

def data(kind):
    u8 = js.Uint8Array.new(MB * 1024 * 1024)
    u8.fill(7)
    return u8.buffer if kind == "buffer" else js.File.new([u8], "x.bin")

async def timed(kind, progress):
    d = data(kind)
    reports = []
    ticks = js.benchTicker()  # a 5 ms timer on this page: its longest gap
    t = js.performance.now()
    if progress:
        await S.crypto.hash_file(d, on_progress=lambda p: reports.append(p.done))
    else:
        await S.crypto.hash_file(d)
    elapsed = js.performance.now() - t
    return [elapsed, len(reports), ticks.stop()]
"""

# The page's responsiveness: a 5 ms interval timer, and the longest gap between its ticks.
TICKER_JS = """() => {
    window.benchTicker = () => {
        let last = performance.now(), worst = 0;
        const id = setInterval(() => {
            const now = performance.now();
            worst = Math.max(worst, now - last);
            last = now;
        }, 5);
        return { stop: () => { clearInterval(id);
                               return Math.max(worst, performance.now() - last); } };
    };
}"""


def bench_streamed(browser: Any, origin: str) -> dict[str, Any]:
    context = browser.new_context()
    try:
        h = Harness(context.new_page(), origin)
        h.js(TICKER_JS)
        h.py(f"MB = {MB}\n" + SETUP)
        out: dict[str, Any] = {"mb": MB}
        for kind in ("buffer", "file"):
            runs: dict[str, list[float]] = {"progress": [], "plain": [], "anchor": []}
            reports, gaps = 0, []
            for _ in range(ROUNDS):
                ms, reports, gap = h.py(f'await timed("{kind}", True)')
                runs["progress"].append(ms)
                gaps.append(gap)
                ms, _, gap = h.py(f'await timed("{kind}", False)')
                runs["plain"].append(ms)
                gaps.append(gap)
                runs["anchor"].append(h.js(SUBTLE_JS, [MB, kind]))
            best = {k: MB / (min(v) / 1000) for k, v in runs.items()}
            out[kind] = {
                "progress_mb_s": best["progress"], "plain_mb_s": best["plain"],
                "subtle_mb_s": best["anchor"], "progress_reports": reports,
                "progress_ratio": best["progress"] / best["anchor"],
                "main_thread_longest_gap_ms": max(gaps),
                "plain_ratio": best["plain"] / best["anchor"],
                "stages": h.py(f'await S.request("stages", "hash", {{"data": data("{kind}")}}, '
                               f'timeout=600)'),
            }
        out["engines"] = h.js(HASH_WASM_JS, [MB, f"{origin}{HASH_WASM_PREFIX}/index.esm.min.js"])
        out["engines"]["hashlib"] = out["buffer"]["stages"]["hashlib_in_memory"]
        return out
    finally:
        context.close()


def streamed_rows(f: dict[str, Any]) -> list[str]:
    rows = []
    for kind, label, anchor in (("file", "a File", "`file.arrayBuffer()` + `subtle.digest`"),
                                ("buffer", "an ArrayBuffer", "`subtle.digest`")):
        r = f[kind]
        s = r["stages"]
        met = r["progress_ratio"] >= 0.7
        gap = r.get("main_thread_longest_gap_ms")
        gap_text = f" (the page's longest gap between 5 ms ticks: {gap:.0f} ms)" if gap else ""
        rows.append(
            f"| streamed `hash_file` of {label} of {f['mb']} MB with progress "
            f"({r['progress_reports']} reports); without{gap_text} | "
            f"{r['progress_mb_s']:.0f} MB/s; "
            f"{r['plain_mb_s']:.0f} MB/s | {anchor} {r['subtle_mb_s']:.0f} MB/s | "
            f"{r['progress_ratio']:.2f}×; {r['plain_ratio']:.2f}× | ≥ 0.7× with progress "
            f"{'✓' if met else '— not met'} |")
        reads = (f"read (4 MB slices / the Blob's stream) {s['read_slices']:.0f} / "
                 f"{s['read_stream']:.0f}, " if "read_slices" in s else "")
        rows.append(
            f"| … its stages in the worker, {label}, MB/s | {reads}read + copy into the heap "
            f"{s['read_and_copy']:.0f}, hashlib SHA-256 in memory {s['hashlib_in_memory']:.0f}, "
            f"read + copy + hash {s['read_copy_hash']:.0f}, + progress and cancel checks "
            f"{s['read_copy_hash_progress']:.0f} | — | — | — |")
    e = f.get("engines")
    if e:
        rows.append(
            f"| SHA-256 engines that can hash a stream, in a worker, on memory: hashlib "
            f"(Pyodide); hash-wasm 4.13 | {e['hashlib']:.0f} MB/s; {e['hash_wasm']:.0f} MB/s "
            f"| SubtleCrypto, one-shot only {e['subtle']:.0f} MB/s | "
            f"{e['hashlib'] / e['subtle']:.2f}×; {e['hash_wasm'] / e['subtle']:.2f}× | — |")
    return rows
