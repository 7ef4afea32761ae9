"""The fleet with real processes: RabbitMQ, the gateway and 2 taskiq workers (the session's
``fleet`` fixture), driven by a CPython ``WorkerBridge(remote=...)`` and by raw sockets.
The page's side runs in browser/test_fleet_page.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
import warnings
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import fleet_handlers  # noqa: F401  (registers the handlers for the local fallback)
from conftest import FLEET_MAX_FRAME, run
from workerbridge import (
    AuthError,
    CancelledError,
    InvalidInputError,
    RemoteError,
    UnknownOperationError,
    UnsupportedError,
    WorkerBridge,
    WorkerCrashedError,
)
from workerbridge.fleet.local import free_port
from workerbridge.fleet.wire import decode_frame, encode_frame
from workerbridge.jobs.policy import Fail, Retry

DATA = os.urandom(3 * 1024 * 1024 + 17)


def remote(fleet: Any, **options: Any) -> WorkerBridge:
    return WorkerBridge(remote=fleet.ws_url, token=fleet.token, **options)


def alive(fleet: Any) -> dict[int, dict[str, Any]]:
    return {w["pid"]: w for w in fleet.wait_workers()}


def heard_since(fleet: Any, since: float) -> dict[int, dict[str, Any]] | None:
    """Every worker's state from a heartbeat sent after ``since`` (time.time()), or None
    while one is older: the gateway's view lags by up to a heartbeat (1 s)."""
    workers = alive(fleet)
    return workers if all(w["at"] > since for w in workers.values()) else None


async def running_on(fleet: Any, since: float) -> int:
    """The worker a job runs on, from heartbeats sent after ``since`` (nothing else runs)."""
    def find() -> int | None:
        workers = heard_since(fleet, since) or {}
        return next((pid for pid, w in workers.items() if w["running"]), None)

    return int(await until(find, 10, "the job starting"))


async def stopped_on(fleet: Any, pid: int, since: float, cancelled: int) -> None:
    """Wait for ``pid`` to report, after ``since``, one more cancelled job and none running."""
    def check() -> bool:
        w = (heard_since(fleet, since) or {}).get(pid)
        return w is not None and w["cancelled"] == cancelled + 1 and w["running"] == 0

    await until(check, 10, "the worker stopping")


