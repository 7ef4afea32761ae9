"""hash_file end to end from a PyScript page: real Chromium, real Workers, real Pyodide."""

from __future__ import annotations

import hashlib
import time

import pytest

from conftest import PAGE_HELPERS, Harness, PyError


@pytest.fixture(scope="module")
def bridge(harness: Harness) -> Harness:
    """The page's default bridge, booted, plus a second one with the test-only handlers."""
    harness.py("""
        import asyncio, time, js
        from workerbridge import WorkerBridge, SharedCancellation
        import workerbridge
        B = await WorkerBridge.default().start()
        FB = await WorkerBridge(modules=["./faults.py"]).start()
        def no_pending(*bridges):
            return all(not b.pool.pending_ids() and b.pool.pending() == 0 for b in bridges)
    """)
    harness.py(PAGE_HELPERS)
    return harness


def test_page_is_isolated_and_everything_stays_on_its_origin(bridge: Harness):
    assert bridge.js("crossOriginIsolated") is True
    assert bridge.py("B.isolated and FB.isolated") is True
    assert bridge.requests, "no requests were recorded"
    # The bundle asks only its own origin; other tests' servers all live on 127.0.0.1.
    foreign = [u for u in bridge.requests if not u.startswith(bridge.origin + "/")
               and not u.startswith(f"blob:{bridge.origin}/")
               and not u.startswith("http://127.0.0.1:")]
    assert foreign == []


