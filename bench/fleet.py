"""The fleet section: RabbitMQ, the gateway and 2 worker processes on this machine (one
``LocalFleet``), each figure beside its anchor in the same run:

- drain of no-op jobs: ours (``workerbridge.run`` with its events) beside plain taskiq (the
  same broker, a bare no-op task in 2 plain taskiq worker processes);
- dispatch: from the message sent to the handler starting, p50 and p99;
- a page's round trip to the fleet beside the same page's call to a local worker;
- cancel of a running job, until the worker confirms it stopped;
- a killed worker's job: kill → result, beside its bound (recovery + job time + 2 s);
- the chaos run: jobs fed without pause while a worker is SIGKILLed every ~second, until
  ``KILLS`` kills; every job must complete.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aio_pika

from conftest import FLEET_HANDLERS, Harness, run
from workerbridge.fleet.broker import EVENTS, labels_for, make_broker, new_id
from workerbridge.fleet.local import LocalFleet

DRAIN = 5000
DISPATCH = 300
RTT = 300
CANCELS = 20
KILL_ROUNDS = 3
KILLS = 200
JOB_TIME = 1.0  # seconds of the job a worker is killed under

ANCHOR_WORKER = '''
import asyncio, os, sys
from taskiq.api import run_receiver_task
from taskiq_aio_pika import AioPikaBroker, Queue
broker = AioPikaBroker(sys.argv[1], task_queues=[Queue(name="anchor.tasks")])
broker.is_worker_process = True
out = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

@broker.task(task_name="anchor.noop")
async def noop() -> None:
    os.write(out, b".")

async def main():
    await broker.startup()
    await run_receiver_task(broker)

asyncio.run(main())
'''


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _events(url: str, key: str) -> tuple[Any, asyncio.Queue[dict[str, Any]]]:
    """A queue of the events the workers send to ``key``."""
    from taskiq.serializers import MSGPackSerializer

    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EVENTS, aio_pika.ExchangeType.DIRECT,
                                              durable=True)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, key)
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on(message: Any) -> None:
        got.put_nowait({**MSGPackSerializer().loadb(message.body), "seen": time.time()})

    await queue.consume(on, no_ack=True)
    return connection, got


async def drain_and_dispatch(fleet: LocalFleet) -> dict[str, Any]:
    from taskiq.kicker import AsyncKicker

    key = f"bench.{new_id()[:8]}"
    connection, got = await _events(fleet.broker_url, key)
    broker = make_broker(fleet.broker_url)
    await broker.startup()
    try:
        async def kick(i: int, progress: bool = False) -> float:
            sent = time.time()
            kicker: AsyncKicker[Any, Any] = AsyncKicker("workerbridge.run", broker,
                                                        labels_for(reply=key, rid=i + 1,
                                                                   progress=progress))
            await kicker.with_task_id(new_id()).kiq({"channel": "fleettest", "op": "noop"})
            return sent

        # Dispatch: one at a time on an idle fleet, sent → the handler's "started".
        dispatch = []
        for i in range(DISPATCH):
            sent = await kick(i, progress=True)  # a call with progress reports its start
            while True:
                event = await got.get()
                if event.get("kind") == "started":
                    dispatch.append((event["at"] - sent) * 1000)
                if event.get("kind") in ("result", "error"):
                    break
        # Drain: DRAIN no-op jobs sent at once; first send → last result.
        started = time.perf_counter()
        await asyncio.gather(*(kick(i) for i in range(DRAIN)))
        sent_s = time.perf_counter() - started
        results = 0
        while results < DRAIN:
            event = await got.get()
            results += event.get("kind") == "result"
        drained = time.perf_counter() - started
    finally:
        await broker.shutdown()
        await connection.close()
    return {"dispatch_p50_ms": pct(dispatch, 0.5), "dispatch_p99_ms": pct(dispatch, 0.99),
            "drain_jobs": DRAIN, "drain_s": drained, "send_s": sent_s,
            "drain_per_s": DRAIN / drained}


async def anchor_drain(fleet: LocalFleet, base: Path) -> dict[str, Any]:
    """Plain taskiq: 2 processes of a bare no-op task on the same broker."""
    from taskiq_aio_pika import AioPikaBroker, Queue

    script = base / "anchor_worker.py"
    script.write_text(ANCHOR_WORKER)
    counter = base / "anchor.count"
    counter.write_bytes(b"")
    procs = [subprocess.Popen([sys.executable, str(script), fleet.broker_url, str(counter)],
                              start_new_session=True) for _ in range(2)]
    broker = AioPikaBroker(fleet.broker_url, task_queues=[Queue(name="anchor.tasks")])
    await broker.startup()
    try:
        noop = broker.register_task(_anchor_noop, task_name="anchor.noop")
        await noop.kiq()  # both workers up and consuming
        await asyncio.sleep(3.0)
        counter.write_bytes(b"")
        started = time.perf_counter()
        await asyncio.gather(*(noop.kiq() for _ in range(DRAIN)))
        while counter.stat().st_size < DRAIN:
            await asyncio.sleep(0.005)
        drained = time.perf_counter() - started
    finally:
        await broker.shutdown()
        for proc in procs:
            os.killpg(proc.pid, 9)
            proc.wait()
    return {"anchor_drain_per_s": DRAIN / drained}


async def _anchor_noop() -> None:
    pass


async def cancels_and_kills(fleet: LocalFleet) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from workerbridge import WorkerBridge
    from workerbridge.fleet.wire import decode_frame, encode_frame

    cancel_ms = []
    async with connect(fleet.ws_url, max_size=None,
                       additional_headers={"Authorization": f"Bearer {fleet.token}"}) as ws:
        await ws.recv()
        for i in range(CANCELS):
            rid = 1000 + i
            await ws.send(encode_frame({"v": 1, "kind": "request", "id": rid,
                                        "channel": "fleettest", "op": "spin",
                                        "payload": {}, "progress": True}))
            while decode_frame(await ws.recv()).get("kind") != "progress":
                pass
            sent = time.perf_counter()
            await ws.send(encode_frame({"v": 1, "kind": "cancel", "id": rid}))
            while True:
                answer = decode_frame(await ws.recv())
                if answer.get("id") == rid and answer["kind"] == "error":
                    cancel_ms.append((time.perf_counter() - sent) * 1000)
                    break

    bridge = WorkerBridge(remote=fleet.ws_url, token=fleet.token)
    recover = []
    try:
        steps = {"n": 20, "step": JOB_TIME / 20}
        for _ in range(KILL_ROUNDS):
            job = await bridge.jobs.add("bench-kills", "fleettest.steps", steps)
            while True:
                status = await job.status()
                if status and status["state"] == "active":
                    break
                await asyncio.sleep(0.01)
            victim = next(w["pid"] for w in fleet.wait_workers()
                          if w["worker"] == status["worker"])
            killed = time.perf_counter()
            fleet.kill_worker(victim)
            await job.result(timeout=60)
            recover.append(time.perf_counter() - killed)
            fleet.start_worker()
            fleet.wait_workers()
        chaos = await chaos_run(fleet, bridge)
    finally:
        await bridge.close()
    return {"cancel_p50_ms": pct(cancel_ms, 0.5), "cancel_max_ms": max(cancel_ms),
            "kill_to_result_s": recover, "job_time_s": JOB_TIME,
            "recovery_timeout_s": 0.0, **chaos}


async def chaos_run(fleet: LocalFleet, bridge: Any) -> dict[str, Any]:
    """Jobs without pause while a worker is killed every 0.8–1.2 s (the other one kept
    alive, the killed one replaced), until KILLS kills; then every job must complete."""
    rng = random.Random(7)
    ids: list[str] = []
    stop = asyncio.Event()

    async def feed() -> None:
        while not stop.is_set():
            if len(ids) - await _ended(bridge) < 40:  # keep a backlog of work
                for _ in range(10):
                    job = await bridge.jobs.add("chaos", "fleettest.steps",
                                                {"n": 4, "step": 0.05})
                    ids.append(job.id)
            await asyncio.sleep(0.05)

    feeder = asyncio.ensure_future(feed())
    kills = 0
    started = time.perf_counter()
    try:
        while kills < KILLS or len(ids) < 1000:
            await asyncio.sleep(rng.uniform(0.8, 1.2))
            live = [p for p in fleet.workers if p.poll() is None]
            if len(live) >= 2:
                fleet.kill_worker(rng.choice(live).pid)
                kills += 1
            while len(fleet.workers) < 2:
                fleet.start_worker()
    finally:
        stop.set()
        await feeder
    deadline = time.monotonic() + 300
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        listed = await bridge.jobs.list(queue="chaos")
        states = {}
        for job in listed:
            states[job["state"]] = states.get(job["state"], 0) + 1
        if states.get("completed", 0) == len(ids):
            break
        await asyncio.sleep(0.5)
    fleet.wait_workers()
    return {"chaos_jobs": len(ids), "chaos_kills": kills,
            "chaos_completed": states.get("completed", 0),
            "chaos_lost": len(ids) - states.get("completed", 0), "chaos_states": states,
            "chaos_s": time.perf_counter() - started}


async def _ended(bridge: Any) -> int:
    health = await bridge.request("fleet", "health", {})
    return int(health["jobs"].get("completed", 0)) + int(health["jobs"].get("failed", 0))


def page_round_trip(browser: Any, origin: str, fleet: LocalFleet) -> dict[str, Any]:
    context = browser.new_context()
    try:
        harness = Harness(context.new_page(), origin)
        out = harness.py(textwrap.dedent(f"""
            import js
            from workerbridge import WorkerBridge
            local = WorkerBridge.default()
            await local.start()
            FB = WorkerBridge(remote={fleet.ws_url!r}, token={fleet.token!r})
            await FB.start()
            def p(v, q):
                v = sorted(v)
                return v[min(len(v) - 1, int(q * len(v)))]
            times = {{"fleet": [], "local": []}}
            for name, bridge in (("local", local), ("fleet", FB)):
                for i in range(30):
                    await bridge.request("system", "echo", i)
                for i in range({RTT}):
                    t = js.performance.now()
                    await bridge.request("system", "echo", i)
                    times[name].append(js.performance.now() - t)
            await FB.close()
            [p(times["fleet"], 0.5), p(times["fleet"], 0.99), p(times["local"], 0.5),
             p(times["local"], 0.99)]
        """), timeout=300)
    finally:
        context.close()
    return {"rtt_p50_ms": out[0], "rtt_p99_ms": out[1], "local_p50_ms": out[2],
            "local_p99_ms": out[3]}


def bench_fleet(browser: Any, origin: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with LocalFleet(base / "fleet", workers=2, modules=[str(FLEET_HANDLERS)]) as fleet:
            figures: dict[str, Any] = {"workers": 2}
            figures.update(run(drain_and_dispatch(fleet)))
            figures.update(run(anchor_drain(fleet, base)))
            figures.update(page_round_trip(browser, origin, fleet))
            figures.update(run(cancels_and_kills(fleet)))
    return figures


def fleet_rows(f: dict[str, Any]) -> list[str]:
    def mark(ok: bool) -> str:
        return "✓" if ok else "— not met"

    bound = f["recovery_timeout_s"] + f["job_time_s"] + 2
    worst = max(f["kill_to_result_s"])
    return [
        f"| fleet: drain of {f['drain_jobs']:,} no-op jobs, 2 worker processes | "
        f"{f['drain_per_s']:,.0f} jobs/s | plain taskiq, bare no-op task, same broker: "
        f"{f['anchor_drain_per_s']:,.0f} jobs/s | "
        f"{f['drain_per_s'] / f['anchor_drain_per_s']:.2f}× | ≥ 1,500 jobs/s "
        f"{mark(f['drain_per_s'] >= 1500)} |",
        f"| fleet: dispatch, sent → handler started, p50 (p99) | "
        f"{f['dispatch_p50_ms']:.2f} ms ({f['dispatch_p99_ms']:.2f} ms) | — | — | "
        f"≤ 2 ms (≤ 5 ms) {mark(f['dispatch_p50_ms'] <= 2 and f['dispatch_p99_ms'] <= 5)} |",
        f"| fleet: page → gateway → worker → page round trip, p50 (p99) | "
        f"{f['rtt_p50_ms']:.2f} ms ({f['rtt_p99_ms']:.2f} ms) | the same page's local "
        f"worker: {f['local_p50_ms']:.3f} ms ({f['local_p99_ms']:.3f} ms) | "
        f"{f['rtt_p50_ms'] / f['local_p50_ms']:.1f}× | — |",
        f"| fleet: cancel of a running job until its worker confirms, p50 (max of "
        f"{CANCELS}) | {f['cancel_p50_ms']:.1f} ms ({f['cancel_max_ms']:.1f} ms) | — | — | "
        f"≤ 100 ms {mark(f['cancel_max_ms'] <= 100)} |",
        f"| fleet: a worker SIGKILLed under a {f['job_time_s']:g} s job → its result "
        f"(worst of {len(f['kill_to_result_s'])}) | {worst:.2f} s | bound: recovery "
        f"{f['recovery_timeout_s']:g} s + job {f['job_time_s']:g} s + 2 s = {bound:g} s | "
        f"{worst / bound:.2f}× | within the bound {mark(worst <= bound)} |",
        f"| fleet chaos: {f['chaos_jobs']:,} jobs, {f['chaos_kills']} worker SIGKILLs | "
        f"{f['chaos_lost']} lost ({f['chaos_completed']:,} completed) | — | — | 0 lost "
        f"{mark(f['chaos_lost'] == 0 and f['chaos_jobs'] >= 1000)} |",
    ]
