"""The streamed paths users take: ``hash_file`` with and without ``on_progress``, on a
256 MB ArrayBuffer and File, beside the browser's one-shot engine in the same run, and
the split of the streamed path into its stages (read, copy into the WebAssembly heap,
hash, progress), measured in a worker by bench/pages/streamstages.py. The engines that
could hash a stream are compared in the same run: hashlib (in the stages), and
hash-wasm's SHA-256 (npm, a benchmark-only dependency) in a plain module worker."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from conftest import CHROMIUM_FLAGS, Harness, PeakRss, renderers_rss

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
MIB = 1024 * 1024
SIZES = (256, 1024)  # MB
OPS = ("hash", "chunk", "encrypt", "decrypt", "compress")
ROUNDS = {256: 2, 1024: 1}  # ours and the anchor alternate; each side's best is kept

# The page's responsiveness: a 5 ms interval timer, and the longest gap between its ticks;
# and each operation's one-shot browser engine, on the whole input, timed from the input
# (a File is read whole first, as `file.arrayBuffer()`).
PAGE_JS = """() => {
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
    const aes = crypto.subtle.importKey("raw", new Uint8Array(32).fill(9), "AES-GCM", false,
                                        ["encrypt", "decrypt"]);
    const iv = new Uint8Array(12);
    window.benchSealed = async (buf) => crypto.subtle.encrypt(
        { name: "AES-GCM", iv }, await aes, buf);
    window.benchOneShot = async (op, input) => {
        const key = await aes;
        const t = performance.now();
        if (op === "compress") {
            const body = input instanceof Blob ? input.stream() : new Response(input).body;
            await new Response(body.pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
            return performance.now() - t;
        }
        const data = input instanceof Blob ? await input.arrayBuffer() : input;
        if (op === "encrypt") await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, data);
        else if (op === "decrypt") await crypto.subtle.decrypt({ name: "AES-GCM", iv }, key, data);
        else await crypto.subtle.digest("SHA-256", data);
        return performance.now() - t;
    };
}"""

SETUP = """
import js
from workerbridge import WorkerBridge
S = await WorkerBridge(modules=["/bench/streamstages.py"]).start()
KEY = bytes(range(32))
MIB = 1024 * 1024

def picked(mb):
    f = js.document.getElementById("benchfile").files.item(0)  # a file on disk
    return f if int(f.size) == mb * MIB else f.slice(0, mb * MIB)

async def source(op, kind, mb, anchor=False):
    \"\"\"The input of one run, made before its clock starts.\"\"\"
    if kind == "file" and op != "decrypt":
        return picked(mb)
    plain = await picked(mb).arrayBuffer()
    if op != "decrypt":
        return plain
    if anchor:
        sealed = await js.benchSealed(plain)
        return js.File.new([sealed], "sealed.bin") if kind == "file" else sealed
    global NONCE
    sealed = await S.crypto.encrypt_file(plain, KEY)
    NONCE = sealed.nonce
    return js.File.new([sealed.ciphertext], "sealed.bin") if kind == "file" \\
        else sealed.ciphertext

async def ours(op, kind, mb, progress):
    d = await source(op, kind, mb)
    reports = []
    report = (lambda p: reports.append(p.done)) if progress else None
    ticks = js.benchTicker()
    t = js.performance.now()
    if op == "hash":
        await S.crypto.hash_file(d, on_progress=report)
    elif op == "chunk":
        await S.file.chunk_file(d, on_progress=report)
    elif op == "encrypt":
        await S.crypto.encrypt_file(d, KEY, on_progress=report)
    elif op == "decrypt":
        await S.crypto.decrypt_file(d, KEY, NONCE, on_progress=report)
    else:
        await S.compression.compress_data(d, on_progress=report)
    return [js.performance.now() - t, len(reports), ticks.stop()]

async def one_shot(op, kind, mb):
    return await js.benchOneShot(op, await source(op, kind, mb, anchor=True))
