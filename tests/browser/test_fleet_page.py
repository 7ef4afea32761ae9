"""A real PyScript page calling the real fleet (the session's ``fleet``: RabbitMQ, the
gateway, 2 worker processes) through ``WorkerBridge(remote=...)`` over the browser's own
WebSocket: Files and buffers, progress, cancel, typed errors, jobs, a refused token, and
the local fallback when the fleet cannot be reached."""

from __future__ import annotations

import textwrap
import time
from typing import Any

from conftest import Harness
from workerbridge.fleet.local import free_port


def run(h: Harness, body: str, timeout: float = 120) -> Any:
    code = "async def __case():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return h.py(code + "\nawait __case()", timeout)


def setup(h: Harness, fleet: Any) -> None:
    run(h, f"""
        import js, workerbridge
        from workerbridge import WorkerBridge
        globals()["FB"] = WorkerBridge(remote={fleet.ws_url!r}, token={fleet.token!r})
        globals()["js"] = js
        globals()["workerbridge"] = workerbridge
        globals()["WorkerBridge"] = WorkerBridge
        return 1
    """)


def test_a_page_hashes_files_and_buffers_on_the_fleet(harness: Harness, fleet: Any) -> None:
    setup(harness, fleet)
    got = run(harness, """
        buf = js.testUtil.randomBuffer(2 * 1024 * 1024 + 5)
        want = await js.testUtil.subtleHex("SHA-256", buf)
        file = js.testUtil.file(buf, "x.bin")
        seen = []
        by_file = await FB.crypto.hash_file(file, on_progress=lambda p: seen.append(p.done))
        by_buffer = await FB.crypto.hash_file(buf)
        packed = await FB.compression.compress_data(buf.slice(0, 1000) if buf.byteLength
                                                    else js.testUtil.randomBuffer(1000))
        who = await FB.request("fleettest", "whoami", {"b": b"\\x00\\x01"})
        return [by_file == want, by_buffer == want, bool(seen), who["payload"]["b"] == b"\\x00\\x01",
                who["pid"], js.Object.prototype.toString.call(packed)]
    """)
    assert got[:4] == [True, True, True, True]
    assert got[4] in {w["pid"] for w in fleet.wait_workers()}
    assert got[5] == "[object ArrayBuffer]"  # a JS input gets a JS result, as locally


def test_progress_cancel_and_typed_errors_from_a_page(harness: Harness, fleet: Any) -> None:
    setup(harness, fleet)
    start = time.time()
    while True:  # counts from heartbeats sent after this test began (they lag up to 1 s)
        workers = fleet.wait_workers()
        if all(w["at"] > start for w in workers):
            break
        time.sleep(0.1)
    before = {w["pid"]: w["cancelled"] for w in workers}
    got = run(harness, """
        import asyncio
        seen = []
        await FB.request("fleettest", "steps", {"n": 20, "step": 0.01},
                         on_progress=lambda p: seen.append([p.done, p.total]))
        call = asyncio.ensure_future(FB.request("fleettest", "spin", {},
                                                on_progress=lambda p: None))
        await asyncio.sleep(1.0)
        started = js.performance.now()
        call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            pass
        took = js.performance.now() - started
        errors = []
        for channel, op in (("storage", "stats"), ("nosuch", "op")):
            try:
                await FB.request(channel, op, {})
            except workerbridge.WorkerBridgeError as exc:
                errors.append(type(exc).__name__)
        return [seen[-1], [d for d, _ in seen] == sorted(d for d, _ in seen), took, errors]
    """)
    assert got[0] == [20, 20] and got[1] is True
    assert got[2] < 100, "the page's call settles at once"
    assert got[3] == ["UnsupportedError", "UnknownOperationError"]
    deadline = time.monotonic() + 10
    while True:  # the worker really stopped the spin
        now = {w["pid"]: w for w in fleet.wait_workers()}
        if any(w["cancelled"] > before.get(pid, 0) and w["running"] == 0
               for pid, w in now.items()):
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.1)


def test_jobs_from_a_page_and_a_refused_token(harness: Harness, fleet: Any) -> None:
    setup(harness, fleet)
    got = run(harness, f"""
        job = await FB.jobs.add("page", "fleettest.whoami", {{"n": 1}})
        result = await job.result(timeout=30)
        again = await FB.jobs.get(job.id)
        status = await again.status()
        bad = WorkerBridge(remote={fleet.ws_url!r}, token="wrong")
        try:
            await bad.request("fleettest", "noop")
            refused = None
        except workerbridge.AuthError as exc:
            refused = str(exc)
        await bad.close()
        return [result["payload"], status["state"], refused]
    """)
    assert got[:2] == [{"n": 1}, "completed"]
    assert got[2] and "token" in got[2]


def test_fallback_local_runs_in_a_local_worker_when_the_fleet_is_unreachable(
        harness: Harness) -> None:
    got = run(harness, f"""
        import warnings
        from workerbridge import WorkerBridge
        lb = WorkerBridge(remote="ws://127.0.0.1:{free_port()}/v1/ws", token="t",
                          fallback="local")
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            digest = await lb.crypto.hash_file(b"abc")
        info = lb.ready_info
        await lb.close()
        return [digest, [str(w.message) for w in said], info.get("remote", False)]
    """, timeout=180)
    assert got[0] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert any("in a local worker" in s for s in got[1])
    assert got[2] is False  # a local Pyodide worker answered, not the gateway
