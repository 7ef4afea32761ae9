"""The chaos run: a mixed workload on a pool while its workers are killed at random.

Loaded into the workers as a module (the ``chaos.*`` handlers) and run on the page from
its source (``run_chaos``), by ``python3 build.py chaos`` (bench/chaos.py) and by a
smaller run in the test suite (tests/browser/test_chaos.py).

Kills, each at a random moment: the pool terminates a worker (``restart_worker``), a
handler closes its own worker (``self.close()``), a handler leaves an uncaught error
behind in its worker, and a handler loops while swallowing the interrupt (only the
pool's cancel grace period ends it). Every call checks its own answer, so an answer
that belongs to another call is counted, not missed.
"""

import asyncio
import hashlib
import itertools
import random
import time
from collections import Counter

from workerbridge import Context, handler

KILLS = ("terminate", "close", "uncaught", "stuck")


@handler("chaos", "work")
async def work(ctx: Context, payload: dict) -> dict:
    """Some work of a given kind; the answer carries the caller's tag back."""
    seconds = payload["ms"] / 1000
    if payload["kind"] == "spin":  # pure Python
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
    else:  # waiting on the event loop
        await asyncio.sleep(seconds)
    return {"tag": payload["tag"]}


@handler("chaos", "uncaught")
async def uncaught(ctx: Context, payload: dict) -> None:
    """Leave an uncaught error in this worker's event loop (the page takes it for a crash)."""
    import js

    js.setTimeout(js.Function.new("throw new Error('chaos: an uncaught error')"), 0)
    await asyncio.sleep(30)


async def chaos_pool(workers=4):
    """The pool a chaos run drives: the chaos and faults handlers, quick heartbeats."""
    from workerbridge import WorkerBridge

    pool = await WorkerBridge(workers=workers, modules=["./faults.py", "./chaos.py"],
                              heartbeat_interval=0.25).start()
    await pool.pool.wait_all_ready()
    return pool


def percentile(values, q):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_chaos(pool, calls=5000, concurrency=32, seed=0, kill_every=(150, 350),
                    kills=KILLS):
    """Drive ``calls`` calls through ``pool`` (a WorkerBridge) while killing its workers.

    A kill comes after every ``kill_every`` calls started (a random count in that range),
    so how many there are does not depend on how fast this machine is; the kinds take
    turns in a shuffled order, so each comes once in every four kills.
    Returns the report: calls, results, errors by type, pending, restarts, recovery times.
    """
    import workerbridge

    rng = random.Random(seed)
    size = pool.pool.size
    report = {"calls": 0, "results": 0, "wrong_results": 0, "errors": Counter(),
              "untyped_errors": Counter(), "kills": Counter(), "kill_outcomes": Counter()}
    restarts_before = pool.stats().restarts
    done = asyncio.Event()  # every call has settled: no more kills
    watched = asyncio.Event()  # the pool is back to full size: recovery times are in
    episodes, down_since = [], None

    async def monitor():
        nonlocal down_since
        while not watched.is_set():
            ready = pool.stats().size
            now = time.monotonic()
            if ready < size and down_since is None:
                down_since = now
            elif ready == size and down_since is not None:
                episodes.append(now - down_since)
                down_since = None
            await asyncio.sleep(0.005)

    async def one(i):
        r = rng.random()
        report["calls"] += 1
        try:
            if r < 0.35:
                payload = {"n": i, "pad": "x" * rng.randrange(200)}
                ok = await pool.request("system", "echo", payload, timeout=30,
                                        idempotent=True) == payload
            elif r < 0.55:
                data = rng.randbytes(rng.randrange(1, 40_000))
                ok = await pool.crypto.hash_file(data) == hashlib.sha256(data).hexdigest()
            else:
                tag = f"call-{i}"
                kind = "spin" if rng.random() < 0.5 else "sleep"
                answer = await pool.request("chaos", "work",
                                            {"tag": tag, "kind": kind, "ms": rng.randrange(1, 25)},
                                            timeout=30, idempotent=True)
                ok = answer == {"tag": tag}
        except workerbridge.WorkerBridgeError as exc:
            report["errors"][type(exc).__name__] += 1
            return
        except Exception as exc:  # not from the one hierarchy: counted, must stay 0
            report["untyped_errors"][type(exc).__name__] += 1
            return
        if ok:
            report["results"] += 1
        else:
            report["wrong_results"] += 1

    async def kill(mode):
        report["kills"][mode] += 1
        try:
            if mode == "terminate":
                if not pool.pool.restart_worker(rng.randrange(size), "chaos"):
                    report["kill_outcomes"]["not ready"] += 1
                return
            if mode == "close":
                await pool.request("faults", "close", {}, retries=0, timeout=30)
            elif mode == "uncaught":
                await pool.request("chaos", "uncaught", {}, retries=0, timeout=30)
            else:
                await pool.request("faults", "stubborn_spin", {"seconds": 30}, retries=0,
                                   timeout=0.3)
            report["kill_outcomes"]["answered"] += 1
        except workerbridge.WorkerBridgeError as exc:
            report["kill_outcomes"][type(exc).__name__] += 1

    async def killer():
        tasks, turns = [], []
        at = rng.randint(*kill_every)
        while not done.is_set():
            await asyncio.sleep(0.005)
            if report["calls"] >= at and report["calls"] < calls:
                at += rng.randint(*kill_every)
                if not turns:
                    turns = rng.sample(kills, len(kills))
                tasks.append(asyncio.ensure_future(kill(turns.pop())))
        await asyncio.gather(*tasks)

    async def lane(counter):
        while True:
            i = next(counter)
            if i >= calls:
                return
            await one(i)

    started = time.monotonic()
    watch = asyncio.ensure_future(monitor())
    killing = asyncio.ensure_future(killer())
    counter = itertools.count()
    lanes = [asyncio.ensure_future(lane(counter)) for _ in range(concurrency)]
    _, hanging = await asyncio.wait(lanes, timeout=600)
    report["seconds"] = time.monotonic() - started
    done.set()
    await killing
    await pool.pool.wait_all_ready()
    await asyncio.sleep(0.05)  # the monitor sees the pool whole (it looks every 5 ms)
    watched.set()
    await watch
    report["pending"] = len(hanging) + pool.pool.pending() + len(pool.pool.pending_ids())
    report["restarts"] = pool.stats().restarts - restarts_before
    report["recover_p50_ms"] = percentile(episodes, 0.5) * 1000
    report["recover_p99_ms"] = percentile(episodes, 0.99) * 1000
    report["recoveries"] = len(episodes)
    report["pool_size_after"] = pool.stats().size
    for key in ("errors", "untyped_errors", "kills", "kill_outcomes"):
        report[key] = dict(report[key])
    return report