async def until(check: Any, timeout: float = 15.0, what: str = "a condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.05)


async def cancel_once_running(fleet: Any, start: Any, ready: Any = None
                              ) -> tuple[int, dict[int, Any]]:
    """Start a call, cancel it once a worker runs it (and ``ready()`` holds), and wait
    until that worker reports one more cancelled job and none running: the worker really
    stopped. (Its pid, and the workers' state before.)"""
    began = time.time()
    before = await until(lambda: heard_since(fleet, began), 10, "fresh heartbeats")
    call = asyncio.ensure_future(start())
    if ready is not None:
        await until(ready, 10, "the call getting under way")
    busy = await running_on(fleet, time.time())
    cancelled_at = time.time()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await stopped_on(fleet, busy, cancelled_at, before[busy]["cancelled"])
    return busy, before


def test_requests_run_on_the_workers_with_bytes_both_ways(fleet: Any) -> None:
    async def go() -> tuple[str, set[int], Any]:
        bridge = remote(fleet)
        try:
            digest = await bridge.crypto.hash_file(DATA)
            answers = await asyncio.gather(*(bridge.request("fleettest", "whoami", {"i": i})
                                             for i in range(40)))
            echoed = await bridge.request("fleettest", "whoami", {"blob": b"\x00\xff" * 9})
            return digest, {a["pid"] for a in answers}, echoed
        finally:
            await bridge.close()

    digest, pids, echoed = run(go())
    assert digest == hashlib.sha256(DATA).hexdigest()
    assert pids and pids <= set(alive(fleet))
    assert echoed["payload"] == {"blob": b"\x00\xff" * 9}


def test_built_in_channels_run_there_and_browser_only_ones_refuse(fleet: Any) -> None:
    async def go() -> Any:
        bridge = remote(fleet)
        try:
            packed = await bridge.compression.compress_data(DATA[:100_000], "gzip")
            zstd = await bridge.compression.compress_data(DATA[:100_000], "zstd")
            assert await bridge.compression.decompress_data(zstd, "zstd") == DATA[:100_000]
            kind = await bridge.file.detect_type(b"%PDF-1.7\n" + bytes(64))
            with pytest.raises(UnsupportedError, match="browser"):
                await bridge.request("storage", "stats", {})
            with pytest.raises(UnknownOperationError):
                await bridge.request("nosuch", "op", {})
            return packed, kind
        finally:
            await bridge.close()

    packed, kind = run(go())
    import gzip

    assert gzip.decompress(packed) == DATA[:100_000]
    assert "pdf" in json.dumps(kind).lower()


def test_aes_gcm_kdfs_and_hmac_run_on_the_workers_in_the_browsers_formats(fleet: Any) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    import gcm_reference
    from workerbridge import IntegrityError

    key, nonce = os.urandom(32), os.urandom(12)

    async def go() -> tuple[Any, ...]:
        bridge = remote(fleet)
        try:
            sealed = await bridge.crypto.encrypt_file(DATA, key, nonce, chunk_size=1 << 20)
            small = await bridge.crypto.encrypt_file(b"hello", key)
            back = await bridge.crypto.decrypt_file(sealed.ciphertext, key, nonce)
            bad = bytearray(sealed.ciphertext)
            bad[len(bad) // 2] ^= 1
            with pytest.raises(IntegrityError, match="record 1 of 4"):
                await bridge.crypto.decrypt_file(bytes(bad), key, nonce)
            derived = await bridge.crypto.derive_key("pw", b"salt" * 4, iterations=1000)
            expanded = await bridge.crypto.hkdf(b"ikm", b"salt", b"info", 42)
            tag = await bridge.crypto.hmac_sign(key, DATA)
            verified = await bridge.crypto.hmac_verify(key, DATA, tag)
            return sealed, small, back, derived, expanded, tag, verified
        finally:
            await bridge.close()

    sealed, small, back, derived, expanded, tag, verified = run(go())
    assert sealed.ciphertext == gcm_reference.seal(key, nonce, DATA, 1 << 20)
    assert back == DATA
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert AESGCM(key).decrypt(small.nonce, small.ciphertext, None) == b"hello"
    assert derived == hashlib.pbkdf2_hmac("sha256", b"pw", b"salt" * 4, 1000, 32)
    assert expanded == HKDF(hashes.SHA256(), 42, b"salt", b"info").derive(b"ikm")
    import hmac

    assert tag == hmac.new(key, DATA, "sha256").digest() and verified is True


def test_progress_and_cancel_stop_the_work_and_the_worker_serves_on(fleet: Any) -> None:
    async def go() -> None:
        bridge = remote(fleet)
        try:
            seen: list[tuple[int, int]] = []
            done = await bridge.request("fleettest", "steps", {"n": 30, "step": 0.01},
                                        on_progress=lambda p: seen.append((p.done, p.total)))
            assert done["n"] == 30
            assert seen and all(t == 30 for _, t in seen)
            assert [d for d, _ in seen] == sorted(d for d, _ in seen)

            running: list[int] = []
            busy, before = await cancel_once_running(fleet, lambda: bridge.request(
                "fleettest", "spin", {}, on_progress=lambda p: running.append(p.done)),
                ready=lambda: running)  # its progress reaches the caller
            pids = {(await bridge.request("fleettest", "whoami", i))["pid"] for i in range(30)}
            assert busy in pids, "the worker that was cancelled serves again"
            assert set(alive(fleet)) == set(before), "no worker was replaced"
        finally:
            await bridge.close()

    run(go())


def test_cancel_of_a_call_without_progress_reaches_its_worker(fleet: Any) -> None:
    """A call without progress reports no start: the gateway passes the cancel on and
    waits for the worker's answer (or a grace of 1 s) instead of answering at once."""
    async def go() -> None:
        bridge = remote(fleet)
        try:
            await cancel_once_running(fleet, lambda: bridge.request(
                "fleettest", "steps", {"n": 100_000, "step": 0.01}))
            assert (await bridge.request("fleettest", "whoami", 1))["payload"] == 1
        finally:
            await bridge.close()

    run(go())


def test_a_killed_workers_job_completes_on_the_other_worker(fleet: Any) -> None:
    async def go() -> tuple[int, Any]:
        bridge = remote(fleet)
        try:
            job = await bridge.jobs.add("kills", "fleettest.steps", {"n": 30, "step": 0.05})
            status = await until(lambda: _active(job), 15, "the job starting")
            victim = next(pid for pid, w in alive(fleet).items()
                          if w["worker"] == status["worker"])
            fleet.kill_worker(victim)
            result = await job.result(timeout=60)
            return victim, result
        finally:
            await bridge.close()

    try:
        victim, result = run(go())
        assert result["n"] == 30
        assert result["pid"] != victim
    finally:
        while len(fleet.workers) < 2:
            fleet.start_worker()
        fleet.wait_workers()


async def _active(job: Any) -> dict[str, Any] | None:
    status = await job.status()
    return status if status and status["state"] == "active" else None


def test_bad_tokens_and_hostile_origins_are_refused(fleet: Any) -> None:
    async def go() -> list[Any]:
        bridge = WorkerBridge(remote=fleet.ws_url, token="not-the-token")
        try:
            with pytest.raises(AuthError, match="token"):
                await bridge.request("fleettest", "noop")
        finally:
            await bridge.close()
        closes = []
        for origin, token in (("https://evil.example", fleet.token),
                              ("http://127.0.0.1:8000", "wrong")):
            async with connect(fleet.ws_url, origin=origin,  # type: ignore[arg-type]
                               additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                first = decode_frame(await ws.recv())
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                closes.append((first["code"], ws.close_code))
        async with connect(fleet.ws_url, origin="http://127.0.0.1:8000",  # type: ignore[arg-type]
                           additional_headers={"Authorization": f"Bearer {fleet.token}"}) as ws:
            closes.append(decode_frame(await ws.recv())["kind"])
        return closes

    assert run(go()) == [("unauthorized", 4403), ("unauthorized", 4401), "ready"]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        request = urllib.request.Request(f"{fleet.http_url}/v1/health", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 401


async def _raw(fleet: Any, frames: list[str | bytes]) -> tuple[list[Any], Any]:
    """Send frames on one authorised socket; the answers until a RESPONSE to id 99."""
    async with connect(fleet.ws_url, max_size=None,
                       additional_headers={"Authorization": f"Bearer {fleet.token}"}) as ws:
        ready = decode_frame(await ws.recv())
        for frame in frames:
            await ws.send(frame)
        await ws.send(encode_frame({"v": 1, "kind": "request", "id": 99, "channel": "system",
                                    "op": "echo", "payload": b"still-here"}))
        answers = []
        while True:
            message = decode_frame(await asyncio.wait_for(ws.recv(), 30))
            answers.append(message)
            if message.get("id") == 99:
                return answers, ready


def test_malformed_envelopes_get_errors_and_the_gateway_serves_on(fleet: Any) -> None:
    deep = "[" * 600 + "]" * 600
    frames: list[str | bytes] = [
        "not json", b"\x00\x00\x00\xff{", b"\x00", deep,
        json.dumps({"v": 2, "kind": "request", "id": 5, "channel": "system", "op": "echo"}),
        json.dumps({"v": 1, "kind": "request", "id": 6}),
        json.dumps({"v": 1, "kind": "response", "id": 7}),
        json.dumps({"v": 1, "kind": "request", "id": 8, "channel": "system", "op": "echo",
                    "priority": 9}),
        encode_frame({"v": 1, "kind": "request", "id": 9, "channel": "nosuch", "op": "x"}),
        b"\x00\x00\x00\x10" + b'{"$b":[0,99999]}',
    ]
    answers, ready = run(_raw(fleet, frames))
    assert ready["kind"] == "ready" and "fleettest.whoami" in ready["payload"]["ops"]
    errors = [a for a in answers if a["kind"] == "error"]
    assert len(errors) == len(frames)
    by_id = {e.get("id"): e["code"] for e in errors}
    assert by_id[5] == "version" and by_id[6] == "protocol" and by_id[9] == "unknown_op"
    assert by_id[8] == "protocol"
    assert answers[-1] == {"v": 1, "kind": "response", "id": 99, "payload": b"still-here"}


def test_oversized_frames_are_refused_and_the_gateway_serves_on(fleet: Any) -> None:
    async def go() -> tuple[Any, Any]:
        async with connect(fleet.ws_url, max_size=None,
                           additional_headers={"Authorization": f"Bearer {fleet.token}"}) as ws:
            await ws.recv()
            await ws.send(b"\x00" * (FLEET_MAX_FRAME + 1))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
            code = ws.close_code
        bridge = remote(fleet)
        try:
            with pytest.raises(InvalidInputError, match="frame limit"):
                await bridge.request("fleettest", "whoami", b"x" * (FLEET_MAX_FRAME + 10))
            after = await bridge.request("fleettest", "whoami", b"small")
        finally:
            await bridge.close()
        return code, after

    code, after = run(go())
    assert code == 1009  # "message too big"
    assert after["payload"] == b"small"


def test_jobs_retry_by_error_type_fail_by_rule_delay_and_cancel(fleet: Any) -> None:
    async def go() -> None:
        bridge = remote(fleet)
        jobs = bridge.jobs
        try:
            jobs.recovery({"KeyError": Retry(3, delay=0.05), "ValueError": Fail()})
            ok = await jobs.add("retries", "fleettest.flaky", {"succeed_on": 3})
            assert (await ok.result(timeout=30))["attempt"] == 3

            failed = await jobs.add("retries", "fleettest.flaky",
                                    {"succeed_on": 3, "error": "ValueError"}, attempts=5)
            with pytest.raises(RemoteError) as caught:
                await failed.result(timeout=30)
            assert caught.value.remote_type == "ValueError"
            assert "secret-payload-value" not in str(caught.value)
            status = await failed.status()
            assert status["state"] == "failed" and status["attempt"] == 1

            started = time.monotonic()
            later = await jobs.add("delays", "fleettest.whoami", "x", delay=1.0)
            assert (await later.status())["state"] == "waiting"
            await later.result(timeout=30)
            assert time.monotonic() - started >= 0.9

            waiting = await jobs.add("delays", "fleettest.whoami", "y", delay=30)
            assert await waiting.cancel() is True
            with pytest.raises(CancelledError):
                await waiting.result(timeout=5)
            assert await waiting.cancel() is False

            start = time.time()
            before = await until(lambda: heard_since(fleet, start), 10, "fresh heartbeats")
            running = await jobs.add("cancels", "fleettest.spin", {})
            status = await until(lambda: _active(running), 15, "the job starting")
            assert await running.cancel() is True
            with pytest.raises(CancelledError):
                await running.result(timeout=10)
            name = status["worker"]
            await until(lambda: any(w["worker"] == name and w["cancelled"] >
                                    before.get(w["pid"], {}).get("cancelled", 0)
                                    and w["running"] == 0 for w in alive(fleet).values()),
                        10, "the worker stopping the job")

            first = await jobs.add("ids", "fleettest.whoami", 1, job_id="same-id")
            again = await jobs.add("ids", "fleettest.whoami", 2, job_id="same-id")
            assert first.id == again.id == "same-id"
            assert (await again.result(timeout=30))["payload"] == 1
            assert await jobs.get("no-such-job") is None
            listed = await jobs.list(queue="ids")
            assert [j["id"] for j in listed] == ["same-id"]
        finally:
            await bridge.close()

    run(go())


def test_schedules_run_through_taskiqs_scheduler(fleet: Any) -> None:
    async def go() -> None:
        bridge = remote(fleet)
        jobs = bridge.jobs
        try:
            await jobs.schedule_once("soon", at=1.0, handler="fleettest.whoami",
                                     queue="scheduled", payload="tick")
            fired = await until(lambda: jobs.list(queue="scheduled"), 20, "the run firing")
            job = jobs.handle(fired[0]["id"])
            assert (await job.result(timeout=30))["payload"] == "tick"
            assert fired[0]["schedule"] == "soon"
            # The run was recorded before it was sent; the schedule goes once it is sent.
            await until(lambda: _gone(jobs, "soon"), 10, "the one-time schedule ending")
            # Declared again under the same name, it runs again.
            await jobs.schedule_once("soon", at=0.5, handler="fleettest.whoami",
                                     queue="scheduled", payload="again")
            again = await until(lambda: _listed(jobs, "scheduled", 2), 20, "the second run")
            assert (await jobs.handle(again[1]["id"]).result(timeout=30))["payload"] == "again"

            described = await jobs.schedule("minutely", cron="*/5 * * * *",
                                            handler="fleettest.noop", queue="cron")
            assert described["cron"] == "*/5 * * * *"
            assert any(s["name"] == "minutely" for s in await jobs.schedules())
            assert await jobs.unschedule("minutely") is True
            with pytest.raises(UnsupportedError, match="seconds"):
                await jobs.schedule("s", cron="*/5 * * * * *", handler="fleettest.noop",
                                    queue="cron")
            with pytest.raises(UnsupportedError):
                await jobs.schedule("c", cron="* * * * *", handler="fleettest.noop",
                                    queue="cron", catch_up="all")
            with pytest.raises(UnsupportedError):
                jobs.workflow("w", [])
            with pytest.raises(UnsupportedError):
                await jobs.add("q", "fleettest.noop", priority=2)
            with pytest.raises(UnsupportedError, match="browser"):
                await jobs.add("q", "storage.stats")
        finally:
            await bridge.close()

    run(go())


async def _gone(jobs: Any, name: str) -> bool:
    return all(s["name"] != name for s in await jobs.schedules())


async def _listed(jobs: Any, queue: str, n: int) -> list[dict[str, Any]] | None:
    listed = await jobs.list(queue=queue)
    return listed if len(listed) >= n else None


def _http(fleet: Any, method: str, path: str, body: bytes | None = None,
          token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"{fleet.http_url}{path}", data=body, method=method,
                                     headers={"Authorization": f"Bearer {token or fleet.token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_rest_jobs(fleet: Any) -> None:
    status, added = _http(fleet, "POST", "/v1/jobs", json.dumps(
        {"queue": "rest", "handler": "fleettest.whoami", "payload": {"a": 1}}).encode())
    assert status == 201
    status, record = _http(fleet, "GET", f"/v1/jobs/{added['id']}?wait=20")
    assert status == 200 and record["state"] == "completed"
    assert record["result"]["payload"] == {"a": 1}
    assert _http(fleet, "DELETE", f"/v1/jobs/{added['id']}")[1] == {"cancelled": False}
    assert _http(fleet, "GET", "/v1/jobs/nope")[0] == 404
    assert _http(fleet, "POST", "/v1/jobs", b"{")[0] == 400
    # A body over the limit is refused from its Content-Length, before it is read.
    with socket.create_connection(("127.0.0.1", fleet.gateway_port), timeout=30) as raw:
        raw.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fleet.token}"
                    f"\r\nContent-Length: {FLEET_MAX_FRAME + 1}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 413")
    assert _http(fleet, "GET", "/v1/jobs", token="wrong")[0] == 401


def test_fallback_local_runs_the_call_here_when_the_fleet_is_unreachable() -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}/v1/ws"

    async def go() -> Any:
        bridge = WorkerBridge(remote=nowhere, token="t", fallback="local")
        never = WorkerBridge(remote=nowhere, token="t")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                answer = await bridge.request("fleettest", "whoami", "here")
            with pytest.raises(WorkerCrashedError, match="could not be reached"):
                await never.request("fleettest", "whoami", "x")
            return answer, [str(w.message) for w in caught]
        finally:
            await bridge.close()
            await never.close()

    answer, said = run(go())
    assert answer["pid"] == os.getpid() and answer["payload"] == "here"
    assert any("in a local worker" in s for s in said)


def test_remote_options_are_checked() -> None:
    with pytest.raises(InvalidInputError):
        WorkerBridge(remote="http://example.org/v1/ws")
    with pytest.raises(InvalidInputError):
        WorkerBridge(remote="ws://127.0.0.1:1/v1/ws", token="has space")
    with pytest.raises(InvalidInputError):
        WorkerBridge(remote="ws://127.0.0.1:1/v1/ws", fallback="main")
    with pytest.raises(InvalidInputError):
        WorkerBridge(fallback="local")
