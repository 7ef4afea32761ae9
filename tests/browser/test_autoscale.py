"""An autoscaled pool in real Chromium: real workers grow from 1 to 4 under a backlog of
CPU-busy calls (booting from the snapshot), shrink back once idle, and drop nothing.

One pool for the whole file (``A``, workers=(1, 4)); the tests run in order and each
leaves it back at one idle worker.
"""

from __future__ import annotations

import pytest

from conftest import PAGE_HELPERS, Harness

N = 150_000  # one crunch: tens of ms of pure Python in a worker
EXPECTED = (N - 1) * N * (2 * N - 1) // 6


@pytest.fixture(scope="module")
def scaled(harness: Harness) -> Harness:
    harness.py(PAGE_HELPERS)
    harness.py(f"N, EXPECTED = {N}, {EXPECTED}")
    harness.py("""
        import asyncio, time, js
        import workerbridge
        from workerbridge import WorkerBridge, SharedFlag
        EVENTS = []
        A = await WorkerBridge(workers=(1, 4), modules=["./autoscale.py"], up_cooldown=0.5,
                               down_cooldown=1.0, on_scale=EVENTS.append).start()

        async def until(condition, limit):
            # True once condition() holds; False after `limit` seconds
            deadline = time.monotonic() + limit
            while not condition():
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.02)
            return True

        def crunches(n, first=0):
            return [A.pool.submit("autoscale", "crunch", {"n": N, "tag": i})
                    for i in range(first, first + n)]

        def clean():
            return not A.pool.pending_ids() and A.pool.pending() == 0
    """)
    return harness


def test_a_backlog_grows_the_pool_from_one_to_four(scaled: Harness):
    result = scaled.py("""
        before = A.stats()
        t0 = time.monotonic()
        futures = crunches(60)
        served = set()
        def all_served():
            served.update(f.result()[2] for f in futures if f.done() and not f.exception())
            # The backlog is topped up until every worker has served: a worker that boots
            # slowly (a loaded machine) must still find work when it is ready.
            if A.stats().queued < 20:
                futures.extend(crunches(20, len(futures)))
            return len(served) == 4
        # Not the benchmark's 2 s target: this machine runs other browsers' tests beside
        # this one, so the bound only catches a pool that never grows.
        grew = await until(all_served, 30)
        all_served_s = time.monotonic() - t0
        results = await asyncio.gather(*futures)
        snapshots = sorted(i["snapshot"] for i in A.pool.ready_info())
        stats = A.stats()
        [before.size, before.max_size, grew, all_served_s,
         [r[:2] for r in results] == [[i, EXPECTED] for i in range(len(results))],
         len({r[2] for r in results}),
         [(e.direction, e.before, e.after) for e in EVENTS], snapshots,
         stats.size, stats.scale_ups, stats.errors, stats.restarts, clean()]
    """)
    (size0, max0, grew, seconds, results, workers, events, snapshots, size, ups, errors,
     restarts, clean) = result
    assert (size0, max0) == (1, 4)
    assert grew, f"not every worker served within 30 s ({seconds:.1f} s)"
    assert results, "a crunch gave a wrong answer"
    assert workers == 4
    assert events[0] == ["up", 1, 4], events  # the whole backlog judged at once
    assert snapshots.count("loaded") >= 3, snapshots  # grown workers restored the snapshot
    assert (size, ups, errors, restarts, clean) == (4, 1, 0, 0, True)


def test_it_shrinks_back_to_min_once_idle(scaled: Harness):
    result = scaled.py("""
        t0 = time.monotonic()
        # down_cooldown is 1 s; the bound leaves room for a loaded machine.
        shrank = await until(lambda: A.stats().size == 1, 20)
        waited = time.monotonic() - t0
        stats = A.stats()
        [shrank, waited, (stats.size, stats.booting, stats.min_size, stats.scale_downs),
         [(e.direction, e.after) for e in EVENTS][-1], len(A.pool._slots), clean(),
         (await A.request("autoscale", "crunch", {"n": 10, "tag": "after"}))[:2]]
    """)
    shrank, waited, stats, last, slots, clean, answer = result
    assert shrank, f"still {stats} after {waited:.1f} s"
    assert stats[:3] == [1, 0, 1] and stats[3] >= 1
    assert last == ["down", 1] and slots == 1 and clean
    assert answer == ["after", 285]