"""


def data_file(folder: Path) -> Path:
    """1 GB on disk, a random 1 MB block over and over: what the File runs read."""
    block = os.urandom(MIB)
    path = folder / "bench-1g.bin"
    with path.open("wb") as out:
        for _ in range(max(SIZES)):
            out.write(block)
    return path


def memory_of_a_1gb_hash(h: Harness) -> dict[str, float]:
    """The 1 GB File hashed with progress: the peak above idle of the renderers' resident
    memory, and the growth of the worker's WebAssembly heap (which never shrinks)."""
    heap = h.py('await S.request("stages", "heap")')
    idle = min(renderers_rss() for _ in range(10))
    peak = PeakRss()
    h.py(f'await ours("hash", "file", {max(SIZES)}, True)', timeout=600)
    top = peak.stop()
    return {"rss_above_idle_mb": (top - idle) / MIB,
            "wasm_heap_growth_mb": (h.py('await S.request("stages", "heap")') - heap) / MIB}


def bench_page(browser: Any, origin: str, data: Path, profile: str) -> tuple[Any, Harness]:
    """A fresh browser with a profile on disk (``profile``), and a page with the bench
    bridge and ``data`` picked as a File. On disk, as a user's browser has: an in-memory
    (incognito) profile keeps all Blob data in RAM, and a 1 GB ciphertext made into a
    File outgrows it."""
    context = browser.browser_type.launch_persistent_context(
        profile, executable_path=os.environ.get("WORKERBRIDGE_CHROMIUM", "/usr/bin/chromium"),
        args=CHROMIUM_FLAGS)
    h = Harness(context.new_page(), origin)
    h.js(PAGE_JS)
    h.js("""() => { const i = document.createElement("input"); i.type = "file";
                    i.id = "benchfile"; document.body.append(i); }""")
    h.page.set_input_files("#benchfile", str(data))
    h.py(SETUP)
    return context, h


def bench_streamed(browser: Any, origin: str) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": {}}
    with tempfile.TemporaryDirectory() as folder:
        data = data_file(Path(folder))
        # Each operation on a page (and renderer) of its own: the 1 GB runs leave GBs of
        # buffers for the garbage collector, which one renderer cannot hold for them all.
        for op in ("memory", *OPS, "stages"):
            context, h = bench_page(browser, origin, data, str(Path(folder) / op))
            try:
                if op == "memory":
                    out["memory_1gb_file"] = memory_of_a_1gb_hash(h)
                elif op == "stages":
                    for kind in ("buffer", "file"):
                        d = "picked(256)" if kind == "file" else "await picked(256).arrayBuffer()"
                        out[f"stages {kind}"] = h.py(
                            f'await S.request("stages", "hash", {{"data": {d}}}, timeout=600)')
                    wasm = f"{origin}{HASH_WASM_PREFIX}/index.esm.min.js"
                    out["engines"] = h.js(HASH_WASM_JS, [256, wasm])
                    out["engines"]["hashlib"] = out["stages buffer"]["hashlib_in_memory"]
                else:
                    for kind in ("buffer", "file"):
                        for mb in SIZES:
                            out["runs"][f"{op} {kind} {mb}"] = measure(h, op, kind, mb)
            finally:
                context.close()
    return out


def measure(h: Harness, op: str, kind: str, mb: int) -> dict[str, Any]:
    """MB/s of one operation with and without progress, and of its one-shot engine: the
    best of the rounds; and the page's longest gap between 5 ms ticks over all of ours."""
    runs: dict[str, list[float]] = {"progress": [], "plain": [], "anchor": []}
    reports, gaps = 0, []
    for _ in range(ROUNDS[mb]):
        for progress in (True, False):
            ms, n, gap = h.py(f'await ours("{op}", "{kind}", {mb}, {progress})', timeout=900)
            runs["progress" if progress else "plain"].append(ms)
            reports = n if progress else reports
            gaps.append(gap)
        runs["anchor"].append(h.py(f'await one_shot("{op}", "{kind}", {mb})', timeout=900))
    best = {k: mb / (min(v) / 1000) for k, v in runs.items()}
    return {"progress_mb_s": best["progress"], "plain_mb_s": best["plain"],
            "one_shot_mb_s": best["anchor"], "progress_reports": reports,
            "progress_ratio": best["progress"] / best["anchor"],
            "plain_ratio": best["plain"] / best["anchor"],
            "main_thread_longest_gap_ms": max(gaps)}


