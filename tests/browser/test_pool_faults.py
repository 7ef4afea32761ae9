"""The pool in real Chromium, with every fault injected for real.

After each fault: the right exception type, no future left pending, the pool serving.
"""

from __future__ import annotations

import pytest

from conftest import Harness, PyError


@pytest.fixture(scope="module")
def pool(harness: Harness) -> Harness:
    harness.py("""
        import asyncio, time, js, warnings
        import workerbridge
        from workerbridge import WorkerBridge, SharedCounter, SharedFlag, RetryPolicy
        P = await WorkerBridge(workers=4, modules=["./faults.py"],
                               heartbeat_interval=0.25).start()
        await P.pool.wait_all_ready()

        def clean(b=None):
            b = b or P
            return not b.pool.pending_ids() and b.pool.pending() == 0

        async def serving(b=None):
            b = b or P
            return await b.request("system", "echo", {"ok": 1}, timeout=30) == {"ok": 1}

        async def wait_restarts(before, limit=30.0):
            deadline = time.monotonic() + limit
            while P.stats().restarts <= before and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await P.pool.wait_all_ready()
            return P.stats().restarts - before
    """)
    assert harness.py("P.stats().size") == 4
    return harness


def error_of(harness: Harness, code: str) -> PyError:
    with pytest.raises(PyError) as info:
        harness.py(code)
    return info.value


def test_handler_that_closes_its_worker(pool: Harness):
    before = pool.py("P.stats().restarts")
    err = error_of(pool, 'await P.request("faults", "close", {}, retries=0)')
    assert err.type == "WorkerCrashedError" and "closed itself" in err.message
    assert pool.py(f"await wait_restarts({before})") == 1
    assert pool.py("clean() and await serving()") is True


def test_crash_is_retried_on_another_worker(pool: Harness):
    result = pool.py("""
        once = SharedFlag()
        before = P.stats().restarts
        r = await P.request("faults", "close", {"once": once.buffer}, retries=1)
        [r, await wait_restarts(before), clean()]
    """)
    assert result == ["survived", 1, True]


def test_loop_that_ignores_the_interrupt_gets_its_worker_replaced(pool: Harness):
    result = pool.py("""
        before = P.stats().restarts
        t0 = time.monotonic()
        try:
            await P.request("faults", "stubborn_spin", {"seconds": 60}, timeout=0.5)
            outcome = "finished"
        except workerbridge.RequestTimeoutError:
            outcome = "timeout"
        waited = time.monotonic() - t0
        [outcome, waited, await wait_restarts(before), clean(), await serving()]
    """)
    outcome, waited, restarts, clean, serving = result
    assert outcome == "timeout" and waited < 2
    assert restarts == 1 and clean and serving


def test_handler_that_raises(pool: Harness):
    before = pool.py("P.stats().restarts")
    err = error_of(pool, 'await P.request("faults", "raise", {"secret": "s3cr3t"})')
    assert err.type == "RemoteError" and "s3cr3t" not in err.message
    after = pool.py("[P.stats().restarts, clean(), await serving()]")
    assert after == [before, True, True]  # no restart for a handler's own exception


def test_handler_that_never_answers_times_out_and_the_worker_lets_go(pool: Harness):
    result = pool.py("""
        before = P.stats().restarts
        try:
            await P.request("faults", "never", {}, timeout=0.3)
            outcome = "answered"
        except workerbridge.RequestTimeoutError:
            outcome = "timeout"
        await asyncio.sleep(0.3)
        [outcome, P.stats().restarts - before, P.stats().in_flight, clean(), await serving()]
    """)
    assert result == ["timeout", 0, 0, True, True]


def test_burst_of_10000_against_the_queue_cap(pool: Harness):
    result = pool.py("""
        B2 = P.pool
        saved = B2.max_queue
        B2.max_queue = 1000
        accepted, refused = [], 0
        for i in range(10_000):
            try:
                accepted.append(B2.submit("system", "echo", i))
            except workerbridge.QueueFullError:
                refused += 1
        results = await asyncio.gather(*accepted)
        B2.max_queue = saved
        [len(accepted), refused, results == [f.result() for f in accepted],
         sorted(results) == results, clean()]
    """)
    accepted, refused, consistent, _, clean = result
    assert accepted + refused == 10_000
    assert 1000 <= accepted < 10_000 and refused > 0
    assert consistent and clean


