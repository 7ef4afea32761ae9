"""Host unit tests: Connection + Runtime wired by the in-process loopback transport."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import workerbridge.workers.crypto  # noqa: F401 - registers crypto.hash_file

from conftest import run
from workerbridge import (
    CancelledError,
    InvalidInputError,
    InvalidTypeError,
    ProgressInfo,
    RemoteError,
    RequestTimeoutError,
    RetryPolicy,
    SharedCancellation,
    ShutdownError,
    UnknownOperationError,
    WorkerBridge,
    WorkerCrashedError,
    handler,
)
from workerbridge.pool.connection import Connection
from workerbridge.pool.loopback import LoopbackTransport


@handler("hosttest", "sleep")
async def _sleep(ctx: Any, payload: dict[str, Any]) -> str:
    await asyncio.sleep(payload["seconds"])
    return "slept"


@handler("hosttest", "leaky")
async def _leaky(ctx: Any, payload: dict[str, Any]) -> None:
    raise ValueError(f"bad value {payload['secret']}")


@handler("hosttest", "chunks")
async def _chunks(ctx: Any, payload: dict[str, Any]) -> int:
    n = payload["n"]
    ctx.set_total(n)
    for i in range(n):
        ctx.progress(i + 1)
        await ctx.checkpoint()
        await asyncio.sleep(0.01)
    return n


async def bridge() -> WorkerBridge:
    return await WorkerBridge(transport_factory=LoopbackTransport).start()


def test_hash_file_over_loopback_matches_hashlib():
    data = bytes(range(256)) * 20_000  # spans several chunks

    async def main() -> list[str]:
        b = await bridge()
        return [await b.crypto.hash_file(data, alg) for alg in ("sha1", "SHA-256", "SHA384",
                                                                 "sha-512")]

    assert run(main()) == [hashlib.new(a, data).hexdigest()
                           for a in ("sha1", "sha256", "sha384", "sha512")]


def test_bad_input_is_typed_and_the_bridge_keeps_serving():
    async def main() -> None:
        b = await bridge()
        with pytest.raises(InvalidInputError):
            await b.crypto.hash_file(b"x", "MD5")
        with pytest.raises(InvalidTypeError):
            await b.crypto.hash_file("text")
        with pytest.raises(InvalidTypeError):
            await b.crypto.hash_file(12345)
        with pytest.raises(InvalidInputError):  # the worker checks too
            await b.request("crypto", "hash_file", {"data": b"x", "algorithm": "SHA-3"})
        with pytest.raises(UnknownOperationError):
            await b.request("crypto", "nope")
        assert await b.crypto.hash_file(b"abc") == hashlib.sha256(b"abc").hexdigest()
        assert not b.pool.pending_ids() and b.pool.pending() == 0

    run(main())


def test_foreign_exception_does_not_leak_payload():
    async def main() -> None:
        b = await bridge()
        with pytest.raises(RemoteError) as info:
            await b.request("hosttest", "leaky", {"secret": "hunter2"})
        assert "hunter2" not in str(info.value)
        assert info.value.remote_type == "ValueError"

    run(main())


def test_progress_is_monotone_and_ends_at_100():
    seen: list[ProgressInfo] = []

    async def main() -> int:
        b = await bridge()
        return int(await b.request("hosttest", "chunks", {"n": 20}, on_progress=seen.append))

    assert run(main()) == 20
    dones = [p.done for p in seen]
    assert dones == sorted(dones)
    assert seen[-1].percent == 100.0 and seen[-1].final
    assert all(p.total == 20 for p in seen)


def test_timeout_settles_and_cancels_in_worker():
    async def main() -> None:
        b = await bridge()
        with pytest.raises(RequestTimeoutError):
            await b.request("hosttest", "sleep", {"seconds": 5}, timeout=0.05)
        assert not b.pool.pending_ids() and b.pool.pending() == 0
        await asyncio.sleep(0.01)
        assert await b.request("system", "stats") == {"served": 1, "cancelled": 1, "active": 0}

    run(main())


def test_task_cancel_and_token_cancel():
    async def main() -> None:
        b = await bridge()
        task = asyncio.ensure_future(b.request("hosttest", "sleep", {"seconds": 5}))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        assert not isinstance(info.value, CancelledError)  # plain task cancellation
        token = SharedCancellation()
        task = asyncio.ensure_future(b.request("hosttest", "chunks", {"n": 500}, cancel=token))
        await asyncio.sleep(0.05)
        token.cancel()
        with pytest.raises(CancelledError):
            await task
        with pytest.raises(CancelledError):  # an already-cancelled token never sends
            await b.request("hosttest", "chunks", {"n": 1}, cancel=token)
        await asyncio.sleep(0.05)
        stats = await b.request("system", "stats")
        assert stats["cancelled"] == 2 and stats["active"] == 0
        assert not b.pool.pending_ids() and b.pool.pending() == 0

    run(main())


def test_crash_retries_retryable_calls_and_rejects_the_rest():
    async def main() -> None:
        b = await bridge()
        calls = [asyncio.ensure_future(b.request("hosttest", "sleep", {"seconds": 0.2}))
                 for _ in range(3)]
        await asyncio.sleep(0.05)
        b.pool._lost(b.pool._slots[0], "test crash")
        assert await asyncio.gather(*calls) == ["slept"] * 3  # retried on the new worker
        assert b.stats().restarts == 1

        nb = await WorkerBridge(transport_factory=LoopbackTransport,
                                retry=RetryPolicy(max_retries=0)).start()
        calls = [asyncio.ensure_future(nb.request("hosttest", "sleep", {"seconds": 5}))
                 for _ in range(3)]
        await asyncio.sleep(0.02)
        nb.pool._lost(nb.pool._slots[0], "test crash")
        for c in calls:
            with pytest.raises(WorkerCrashedError):
                await c
        assert not nb.pool.pending_ids() and nb.pool.pending() == 0

        pending = asyncio.ensure_future(nb.request("hosttest", "sleep", {"seconds": 5}))
        await asyncio.sleep(0.01)
        await nb.close()
        with pytest.raises(ShutdownError):
            await pending
        with pytest.raises(ShutdownError):
            await nb.request("system", "echo")

    run(main())


def test_connection_stats_cancel_all_and_destroy():
    async def main() -> None:
        conn_box: list[Connection] = []

        def on_message(raw: dict[str, Any]) -> None:
            conn_box[0].handle_message(raw)

        transport = LoopbackTransport(on_message)
        conn = Connection(transport)
        conn_box.append(conn)
        assert await conn.request("system", "echo", {"a": [1, 2]}) == {"a": [1, 2]}
        slow = asyncio.ensure_future(conn.request("hosttest", "sleep", {"seconds": 5}))
        await asyncio.sleep(0.02)
        stats = conn.stats()
        assert stats.pending == 1 and stats.completed == 1 and stats.oldest_pending_ms >= 10
        assert conn.cancel_all() == 1
        with pytest.raises(asyncio.CancelledError):
            await slow
        await asyncio.sleep(0.02)
        assert conn.in_flight == 0, "the worker acknowledged the cancel"
        conn.destroy()
        with pytest.raises(ShutdownError):
            await conn.request("system", "echo")

    run(main())


def test_a_request_to_an_idle_worker_is_sent_promptly():
    """Only a request to a worker with nothing in flight asks to leave before the turn
    ends; those that follow it are left to be batched. A cancel is always prompt."""
    class Recording(LoopbackTransport):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.hints: list[tuple[str, bool]] = []

        def send(self, message: dict[str, Any], transfer: Any, prompt: bool = False) -> None:
            self.hints.append((message["kind"], prompt))
            super().send(message, transfer, prompt)

    async def main() -> None:
        conn_box: list[Connection] = []
        transport = Recording(lambda raw: conn_box[0].handle_message(raw))
        conn = Connection(transport)
        conn_box.append(conn)
        assert await conn.request("system", "echo", 1) == 1
        together = [asyncio.ensure_future(conn.request("system", "echo", i)) for i in range(3)]
        assert await asyncio.gather(*together) == [0, 1, 2]
        slow = asyncio.ensure_future(conn.request("hosttest", "sleep", {"seconds": 5}))
        await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert transport.hints == [("request", True), ("request", True), ("request", False),
                                   ("request", False), ("request", True), ("cancel", True)]

    run(main())


def test_worker_answers_malformed_and_misdirected_envelopes():
    posted: list[dict[str, Any]] = []
    from workerbridge.runtime.dispatch import Runtime

    rt = Runtime(lambda m, t: posted.append(m))
    for raw in (None, "x", {}, {"v": 9, "kind": "request", "id": 4},
                {"v": 1, "kind": "response", "id": 2},
                {"v": 1, "kind": "request", "id": 5, "channel": "no", "op": "such"}):
        rt.handle(raw)
    codes = [(m["kind"], m["code"], m.get("id")) for m in posted]
    assert codes == [("error", "protocol", None), ("error", "protocol", None),
                     ("error", "version", None), ("error", "version", 4),
                     ("error", "protocol", 2), ("error", "unknown_op", 5)]


def test_every_request_is_answered_once_however_its_handler_ends():
    """The handler's own task posts its outcome; one cancelled before its first step (a
    CANCEL in the same turn as its REQUEST) is answered for it."""
    from workerbridge.runtime.dispatch import Runtime

    async def main() -> list[tuple[str, int, Any]]:
        posted: list[dict[str, Any]] = []
        rt = Runtime(lambda m, t: posted.append(m))

        def request(rid: int, channel: str, op: str, payload: Any) -> dict[str, Any]:
            return {"v": 1, "kind": "request", "id": rid, "channel": channel, "op": op,
                    "payload": payload}

        rt.handle(request(1, "system", "echo", "done"))
        rt.handle(request(2, "hosttest", "leaky", {"secret": "s3cret"}))
        rt.handle(request(3, "hosttest", "sleep", {"seconds": 5}))
        rt.handle(request(4, "hosttest", "sleep", {"seconds": 5}))
        rt.handle({"v": 1, "kind": "cancel", "id": 4})  # before its first step on 3.11
        await asyncio.sleep(0.05)
        rt.handle({"v": 1, "kind": "cancel", "id": 3})  # while it awaits
        await asyncio.sleep(0.05)
        assert not rt._active and rt.served == 4 and rt.cancelled == 2
        return sorted((m["kind"], m["id"], m.get("payload", m.get("code")))
                      for m in posted)

    assert run(main()) == [("error", 2, "remote"), ("error", 3, "cancelled"),
                           ("error", 4, "cancelled"), ("response", 1, "done")]


def test_an_interrupt_that_comes_before_its_request_cancels_it_on_arrival():
    """Python may take an interrupt while the REQUEST it names still waits behind other
    messages: that request is answered as cancelled when it arrives, and never runs."""
    from workerbridge.core.shared import LocalCells
    from workerbridge.runtime.dispatch import CONTROL_SLOTS, INTERRUPT, TARGET_SLOT, Runtime

    ran: list[int] = []

    @handler("hosttest", "record")
    async def _record(ctx: Any, payload: int) -> int:
        ran.append(payload)
        return payload

    async def main() -> list[tuple[str, int, Any]]:
        posted: list[dict[str, Any]] = []
        cells = LocalCells(CONTROL_SLOTS)
        rt = Runtime(lambda m, t: posted.append(m), control=cells, isolated=True)
        cells.store(TARGET_SLOT, 7)
        cells.store(0, INTERRUPT)
        rt.on_interrupt()  # nothing with id 7 runs yet
        for rid in (6, 7, 8):
            rt.handle({"v": 1, "kind": "request", "id": rid, "channel": "hosttest",
                       "op": "record", "payload": rid})
        await asyncio.sleep(0.01)
        assert rt.cancelled == 1 and rt.served == 3 and not rt._active
        return sorted((m["id"], m["kind"], m.get("payload", m.get("code"))) for m in posted)

    assert run(main()) == [(6, "response", 6), (7, "error", "cancelled"), (8, "response", 8)]
    assert ran == [6, 8]


def test_an_interrupt_taken_at_any_point_answers_the_request_once():
    """The interrupt may land in the runtime's own code around a handler (as it starts, or
    as its answer is posted): the request must still be answered, exactly once."""
    from interrupt_points import check_every_point

    tried, problems = run(check_every_point())
    assert problems == [], "\n".join(problems)
    assert tried > 50  # the request passes through that many traced points


class _Dropped:
    def __del__(self) -> None:
        pass  # the interrupt lands here, where Python can only report it as unraisable


@handler("hosttest", "drops")
async def _drops(ctx: Any, payload: Any) -> str:
    _Dropped()  # destroyed at once: its __del__ runs inside this handler
    return "done"


def test_an_interrupt_python_swallows_is_raised_again():
    """An interrupt taken inside a __del__ or weakref callback is swallowed by Python;
    the runtime arms it again, so the handler still stops at Python's next check."""
    import signal
    import sys

    from workerbridge.core.shared import LocalCells
    from workerbridge.runtime.dispatch import CONTROL_SLOTS, INTERRUPT, TARGET_SLOT, Runtime

    async def main() -> tuple[int, list[str]]:
        posted: list[dict[str, Any]] = []
        cells = LocalCells(CONTROL_SLOTS)
        rt = Runtime(lambda m, t: posted.append(m), control=cells, isolated=True)
        undo = rt.watch_unraisable()

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            if event == "call" and frame.f_code is _Dropped.__del__.__code__:
                sys.settrace(None)
                cells.store(0, 0)  # taken: Pyodide clears the word as it raises
                rt.on_interrupt(signal.SIGINT, frame)
            return None

        cells.store(TARGET_SLOT, 9)
        sys.settrace(tracer)
        try:
            rt.handle({"v": 1, "kind": "request", "id": 9, "channel": "hosttest",
                       "op": "drops"})
            await asyncio.sleep(0)
        finally:
            sys.settrace(None)
            undo()
        return cells.load(0), [m["kind"] for m in posted]

    assert run(main()) == (INTERRUPT, ["response"])


def test_an_interrupt_taken_while_the_payload_converts_stops_the_request_before_it_runs():
    from workerbridge.core.shared import LocalCells
    from workerbridge.runtime.dispatch import CONTROL_SLOTS, INTERRUPT, TARGET_SLOT, Runtime

    ran: list[int] = []

    @handler("hosttest", "never_runs")
    async def _never_runs(ctx: Any, payload: Any) -> int:
        ran.append(1)
        return 1

    async def main() -> list[tuple[str, Any]]:
        posted: list[dict[str, Any]] = []
        cells = LocalCells(CONTROL_SLOTS)

        def convert(payload: Any) -> Any:  # Python takes the interrupt in here
            cells.store(TARGET_SLOT, 4)
            cells.store(0, INTERRUPT)
            rt.on_interrupt()
            return payload

        rt = Runtime(lambda m, t: posted.append(m), control=cells, isolated=True,
                     convert_payload=convert)
        rt.handle({"v": 1, "kind": "request", "id": 4, "channel": "hosttest",
                   "op": "never_runs", "payload": 1})
        await asyncio.sleep(0.01)
        return [(m["kind"], m.get("code")) for m in posted]

    assert run(main()) == [("error", "cancelled")]
    assert ran == []