NIST = {  # FIPS 180 examples
    b"abc": {
        "SHA-1": "a9993e364706816aba3e25717850c26c9cd0d89d",
        "SHA-256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    },
    b"": {"SHA-256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq": {
        "SHA-256": "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    },
}


ALGORITHMS = ("SHA-1", "SHA-256", "SHA-384", "SHA-512")
BIG = "bytes(range(256)) * 20480"  # 5 MB: big enough for the one-shot engine


def test_nist_vectors(bridge: Harness):
    small = [(msg, alg) for msg in NIST for alg in ALGORITHMS]
    small.append((b"a" * 1_000_000, "SHA-256"))
    got = bridge.py(f"""
        cases = {small!r} + [({BIG}, a) for a in {ALGORITHMS!r}]
        [await WorkerBridge.crypto.hash_file(m, a) for m, a in cases]
    """)
    # The same cases through the streaming engine (hashlib), which progress selects.
    streamed = bridge.py("""
        [await WorkerBridge.crypto.hash_file(m, a, on_progress=lambda p: None) for m, a in cases]
    """)
    assert streamed == got
    big = bytes(range(256)) * 20480
    cases = small + [(big, alg) for alg in ALGORITHMS]
    for (msg, alg), digest in zip(cases, got, strict=True):
        assert digest == hashlib.new(alg.replace("-", "").lower(), msg).hexdigest()
        if alg in NIST.get(msg, {}):
            assert digest == NIST[msg][alg]
    assert got[len(small) - 1] == \
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"


def test_64mb_arraybuffer_is_transferred_and_matches_subtle(bridge: Harness):
    result = bridge.py("""
        buf = js.testUtil.randomBuffer(64 * 1024 * 1024)
        expected = await js.testUtil.subtleHex("SHA-256", buf)
        got = await B.crypto.hash_file(buf)
        [got, expected, buf.byteLength, no_pending(B)]
    """)
    got, expected, length_after, clean = result
    assert got == expected
    assert length_after == 0, "the ArrayBuffer should have been transferred (detached)"
    assert clean


def test_typed_array_views_and_shared_buffers(bridge: Harness):
    got = bridge.py("""
        buf = js.testUtil.randomBuffer(3 * 1024 * 1024 + 17)
        whole = js.Uint8Array.new(buf.slice(0))
        part = js.Uint8Array.new(buf, 5, 1_000_000)
        expected_part = await js.testUtil.subtleHex("SHA-384", part.slice())
        expected_whole = await js.testUtil.subtleHex("SHA-384", buf)
        sab = js.SharedArrayBuffer.new(1000)
        js.Uint8Array.new(sab).set(js.Uint8Array.new(buf, 0, 1000))
        expected_sab = await js.testUtil.subtleHex("SHA-1", js.Uint8Array.new(buf, 0, 1000).slice())
        [await B.crypto.hash_file(part, "SHA-384") == expected_part,
         buf.byteLength > 0,  # a partial view is copied, its buffer is not detached
         await B.crypto.hash_file(whole, "SHA-384") == expected_whole,
         await B.crypto.hash_file(sab, "SHA-1") == expected_sab,
         await B.crypto.hash_file(bytearray(b"abc"), "SHA-1") == "a9993e364706816aba3e25717850c26c9cd0d89d",
         await B.crypto.hash_file(memoryview(b"xabc")[1:], "SHA-1") == "a9993e364706816aba3e25717850c26c9cd0d89d"]
    """)
    assert got == [True] * 6


def test_file_is_read_in_chunks_and_matches_subtle(bridge: Harness):
    got, expected, size = bridge.py("""
        size = 40 * 1024 * 1024 + 12345  # not a multiple of the chunk size
        buf = js.testUtil.randomBuffer(size)
        expected = await js.testUtil.subtleHex("SHA-512", buf)
        opts = js.Object.new(); opts.type = "application/octet-stream"
        f = js.File.new([buf], "random.bin", opts)
        [await B.crypto.hash_file(f, "SHA-512"), expected, int(f.size)]
    """)
    assert got == expected and size == 40 * 1024 * 1024 + 12345


def test_streamed_reads_are_exact_at_every_chunk_boundary(bridge: Harness):
    # A File is read through its stream, in pieces of the browser's choosing, and handed
    # on in 8 MB chunks: at 0 and 1 byte, and a chunk boundary and two, ± 1, every byte
    # is hashed once, in order (with progress: the streamed path, not the one-shot one).
    mb8 = 8 * 1024 * 1024
    # From 4 chunks a helper worker reads ahead (core.feed): its boundaries the same way.
    sizes = [0, 1, mb8 - 1, mb8, mb8 + 1, 2 * mb8 - 1, 2 * mb8, 2 * mb8 + 1,
             4 * mb8 - 1, 4 * mb8, 4 * mb8 + 1, 5 * mb8 + 1]
    got = bridge.py(f"""
        out = []
        for size in {sizes}:
            buf = js.testUtil.randomBuffer(size)
            want = await js.testUtil.subtleHex("SHA-256", buf)
            seen = []
            digest = await B.crypto.hash_file(js.testUtil.file(buf, "b.bin"),
                                              on_progress=lambda p: seen.append(p.done))
            out.append([digest == want, seen[-1] if seen else 0])
        out
    """)
    assert got == [[True, size] for size in sizes]


def test_hashing_a_large_file_keeps_worker_memory_flat(bridge: Harness):
    grew, digest_ok = bridge.py("""
        size = 384 * 1024 * 1024
        u8 = js.Uint8Array.new(size)
        u8.fill(3)
        f = js.File.new([u8], "big.bin")
        expected = await js.testUtil.subtleHex("SHA-256", u8)
        del u8
        before = await FB.request("faults", "wasm_heap")
        got = await FB.crypto.hash_file(f)
        after = await FB.request("faults", "wasm_heap")
        [after - before, got == expected]
    """)
    assert digest_ok
    assert grew < 64 * 1024 * 1024, f"worker memory grew by {grew} bytes for a 384 MB file"


def test_progress_is_monotone_bounded_and_ends_at_100(bridge: Harness):
    reports = bridge.py("""
        seen = []
        buf = js.Uint8Array.new(128 * 1024 * 1024).buffer
        await B.crypto.hash_file(buf, on_progress=lambda p: seen.append([p.done, p.total, p.percent, time.monotonic()]))
        seen
    """)
    assert len(reports) >= 3, "expected intermediate progress during a 128 MB hash"
    dones = [r[0] for r in reports]
    assert dones == sorted(dones)
    assert all(r[1] == 128 * 1024 * 1024 for r in reports)
    assert reports[-1][2] == 100.0 and reports[-1][0] == reports[-1][1]
    assert all(0 <= r[2] <= 100 for r in reports)
    span = reports[-1][3] - reports[0][3]
    assert len(reports) <= 30 * span + 3, "progress callbacks exceed ~30 per second"


def test_cancelling_the_task_stops_the_worker_and_reuses_it(bridge: Harness):
    latency, after, stats_before, stats_after, clean = bridge.py("""
        before = await settled_stats(B)
        buf = js.Uint8Array.new(768 * 1024 * 1024).buffer  # ~3 s of hashing
        task = asyncio.ensure_future(B.crypto.hash_file(buf))
        await asyncio.sleep(0.4)
        latency = await cancel_and_time(task)
        t1 = time.perf_counter()
        stats = await settled_stats(B)
        [latency, time.perf_counter() - t1, before, stats, no_pending(B)]
    """)
    assert latency < 0.05
    # The next request is answered at once: the 3 s hash really stopped, in the same worker.
    assert after < 0.5
    assert stats_after["cancelled"] == stats_before["cancelled"] + 1
    assert stats_after["served"] >= stats_before["served"] + 2
    assert stats_after["active"] == 0
    assert clean


def test_a_large_file_is_read_by_a_helper_worker_that_ends_with_the_hash(bridge: Harness):
    # From 32 MB a File is read ahead by a plain JS worker (core.feed) beside the hashing;
    # it ends when the hash ends, cancelled or not, and the worker goes on serving.
    def readers() -> list[str]:
        return [w.url for w in bridge.page.workers if w.url.startswith("blob:")]

    def readers_gone() -> bool:
        # Playwright hears of a terminated worker a moment later: wait for the news.
        deadline = time.monotonic() + 10
        while readers() and time.monotonic() < deadline:
            bridge.page.wait_for_timeout(50)
        return readers() == []

    assert readers_gone()  # the earlier tests' readers included
    try:
        bridge.py("""
            u8 = js.Uint8Array.new(384 * 1024 * 1024)  # ~1.5 s of hashing
            u8.fill(1)
            big = js.File.new([u8], "big.bin")
            del u8
            task = asyncio.ensure_future(B.crypto.hash_file(big, on_progress=lambda p: None))
            await asyncio.sleep(0.3)
        """)
        deadline = time.monotonic() + 1
        while not readers() and time.monotonic() < deadline:  # the news may lag, too
            bridge.page.wait_for_timeout(20)
        during = readers()
        latency, echo, clean = bridge.py("""
            latency = await cancel_and_time(task)
            [latency, await B.request("system", "echo", 1), no_pending(B)]
        """)
        assert len(during) == 1, during
        assert readers_gone() and latency < 0.05 and echo == 1 and clean
        digest = bridge.py("""
            await B.crypto.hash_file(big.slice(0, 40 * 1024 * 1024 + 3),
                                     on_progress=lambda p: None)
        """)
        assert digest == hashlib.sha256(b"\x01" * (40 * 1024 * 1024 + 3)).hexdigest()
        assert readers_gone()
    finally:
        bridge.py("big = None")  # the page's Blob data is bounded: let the next tests have it


def test_a_cancel_that_overtakes_its_request_stops_it_before_it_runs(bridge: Harness):
    # The worker is busy in Python when the page cancels a request still queued behind:
    # the interrupt is taken before that request arrives, and must not be lost.
    out = bridge.py("""
        before = await settled_stats(FB)
        busy = asyncio.ensure_future(FB.request("faults", "spin", {"seconds": 1.0}))
        await asyncio.sleep(0.2)
        buf = js.Uint8Array.new(512 * 1024 * 1024).buffer  # seconds of hashing
        task = asyncio.ensure_future(FB.crypto.hash_file(buf))
        await asyncio.sleep(0.05)
        latency = await cancel_and_time(task)
        spun = await busy
        t1 = time.perf_counter()
        stats = await settled_stats(FB)
        [latency, spun > 0, time.perf_counter() - t1, stats["cancelled"] - before["cancelled"],
         FB.stats().restarts, no_pending(FB)]
    """)
    latency, spun, after, cancelled, restarts, clean = out
    assert latency < 0.05 and spun
    assert after < 0.5, "the cancelled hash ran once the worker was free"
    assert cancelled == 1 and restarts == 0 and clean


def test_cancelling_a_one_shot_hash_frees_the_caller_and_the_worker(bridge: Harness):
    # 256 MB without progress goes to SubtleCrypto in one call, which cannot stop early:
    # the cancel must still release the caller at once and leave the worker serving.
    latency, after, stats, clean = bridge.py("""
        buf = js.Uint8Array.new(256 * 1024 * 1024).buffer
        task = asyncio.ensure_future(B.crypto.hash_file(buf))
        await asyncio.sleep(0.05)
        latency = await cancel_and_time(task)
        t1 = time.perf_counter()
        stats = await settled_stats(B)
        [latency, time.perf_counter() - t1, stats, no_pending(B)]
    """)
    assert latency < 0.05
    assert after < 0.5, "the worker was held by the abandoned digest"
    assert stats["active"] == 0 and clean


def test_cancel_token_raises_workerbridge_cancelled(bridge: Harness):
    result = bridge.py("""
        token = SharedCancellation()
        buf = js.Uint8Array.new(768 * 1024 * 1024).buffer
        task = asyncio.ensure_future(B.crypto.hash_file(buf, cancel=token))
        await asyncio.sleep(0.4)
        t0 = time.perf_counter()
        token.cancel()
        try:
            await task
            outcome = "finished"
        except workerbridge.CancelledError:
            outcome = "workerbridge.CancelledError"
        latency = time.perf_counter() - t0
        t1 = time.perf_counter()
        echo = await B.request("system", "echo", {"n": 1})
        [outcome, latency, time.perf_counter() - t1, echo, token.is_shared, no_pending(B)]
    """)
    outcome, latency, after, echo, shared, clean = result
    assert outcome == "workerbridge.CancelledError"
    assert latency < 0.05 and after < 0.5
    assert echo == {"n": 1} and shared is True and clean


def test_interrupt_stops_a_pure_python_loop(bridge: Harness):
    result = bridge.py("""
        task = asyncio.ensure_future(FB.request("faults", "spin", {"seconds": 10}))
        await asyncio.sleep(0.3)
        latency = await cancel_and_time(task)
        t1 = time.perf_counter()
        stats = await settled_stats(FB)
        [latency, time.perf_counter() - t1, stats, no_pending(FB)]
    """)
    latency, after, stats, clean = result
    assert latency < 0.05
    assert after < 0.5, "the spinning handler was not interrupted"
    assert stats["cancelled"] >= 1 and stats["active"] == 0 and clean


def test_main_thread_stays_responsive_during_a_256mb_hash(bridge: Harness):
    max_gap = bridge.py("""
        buf = js.Uint8Array.new(256 * 1024 * 1024).buffer
        js.eval("window.__gaps = []; window.__last = performance.now(); "
                "window.__tick = setInterval(() => { const n = performance.now(); "
                "window.__gaps.push(n - window.__last); window.__last = n; }, 5)")
        await B.crypto.hash_file(buf, on_progress=lambda p: None)
        js.eval("clearInterval(window.__tick)")
        max(js.__gaps.to_py())
    """)
    assert max_gap < 100


def test_bad_input_raises_typed_errors_and_the_worker_keeps_serving(bridge: Harness):
    result = bridge.py("""
        out = []
        for args in [("text",), (12345,), (None,), (b"x", "MD5"), (b"x", 256), (js.Object.new(),)]:
            try:
                await B.crypto.hash_file(*args)
                out.append("no error")
            except workerbridge.WorkerBridgeError as exc:
                out.append(type(exc).__name__)
        buf = js.ArrayBuffer.new(8)
        await B.crypto.hash_file(buf)
        try:
            await B.crypto.hash_file(buf)  # detached by the first call
        except workerbridge.InvalidInputError as exc:
            out.append("detached: " + type(exc).__name__)
        try:
            await B.request("crypto", "hash_file", {"data": "not bytes", "algorithm": "SHA-256"})
        except workerbridge.WorkerBridgeError as exc:
            out.append("worker: " + type(exc).__name__)
        out.append(await B.crypto.hash_file(b"abc", "SHA-1"))
        out.append(no_pending(B))
        out
    """)
    assert result == ["InvalidTypeError", "InvalidTypeError", "InvalidTypeError",
                      "InvalidInputError", "InvalidInputError", "InvalidTypeError",
                      "detached: InvalidInputError", "worker: InvalidTypeError",
                      "a9993e364706816aba3e25717850c26c9cd0d89d", True]


def test_handler_exceptions_cross_as_codes_without_payload_data(bridge: Harness):
    with pytest.raises(PyError) as info:
        bridge.py('await FB.request("faults", "raise", {"secret": "hunter2-payload"})')
    assert info.value.type == "RemoteError"
    assert "hunter2" not in info.value.message
    assert bridge.py("no_pending(FB)") is True


def test_an_answer_the_page_cannot_read_settles_the_call_with_an_error(bridge: Harness):
    # A result nested past what the page can convert (the same goes for one too large for
    # the page's memory): the call ends with ProtocolError, not a wait without end.
    got = bridge.py("""
        try:
            await asyncio.wait_for(FB.request("faults", "deep_result", 1_500), 30)
            out = None
        except workerbridge.ProtocolError as exc:
            out = str(exc)
        [out, await FB.request("system", "echo", 2), no_pending(FB)]
    """)
    assert got == ["the worker's answer could not be read on the page (RecursionError)", 2,
                   True]


def test_missing_worker_script_raises_worker_crashed(bridge: Harness):
    with pytest.raises(PyError) as info:
        bridge.py('await WorkerBridge(base_url="./no-such-bundle/", fallback="never").start()')
    assert info.value.type == "WorkerCrashedError"
    assert "could boot" in info.value.message


def test_a_request_to_an_idle_worker_leaves_at_once_and_the_rest_of_its_turn_together(
        bridge: Harness):
    out = bridge.py("""
        assert no_pending(B)
        sent = js.Function.new("w", '''
            const log = [];
            const post = w.postMessage;
            w.postMessage = function (m) {
                log.push(typeof m === "string" ? JSON.parse(m) : null);
                return post.apply(this, arguments);
            };
            log.restore = () => { delete w.postMessage; };
            return log;''')(B.pool._slots[0].transport.worker)
        try:
            first = B.pool.submit("system", "echo", 1)
            at_once = sent.length
            rest = [B.pool.submit("system", "echo", i) for i in (2, 3)]
            still = sent.length
            results = [await first] + [await f for f in rest]
        finally:
            sent.restore()
        messages = [m.to_py() for m in list(sent)[:2]]
        {"at_once": at_once, "still": still, "results": results,
         "first": [messages[0]["kind"], messages[0]["payload"]],
         "second": [messages[1]["kind"], [m["payload"] for m in messages[1]["messages"]]]}
    """)
    assert out["results"] == [1, 2, 3]
    assert out["at_once"] == 1, "a request to an idle worker waited for the turn to end"
    assert out["still"] == 1, "requests behind it were not held for one message"
    assert out["first"] == ["request", 1]
    assert out["second"] == ["batch", [2, 3]]


def test_malformed_envelopes_posted_straight_to_a_worker(bridge: Harness):
    replies = bridge.js("""async () => {
        const w = new Worker("./dist/workerbridge/worker.mjs", { type: "module" });
        const inbox = [];
        let wake = null;
        w.onmessage = (e) => { inbox.push(e.data); if (wake) wake(); };
        const next = async () => {
            while (!inbox.length) await new Promise((r) => { wake = r; });
            const m = inbox.shift();
            return typeof m === "string" ? JSON.parse(m) : m;
        };
        const ready = await next();
        const bad = [null, 42, "garbage", "{\\"v\\":1}", {}, [1, 2],
            { v: 2, kind: "request", id: 5, channel: "system", op: "echo" },
            { v: 1, kind: "request", id: -1, channel: "system", op: "echo" },
            { v: 1, kind: "request", id: 6, channel: "system" },
            { v: 1, kind: "request", id: 7, channel: "nope", op: "nothing" },
            { v: 1, kind: "response", id: 8, payload: 1 },
            { v: 1, kind: "request", id: 9, channel: "crypto", op: "hash_file",
              payload: { data: 5, algorithm: "SHA-256" } }];
        const out = [];
        for (const m of bad) { w.postMessage(m); const r = await next(); out.push([r.kind, r.code, r.id ?? null]); }
        w.postMessage({ v: 1, kind: "request", id: 10, channel: "crypto", op: "hash_file",
                        payload: { data: new TextEncoder().encode("abc").buffer, algorithm: "SHA-1" } });
        const ok = await next();
        w.terminate();
        return { ready: ready.kind, out, ok: [ok.kind, ok.id, ok.payload] };
    }""")
    assert replies["ready"] == "ready"
    assert replies["out"] == [
        ["error", "protocol", None], ["error", "protocol", None], ["error", "protocol", None],
        ["error", "protocol", None], ["error", "version", None], ["error", "protocol", None],
        ["error", "version", 5], ["error", "protocol", None], ["error", "protocol", 6],
        ["error", "unknown_op", 7], ["error", "protocol", 8], ["error", "invalid_type", 9]]
    assert replies["ok"] == ["response", 10, "a9993e364706816aba3e25717850c26c9cd0d89d"]


def test_an_interrupt_taken_at_any_point_answers_the_request_once_in_pyodide(bridge: Harness):
    """tests/interrupt_points.py on the page's own Pyodide, whose Python starts a handler
    eagerly inside the runtime's dispatch: an interrupt taken as ``_run`` started, or as
    it went to post the answer, ended the task with no answer."""
    from pathlib import Path

    source = (Path(__file__).parent.parent / "interrupt_points.py").read_text()
    tried, problems = bridge.py(f"""
        points = {{"__name__": "interrupt_points"}}
        exec(compile({source!r}, "interrupt_points.py", "exec"), points)
        list(await points["check_every_point"]())
    """)
    assert problems == [], "\n".join(problems)
    assert tried > 50
