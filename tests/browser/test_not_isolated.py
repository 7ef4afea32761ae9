"""Without COOP/COEP: no SharedArrayBuffer, so progress and cancel travel as envelopes."""

from __future__ import annotations

from conftest import PAGE_HELPERS, Harness


def test_fallback_progress_cancel_and_reuse(plain_harness: Harness):
    assert plain_harness.js("crossOriginIsolated") is False
    plain_harness.py("import asyncio, time\n" + PAGE_HELPERS)
    result = plain_harness.py("""
        import asyncio, time, js
        import workerbridge
        from workerbridge import WorkerBridge, SharedCancellation
        B = await WorkerBridge.default().start()
        before = await settled_stats(B)  # other tests may share this page's bridge
        seen = []
        buf = js.testUtil.randomBuffer(48 * 1024 * 1024)
        expected = await js.testUtil.subtleHex("SHA-256", buf)
        got = await B.crypto.hash_file(buf, on_progress=lambda p: seen.append([p.done, p.percent]))

        big = js.Uint8Array.new(768 * 1024 * 1024).buffer
        task = asyncio.ensure_future(B.crypto.hash_file(big))
        await asyncio.sleep(0.4)
        task_latency = await cancel_and_time(task)
        t1 = time.perf_counter(); stats = await settled_stats(B)
        task_after = time.perf_counter() - t1

        token = SharedCancellation()
        big = js.Uint8Array.new(768 * 1024 * 1024).buffer
        task = asyncio.ensure_future(B.crypto.hash_file(big, cancel=token))
        await asyncio.sleep(0.4)
        outcome, _ = await cancel_by_token(task, token)
        t2 = time.perf_counter(); stats2 = await settled_stats(B)
        {"isolated": B.isolated, "shared_token": token.is_shared, "hash_ok": got == expected,
         "progress": seen, "task_latency": task_latency, "task_after": task_after,
         "stats": stats, "outcome": outcome, "token_after": time.perf_counter() - t2,
         "stats2": stats2, "before": before, "clean": not B.pool.pending_ids() and B.pool.pending() == 0}
    """)
    assert result["isolated"] is False and result["shared_token"] is False
    assert result["hash_ok"]
    dones = [p[0] for p in result["progress"]]
    assert len(dones) >= 2 and dones == sorted(dones) and result["progress"][-1][1] == 100.0
    assert result["task_latency"] < 0.05 and result["task_after"] < 0.5
    cancelled_before = result["before"]["cancelled"]
    assert result["stats"]["cancelled"] == cancelled_before + 1
    assert result["outcome"] == "cancelled" and result["token_after"] < 0.5
    assert result["stats2"]["cancelled"] == cancelled_before + 2 and result["clean"]