def test_nothing_in_flight_is_dropped_while_the_pool_shrinks(scaled: Harness):
    result = scaled.py("""
        burst = crunches(40)
        grown = await until(lambda: A.stats().size == 4, 30)  # back up to 4
        burst = [r[:2] for r in await asyncio.gather(*burst)]
        EVENTS.clear()
        # A call that holds its worker until released, and short calls one after another
        # on the other workers, while the idle ones are retired (at most 2 of 4 busy:
        # the pool stays quiet enough to shrink).
        flag = SharedFlag()
        held = A.pool.submit("autoscale", "hold", {"flag": flag.buffer, "tag": "held"})
        shorts = []
        downs = lambda: [e for e in EVENTS if e.direction == "down"]
        t0 = time.monotonic()
        while not downs() and time.monotonic() - t0 < 20:
            shorts.append(await A.request("autoscale", "crunch",
                                          {"n": 1000, "tag": len(shorts)}))
        during = [(e.before, e.after, e.busy) for e in downs()]
        holding = not held.done()
        size_while_held = A.stats().size
        flag.set()
        held_result = (await held)[:2]
        await until(lambda: A.stats().size == 1, 20)
        stats = A.stats()
        [grown, burst, during, holding, size_while_held,
         held_result, all(r[:2] == [i, 332833500] for i, r in enumerate(shorts)),
         len(shorts), stats.size, stats.errors, stats.restarts, clean()]
    """)
    (grown, burst, during, holding, size_while_held, held_result, shorts_ok, n_shorts,
     size, errors, restarts, clean) = result
    assert grown and burst == [[i, EXPECTED] for i in range(40)]
    assert during and during[0][2] >= 1, during  # shrank while the held call ran
    assert holding, "the held call settled before its release"
    assert size_while_held >= 1
    assert held_result == ["held", True]
    assert shorts_ok and n_shorts > 0
    assert (size, errors, restarts, clean) == (1, 0, 0, True)


def test_bad_sizes_and_options_raise_typed_errors(scaled: Harness):
    refused = scaled.py("""
        cases = [dict(workers=(0, 4)), dict(workers=(4, 1)), dict(workers=(1, 2.5)),
                 dict(workers=(1,)), dict(workers=(1, 4), up_cooldown=-1),
                 dict(workers=(1, 4), scale_down_at=2), dict(workers=2, down_cooldown=1)]
        [refused(lambda c=c: WorkerBridge(modules=["./autoscale.py"], **c)) for c in cases]
    """)
    kinds = [r[0] if r else None for r in refused]
    assert kinds == ["InvalidInputError", "InvalidInputError", "InvalidTypeError",
                     "InvalidInputError", "InvalidInputError", "InvalidInputError",
                     "InvalidInputError"], refused


def test_close(scaled: Harness):
    assert scaled.py("await A.close()\nA.stats().size") == 0


def test_a_pipeline_stage_grows_and_shrinks_its_own_pool(scaled: Harness):
    got = scaled.py("""
        from workerbridge import Stage
        from workerbridge.jobs import store
        from workerbridge.jobs.engine import Jobs
        G = await WorkerBridge(workers=1, modules=["./autoscale.py"], fallback="never").start()
        J = Jobs(G.pool, db="t-stage-scale")
        STEPS = []
        P = await J.pipeline("grow", [Stage(
            "crunch", "autoscale.crunch", concurrency=64, workers=(1, 3),
            scaling={"up_cooldown": 0.2, "down_cooldown": 1.0, "on_scale": STEPS.append})])
        own = J._pools["pipeline:grow:crunch"]
        first = [own.stats().size, own is not G.pool]
        await P.publish_many([{"n": N, "tag": i} for i in range(120)])
        done = await until(lambda: sum(1 for s in STEPS if s.direction == "up") > 0, 60)
        async def all_done():
            return (await P.metrics())["crunch"]["done"] == 120
        deadline = time.monotonic() + 120
        while not await all_done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        rows = await J._tx(store.listing("pipeline:grow:crunch", "completed"), "readonly")
        # Idle: back to its minimum after the cooldown; closing the pipeline ends it.
        shrunk = await until(lambda: own.stats().size == 1, 30)
        metrics = await P.metrics()
        drained = await P.close(5)
        out = [first, done, max(s.after for s in STEPS), len(rows),
               sorted(r["result"][0] for r in rows) == list(range(120)),
               all(r["result"][1] == EXPECTED for r in rows), shrunk,
               metrics["crunch"]["workers"], drained, own.closed,
               "pipeline:grow:crunch" in J._pools, G.stats().size == 1]
        await J.close(timeout=0)
        await G.close()
        out
    """, timeout=300)
    first, grew, peak, count, every_tag, correct, shrunk, workers, drained, closed, kept, \
        main_alive = got
    assert first == [1, True]  # its own pool, starting at its minimum
    assert grew and peak == 3  # the stage's backlog grew it to its maximum
    assert count == 120 and every_tag and correct  # every event once, each answer right
    # Generous: a loaded machine may keep a worker busy for a while before the cooldown.
    assert shrunk and workers == 1
    assert drained and closed and not kept and main_alive