NAMES = {"hash": "`hash_file`", "chunk": "`chunk_file` (SHA-256 per 4 MB chunk)",
         "encrypt": "`encrypt_file`", "decrypt": "`decrypt_file`",
         "compress": "`compress_data` (gzip)"}
ENGINES = {"hash": "`subtle.digest`", "chunk": "`subtle.digest`",
           "encrypt": "`subtle.encrypt`", "decrypt": "`subtle.decrypt`",
           "compress": "`CompressionStream`"}
TARGETS = {("hash", "file"): 0.7, ("hash", "buffer"): 0.7, ("chunk", "file"): 0.6,
           ("chunk", "buffer"): 0.6}


def streamed_rows(f: dict[str, Any]) -> list[str]:
    if "runs" not in f:
        return []
    rows = []
    gaps = []
    for op in OPS:
        for kind, label in (("file", "a File"), ("buffer", "an ArrayBuffer")):
            cells, anchors, ratios = [], [], []
            for mb in SIZES:
                r = f["runs"][f"{op} {kind} {mb}"]
                gaps.append(r["main_thread_longest_gap_ms"])
                size = f"{mb} MB" if mb < 1024 else f"{mb // 1024} GB"
                cells.append(f"{size}: {r['progress_mb_s']:.0f}; {r['plain_mb_s']:.0f}")
                anchors.append(f"{size}: {r['one_shot_mb_s']:.0f}")
                ratios.append(f"{r['progress_ratio']:.2f}×; {r['plain_ratio']:.2f}×")
            target = TARGETS.get((op, kind))
            first = f["runs"][f"{op} {kind} {SIZES[0]}"]["progress_ratio"]
            goal = "—" if target is None else \
                f"≥ {target}× with progress {'✓' if first >= target else '— not met'}"
            rows.append(f"| {NAMES[op]} of {label}, MB/s with progress; without | "
                        f"{'; '.join(cells)} | one-shot {ENGINES[op]}"
                        f"{' after `file.arrayBuffer()`' if kind == 'file' else ''}, MB/s: "
                        f"{'; '.join(anchors)} | {'; '.join(ratios)} | {goal} |")
    m = f["memory_1gb_file"]
    rows.append(f"| memory while hashing a 1 GB File (on disk) with progress: the renderer "
                f"processes' peak above idle (the worker's WebAssembly heap grew by) | "
                f"{m['rss_above_idle_mb']:.0f} MB ({m['wasm_heap_growth_mb']:.0f} MB) | — | — "
                f"| ≤ 64 MB {'✓' if m['rss_above_idle_mb'] <= 64 else '— not met'} |")
    rows.append(f"| the page's longest gap between 5 ms timer ticks, over every run above | "
                f"{max(gaps):.0f} ms | — | — | < 50 ms {'✓' if max(gaps) < 50 else '— not met'} |")
    for kind, label in (("file", "a File"), ("buffer", "an ArrayBuffer")):
        s = f[f"stages {kind}"]
        reads = (f"read on the worker's thread {s['read_here']:.0f}, read by the helper + copy "
                 f"into the heap {s['read_by_helper_and_copy']:.0f}" if kind == "file"
                 else f"copy into the heap {s['copy_into_heap']:.0f}")
        rows.append(
            f"| the streamed hash's stages in the worker, {label} of 256 MB, MB/s | {reads}, "
            f"hashlib SHA-256 in memory {s['hashlib_in_memory']:.0f}, read + copy + hash "
            f"{s['read_copy_hash']:.0f}, + progress and cancel checks "
            f"{s['read_copy_hash_progress']:.0f} | — | — | — |")
    e = f["engines"]
    rows.append(
        f"| SHA-256 engines that can hash a stream, in a worker, on memory: hashlib "
        f"(Pyodide); hash-wasm 4.13 | {e['hashlib']:.0f} MB/s; {e['hash_wasm']:.0f} MB/s "
        f"| SubtleCrypto, one-shot only {e['subtle']:.0f} MB/s | "
        f"{e['hashlib'] / e['subtle']:.2f}×; {e['hash_wasm'] / e['subtle']:.2f}× | — |")
    return rows
