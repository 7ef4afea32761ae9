"""Host unit tests of WorkerPool over loopback transports, with faults injected."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from conftest import run
from workerbridge import (
    QueueFullError,
    RequestTimeoutError,
    RetryPolicy,
    ShutdownError,
    WorkerCrashedError,
    WorkerPool,
    handler,
)
from workerbridge.pool.loopback import LoopbackTransport
from workerbridge.runtime.dispatch import Context


@handler("pooltest", "sleep")
async def _sleep(ctx: Context, payload: dict[str, Any]) -> Any:
    await asyncio.sleep(payload.get("seconds", 0.0))
    return payload.get("tag")


@handler("pooltest", "stubborn")
async def _stubborn(ctx: Context, payload: dict[str, Any]) -> str:
    """Ignores cancellation (for a second): the pool must give up on the worker."""
    for _ in range(20):
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue
    return "never"


class SlowBoot(LoopbackTransport):
    """Answers READY only after ``delay`` seconds."""

    delay = 0.2

    def start(self) -> None:
        self._loop.call_later(self.delay, self.runtime.ready)


class NeverBoots(LoopbackTransport):
    def start(self) -> None:
        self._loop.call_soon(self._crash, "boot exploded")

    def __init__(self, on_message: Any, on_crash: Any) -> None:
        super().__init__(on_message, on_crash)
        self._crash = on_crash


class GoesSilent(LoopbackTransport):
    """Boots, then stops delivering anything once ``silent`` is set (a hung worker)."""

    silent = False

    def _from_runtime(self, message: dict[str, Any], transfer: Any) -> None:
        if not self.silent:
            super()._from_runtime(message, transfer)


def counting(cls: type[LoopbackTransport]) -> tuple[Callable[..., Any], list[Any]]:
    made: list[Any] = []

    def factory(on_message: Any, on_crash: Any) -> Any:
        t = cls(on_message, on_crash)
        made.append(t)
        return t

    return factory, made


def test_nothing_is_sent_before_ready_and_the_queue_cap_rejects_at_once():
    async def main() -> None:
        factory, made = counting(SlowBoot)
        pool = WorkerPool(factory, size=1, max_queue=5)
        futures = [pool.submit("pooltest", "sleep", {"tag": i}) for i in range(5)]
        with pytest.raises(QueueFullError):
            pool.submit("pooltest", "sleep", {"tag": 99})
        await asyncio.sleep(0.05)
        assert made and made[0].sent == 0, "a request was sent before READY"
        assert await asyncio.gather(*futures) == [0, 1, 2, 3, 4]
        await pool.terminate()

    run(main())


def test_priority_queue_high_first_fifo_within_a_priority():
    async def main() -> list[str]:
        pool = WorkerPool(LoopbackTransport, size=1, max_in_flight=1)
        await pool.start()
        done: list[str] = []
        blocker = pool.submit("pooltest", "sleep", {"seconds": 0.1, "tag": "blocker"})
        jobs = [("low1", 0), ("normal1", 1), ("high1", 2), ("low2", 0), ("high2", 2),
                ("normal2", 1)]
        futures = []
        for tag, prio in jobs:
            f = pool.submit("pooltest", "sleep", {"tag": tag}, priority=prio)
            f.add_done_callback(lambda f: done.append(f.result()))
            futures.append(f)
        await blocker
        await asyncio.gather(*futures)
        await pool.terminate()
        return done

    assert run(main()) == ["high1", "high2", "normal1", "normal2", "low1", "low2"]


def test_retry_policy():
    policy = RetryPolicy(max_retries=3, base_delay=0.1, max_delay=0.3, jitter=0.5)
    assert policy.retryable(WorkerCrashedError("x"), idempotent=False)
    assert not policy.retryable(RequestTimeoutError("x"), idempotent=False)
    assert policy.retryable(RequestTimeoutError("x"), idempotent=True)
    assert not policy.retryable(ValueError("x"), idempotent=True)
    assert [policy.delay(n, rng=lambda: 0.0) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    assert policy.delay(2, rng=lambda: 1.0) == pytest.approx(0.1)


def test_idempotent_timeouts_are_retried_others_are_not():
    async def main() -> None:
        pool = WorkerPool(LoopbackTransport, size=2,
                          retry=RetryPolicy(max_retries=2, base_delay=0.01))
        await pool.start()
        with pytest.raises(RequestTimeoutError):
            await pool.execute("pooltest", "sleep", {"seconds": 1}, timeout=0.05)
        assert pool.stats().errors == 1
        with pytest.raises(RequestTimeoutError):
            await pool.execute("pooltest", "sleep", {"seconds": 1}, timeout=0.05,
                               idempotent=True)
        assert pool.stats().errors == 2
        assert not pool.pending_ids() and pool.pending() == 0
        await pool.terminate(force=True)

    run(main())


def test_boot_failures_stop_after_n_tries_and_every_caller_hears():
    async def main() -> int:
        factory, made = counting(NeverBoots)
        pool = WorkerPool(factory, size=2, max_boot_failures=3)
        early = pool.submit("pooltest", "sleep", {"tag": 1})
        with pytest.raises(WorkerCrashedError, match="could boot"):
            await pool.start()
        with pytest.raises(WorkerCrashedError):
            await early
        with pytest.raises(WorkerCrashedError):
            await pool.execute("pooltest", "sleep", {"tag": 2})
        await asyncio.sleep(0.5)  # no restart storm: nothing more is booted
        assert pool.pending() == 0
        await pool.terminate(force=True)
        return len(made)

    assert run(main()) == 2 * 3


def test_fallback_factory_takes_over_when_no_worker_boots():
    async def main() -> Any:
        pool = WorkerPool(NeverBoots, size=2, max_boot_failures=2,
                          fallback_factory=LoopbackTransport)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await pool.start()
        result = await pool.execute("pooltest", "sleep", {"tag": "ran"})
        assert pool.fallback and pool.stats().fallback
        assert [str(w.message)[:22] for w in caught] == ["no worker could boot ("]
        await pool.terminate()
        return result

    assert run(main()) == "ran"


def test_terminate_drains_or_rejects():
    async def main() -> None:
        pool = WorkerPool(LoopbackTransport, size=2)
        await pool.start()
        futures = [pool.submit("pooltest", "sleep", {"seconds": 0.05, "tag": i})
                   for i in range(6)]
        await pool.terminate()  # drains
        assert [f.result() for f in futures] == list(range(6))
        with pytest.raises(ShutdownError):
            pool.submit("pooltest", "sleep")

        pool = WorkerPool(LoopbackTransport, size=2)
        await pool.start()
        futures = [pool.submit("pooltest", "sleep", {"seconds": 5}) for _ in range(4)]
        await asyncio.sleep(0.02)
        await pool.terminate(force=True)
        for f in futures:
            with pytest.raises(ShutdownError):
                await f
        assert not pool.pending_ids()

    run(main())


def test_silent_idle_worker_is_replaced_after_missed_heartbeats():
    async def main() -> None:
        factory, made = counting(GoesSilent)
        pool = WorkerPool(factory, size=1, heartbeat_interval=0.02, heartbeat_timeout=0.1)
        await pool.start()
        made[0].silent = True
        await asyncio.sleep(0.3)
        assert pool.stats().restarts == 1 and len(made) == 2
        assert made[0].alive is False
        await pool.wait_all_ready()
        assert await pool.execute("pooltest", "sleep", {"tag": "alive"}) == "alive"
        await pool.terminate(force=True)

    run(main())


def test_worker_that_ignores_cancel_is_replaced_and_the_caller_is_not_left_waiting():
    async def main() -> None:
        factory, made = counting(LoopbackTransport)
        pool = WorkerPool(factory, size=1, heartbeat_interval=0.02, cancel_grace=0.1,
                          retry=RetryPolicy(max_retries=0))
        await pool.start()
        with pytest.raises(RequestTimeoutError):
            await pool.execute("pooltest", "stubborn", {}, timeout=0.05)
        await asyncio.sleep(0.3)
        assert pool.stats().restarts == 1 and len(made) == 2
        assert made[0].alive is False, "the stubborn worker was terminated"
        assert await pool.execute("pooltest", "sleep", {"tag": "fresh"}) == "fresh"
        await pool.terminate(force=True)

    run(main())


def test_map_and_stats():
    async def main() -> None:
        pool = WorkerPool(LoopbackTransport, size=3, strategy="round-robin")
        await pool.wait_all_ready()
        assert await pool.map("pooltest", "sleep", [{"tag": i} for i in range(20)]) == \
            list(range(20))
        stats = pool.stats()
        assert stats.size == 3 and stats.processed == 20 and stats.errors == 0
        assert stats.queued == 0 and stats.average_latency_ms >= 0
        await pool.terminate()

    run(main())