def test_least_busy_beats_round_robin_on_mixed_work(pool: Harness):
    orders = pool.py("""
        async def mixed(strategy):
            P.pool.strategy = strategy
            done = []
            long = asyncio.ensure_future(P.request("faults", "busy", {"seconds": 1.5, "tag": "long"}))
            long.add_done_callback(lambda f: done.append(f.result()))
            await asyncio.sleep(0.1)
            for i in range(8):
                done.append(await P.request("faults", "busy", {"seconds": 0.01, "tag": f"short{i}"}))
            await long
            return done
        [await mixed("round-robin"), await mixed("least-busy")]
    """)
    round_robin, least_busy = orders
    assert least_busy[-1] == "long", least_busy  # every short ran beside the long job
    assert round_robin.index("long") < len(round_robin) - 1, round_robin  # some waited behind it
    assert pool.py("P.pool.strategy") == "least-busy"


def test_shared_counter_across_four_workers_is_exact(pool: Harness):
    result = pool.py("""
        counter = SharedCounter()
        await P.pool.map("faults", "count", [{"counter": counter.buffer, "n": 100_000}] * 4)
        [counter.get(), counter.is_shared]
    """)
    assert result == [400_000, True]


def test_shared_flag_wakes_a_waiting_worker(pool: Harness):
    woke, waited = pool.py("""
        flag = SharedFlag()
        call = asyncio.ensure_future(P.request("faults", "wait_flag", {"flag": flag.buffer, "timeout": 20}))
        await asyncio.sleep(0.3)
        flag.set()
        await call
    """)
    assert woke is True and 0.2 < waited < 5


def test_custom_channel_namespace(pool: Harness):
    assert pool.py("""
        W = WorkerBridge(modules=["./wordcount.py"])
        await W.channel("text").word_count(text="one two three")
    """) == 3


def test_main_thread_fallback_forced_and_automatic(pool: Harness):
    result = pool.py("""
        data = bytes(range(256)) * 5000
        in_worker = await P.crypto.hash_file(data, "SHA-384")
        with warnings.catch_warnings(record=True) as forced:
            warnings.simplefilter("always")
            M = WorkerBridge(fallback="main")
        on_main = await M.crypto.hash_file(data, "SHA-384")
        with warnings.catch_warnings(record=True) as auto:
            warnings.simplefilter("always")
            A = WorkerBridge(base_url="./no-such-bundle/")
            via_auto = await A.crypto.hash_file(data, "SHA-384")
        [in_worker == on_main == via_auto, len(forced), len(auto),
         M.stats().fallback, A.stats().fallback, P.stats().fallback]
    """)
    assert result == [True, 1, 1, True, True, False]


def test_terminate_with_requests_in_flight(pool: Harness):
    result = pool.py("""
        T = await WorkerBridge(workers=1, modules=["./faults.py"]).start()
        drained = [T.pool.submit("faults", "busy", {"seconds": 0.05, "tag": i}) for i in range(4)]
        await T.pool.terminate()
        drained_ok = [f.result() for f in drained] == [0, 1, 2, 3]
        F = await WorkerBridge(workers=1, modules=["./faults.py"]).start()
        calls = [F.pool.submit("faults", "never", {}) for _ in range(3)]
        await asyncio.sleep(0.1)
        await F.close()
        kinds = []
        for c in calls:
            try:
                await c
            except workerbridge.ShutdownError:
                kinds.append("ShutdownError")
        try:
            await F.request("system", "echo", 1)
        except workerbridge.ShutdownError:
            kinds.append("refused")
        [drained_ok, kinds, clean(T), clean(F)]
    """)
    assert result == [True, ["ShutdownError"] * 3 + ["refused"], True, True]


def test_pool_from_modules_or_a_worker_script(pool: Harness):
    result = pool.py("""
        from workerbridge import WorkerPool
        cores = js.navigator.hardwareConcurrency
        WP = WorkerPool(["./wordcount.py"])
        await WP.wait_all_ready()
        words = await WP.execute("text", "word_count", {"text": "x y"})
        size = WP.stats().size
        await WP.terminate()
        JP = WorkerPool("./plain-worker.mjs", size=1)
        doubled = await JP.map("js", "double", [1, 2, 3])
        try:
            await JP.execute("js", "nothing", 1)
            unknown = "answered"
        except workerbridge.UnknownOperationError:
            unknown = "UnknownOperationError"
        await JP.terminate()
        [words, size == cores, doubled, unknown]
    """)
    assert result == [2, True, [2, 4, 6], "UnknownOperationError"]
