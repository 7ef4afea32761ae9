"""Host tests of autoscaling: the pure policy on a fake clock, then a pool of loopback
workers growing under a backlog and shrinking when idle, nothing in flight dropped."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from conftest import run
from workerbridge import (
    InvalidInputError,
    InvalidTypeError,
    ScaleEvent,
    WorkerBridge,
    WorkerPool,
    handler,
)
from workerbridge.pool.loopback import LoopbackTransport
from workerbridge.pool.scaling import PoolLoad, ScalePolicy, Scaler
from workerbridge.runtime.dispatch import Context


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scaler(**options: Any) -> tuple[Scaler, Clock]:
    clock = Clock()
    return Scaler(ScalePolicy(**options), clock), clock


def load(ready: int = 1, booting: int = 0, busy: int = 0, queued: int = 0) -> PoolLoad:
    return PoolLoad(ready, booting, busy, queued)


# --- the policy ------------------------------------------------------------------------


def test_a_large_backlog_boots_up_to_max_at_once():
    s, _ = scaler(min_size=1, max_size=4)
    assert s.decide(load(ready=1, busy=1, queued=39)) == 3


def test_a_small_backlog_boots_only_what_brings_it_below_the_threshold():
    s, _ = scaler(max_size=8, scale_up_at=2.0)
    assert s.decide(load(ready=1, busy=1, queued=1)) == 0  # 1 waiting per worker < 2
    assert s.decide(load(ready=1, busy=1, queued=2)) == 1  # 2 per worker: one more
    s, _ = scaler(max_size=8, scale_up_at=2.0)
    assert s.decide(load(ready=2, busy=2, queued=9)) == 3  # 9 / 5 < 2


def test_booting_workers_count_against_the_backlog():
    s, _ = scaler(max_size=4, up_cooldown=0.0)
    assert s.decide(load(ready=1, booting=3, busy=1, queued=3)) == 0  # at max already
    s, _ = scaler(max_size=8, up_cooldown=0.0)
    assert s.decide(load(ready=1, booting=3, busy=1, queued=3)) == 0  # 3 / 4 < 1
    assert s.decide(load(ready=1, booting=3, busy=1, queued=4)) == 1


def test_up_cooldown_limits_how_often_it_grows():
    s, clock = scaler(max_size=8, up_cooldown=1.0)
    assert s.decide(load(ready=1, busy=1, queued=1)) == 1
    clock.now += 0.5
    assert s.decide(load(ready=2, busy=2, queued=5)) == 0
    clock.now += 0.5
    assert s.decide(load(ready=2, busy=2, queued=5)) == 4


def test_no_growth_without_a_queue():
    s, _ = scaler(max_size=4)
    assert s.decide(load(ready=1, busy=1, queued=0)) == 0
    assert s.decide(load(ready=2, busy=2, queued=0)) == 0


def test_shrinks_idle_workers_after_a_quiet_cooldown_never_below_min():
    s, clock = scaler(min_size=2, max_size=6, down_cooldown=10.0)
    assert s.decide(load(ready=6)) == 0  # quiet from now
    clock.now += 9.9
    assert s.decide(load(ready=6)) == 0
    clock.now += 0.1
    assert s.decide(load(ready=6)) == -4  # all idle, down to min_size at once
    clock.now += 100
    assert s.decide(load(ready=2)) == 0  # at min


def test_busy_workers_are_kept_and_each_step_needs_its_own_quiet_spell():
    s, clock = scaler(min_size=1, max_size=4, down_cooldown=5.0)
    assert s.decide(load(ready=4, busy=1)) == 0
    clock.now += 5
    assert s.decide(load(ready=4, busy=1)) == -3  # the busy one stays
    s, clock = scaler(min_size=1, max_size=8, down_cooldown=5.0)
    assert s.decide(load(ready=8, busy=3)) == 0  # 3/8 busy ≤ 0.5
    clock.now += 5
    assert s.decide(load(ready=8, busy=3)) == -5
    clock.now += 1
    assert s.decide(load(ready=3, busy=1)) == 0  # the next step: another 5 s of quiet
    clock.now += 4
    assert s.decide(load(ready=3, busy=1)) == -2


def test_utilisation_above_scale_down_at_or_a_queue_or_a_boot_resets_the_quiet_spell():
    for busy_load in (load(ready=4, busy=3), load(ready=4, busy=4, queued=1),
                      load(ready=3, booting=1)):
        s, clock = scaler(min_size=1, max_size=4, down_cooldown=5.0, scale_down_at=0.5)
        assert s.decide(load(ready=4)) == 0
        clock.now += 4
        assert s.decide(busy_load) == 0  # not quiet: the spell starts again
        clock.now += 4
        assert s.decide(load(ready=4)) == 0
        clock.now += 5
        assert s.decide(load(ready=4)) == -3


def test_zero_cooldowns_act_at_once():
    s, _ = scaler(min_size=1, max_size=4, up_cooldown=0.0, down_cooldown=0.0)
    assert s.decide(load(ready=1, busy=1, queued=1)) == 1
    assert s.decide(load(ready=2, busy=2, queued=2)) == 1
    assert s.decide(load(ready=3)) == -2


@pytest.mark.parametrize(("options", "error"), [
    ({"min_size": 0}, InvalidInputError),
    ({"min_size": -1}, InvalidInputError),
    ({"min_size": 3, "max_size": 2}, InvalidInputError),
    ({"max_size": 0}, InvalidInputError),
    ({"min_size": 1.0}, InvalidTypeError),
    ({"max_size": "4"}, InvalidTypeError),
    ({"max_size": True}, InvalidTypeError),
    ({"scale_up_at": 0}, InvalidInputError),
    ({"scale_up_at": -1.0}, InvalidInputError),
    ({"scale_up_at": "1"}, InvalidTypeError),
    ({"scale_down_at": 1.5}, InvalidInputError),
    ({"scale_down_at": -0.1}, InvalidInputError),
    ({"up_cooldown": -1}, InvalidInputError),
    ({"down_cooldown": -0.5}, InvalidInputError),
    ({"down_cooldown": math.inf}, InvalidInputError),
    ({"up_cooldown": math.nan}, InvalidInputError),
    ({"up_cooldown": None}, InvalidTypeError),
])
def test_bad_policies_raise_typed_errors(options: dict[str, Any], error: type[Exception]):
    with pytest.raises(error):
        ScalePolicy(**options)
    pool_options = {"min_size": 1, "max_size": 4, **options}
    if options.get("up_cooldown", 0) is not None:  # None means "the default" to the pool
        with pytest.raises(error):
            WorkerPool(LoopbackTransport, **pool_options)
    assert issubclass(error, InvalidInputError) and issubclass(error, ValueError)


def test_pool_and_bridge_arguments():
    with pytest.raises(InvalidInputError, match="one or the other"):
        WorkerPool(LoopbackTransport, size=2, max_size=4)
    with pytest.raises(InvalidInputError, match="autoscaled"):
        WorkerPool(LoopbackTransport, size=2, down_cooldown=5)
    with pytest.raises(InvalidInputError, match="on_scale"):
        WorkerPool(LoopbackTransport, size=2, on_scale=print)
    with pytest.raises(InvalidTypeError):
        WorkerPool(LoopbackTransport, max_size=4, on_scale="print")  # type: ignore[arg-type]
    for workers, error in (((1,), InvalidInputError), ((1, 2, 3), InvalidInputError),
                           ((0, 4), InvalidInputError), ((4, 1), InvalidInputError),
                           ((1, 4.0), InvalidTypeError)):
        with pytest.raises(error):
            WorkerBridge(workers=workers, transport_factory=LoopbackTransport)  # type: ignore[arg-type]
    pool = WorkerBridge(workers=(2, 3), transport_factory=LoopbackTransport).pool
    assert (pool.min_size, pool.size) == (2, 3)
    pool = WorkerBridge(workers=3, transport_factory=LoopbackTransport).pool
    assert (pool.min_size, pool.size, pool._scaler) == (3, 3, None)
    pool = WorkerPool(LoopbackTransport, max_size=5)
    assert (pool.min_size, pool.size) == (1, 5)


# --- a pool of loopback workers ----------------------------------------------------------

GATE: dict[str, asyncio.Event] = {}


@handler("scaletest", "hold")
async def _hold(ctx: Context, payload: dict[str, Any]) -> Any:
    """Runs until the test opens the gate; answers with its tag."""
    await GATE["open"].wait()
    return payload["tag"] * 2


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait for ``condition``; the limit is far above what it takes (milliseconds), for
    a loaded host."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


def scaled_pool(**options: Any) -> tuple[WorkerPool, list[ScaleEvent]]:
    events: list[ScaleEvent] = []
    pool = WorkerPool(LoopbackTransport, on_scale=events.append,
                      **{"min_size": 1, "max_size": 4, "up_cooldown": 0.0,
                         "down_cooldown": 0.1, **options})
    return pool, events


def test_a_backlog_grows_the_pool_in_one_step_and_every_worker_serves():
    async def main() -> None:
        GATE["open"] = asyncio.Event()
        pool, events = scaled_pool(down_cooldown=60.0)
        await pool.start()
        assert pool.stats().size == 1
        futures = [pool.submit("scaletest", "hold", {"tag": i}) for i in range(20)]
        stats = pool.stats()
        # While it can grow, a worker holds one call; the rest wait as the backlog.
        assert (stats.in_flight, stats.queued) == (1, 19)
        await until(lambda: pool.stats().size == 4)
        assert [(e.direction, e.before, e.after, e.queued) for e in events] == \
            [("up", 1, 4, 19)]
        assert all(s.load for s in pool._slots), "a new worker got nothing to do"
        GATE["open"].set()
        assert await asyncio.gather(*futures) == [i * 2 for i in range(20)]
        stats = pool.stats()
        assert (stats.scale_ups, stats.scale_downs, stats.min_size, stats.max_size) == \
            (1, 0, 1, 4)
        await pool.terminate()

    run(main())


def test_idle_workers_are_retired_after_the_cooldown_and_no_call_is_dropped():
    async def main() -> None:
        GATE["open"] = asyncio.Event()
        pool, events = scaled_pool()
        await pool.start()
        futures = [pool.submit("scaletest", "hold", {"tag": i}) for i in range(8)]
        await until(lambda: pool.stats().size == 4)
        await until(lambda: pool.stats().in_flight == 8)  # 4 workers at full depth
        # Every worker busy: no shrink, however long the cooldown has run.
        await asyncio.sleep(0.3)
        assert pool.stats().scale_downs == 0
        GATE["open"].set()
        results = await asyncio.gather(*futures)
        await until(lambda: pool.stats().size == 1)
        assert results == [i * 2 for i in range(8)]
        assert [(e.direction, e.before, e.after) for e in events] == \
            [("up", 1, 4), ("down", 4, 1)]
        assert pool.pending() == 0 and not pool.pending_ids()
        assert await pool.execute("scaletest", "hold", {"tag": 5}) == 10
        await pool.terminate()

    run(main())


def test_a_worker_with_a_call_in_flight_is_never_retired():
    async def main() -> None:
        GATE["open"] = asyncio.Event()
        pool, events = scaled_pool(min_size=1, max_size=3)
        await pool.start()
        futures = [pool.submit("scaletest", "hold", {"tag": i}) for i in range(3)]
        await until(lambda: pool.stats().size == 3)
        await until(lambda: pool.stats().busy == 3)
        GATE["open"].set()
        await asyncio.gather(*futures)
        GATE["open"] = asyncio.Event()  # the next call holds its worker
        held = pool.submit("scaletest", "hold", {"tag": 7})
        await until(lambda: pool.stats().busy == 1)
        holder = next(s for s in pool._slots if s.load)
        await until(lambda: pool.stats().size == 1)
        assert pool._slots == [holder], "the worker with a call in flight was retired"
        assert not held.done()
        GATE["open"].set()
        assert await held == 14
        assert events[-1].direction == "down" and events[-1].busy == 1
        await pool.terminate()

    run(main())


def test_up_cooldown_holds_back_a_second_step():
    async def main() -> None:
        GATE["open"] = asyncio.Event()
        pool, _ = scaled_pool(max_size=4, scale_up_at=2.0, up_cooldown=60.0)
        await pool.start()
        futures = [pool.submit("scaletest", "hold", {"tag": i}) for i in range(3)]
        await until(lambda: pool.stats().size == 2)  # 2 waiting: one more worker
        futures += [pool.submit("scaletest", "hold", {"tag": i}) for i in range(3, 12)]
        await asyncio.sleep(0.2)
        stats = pool.stats()
        assert (stats.size, stats.booting, stats.scale_ups) == (2, 0, 1)
        GATE["open"].set()
        assert len(await asyncio.gather(*futures)) == 12
        await pool.terminate()

    run(main())


def test_a_fixed_pool_is_unchanged():
    async def main() -> None:
        GATE["open"] = asyncio.Event()
        pool = WorkerPool(LoopbackTransport, size=2)
        await pool.wait_all_ready()
        futures = [pool.submit("scaletest", "hold", {"tag": i}) for i in range(10)]
        stats = pool.stats()
        assert (stats.in_flight, stats.queued) == (10, 0)  # straight to the workers
        await asyncio.sleep(0.1)
        GATE["open"].set()
        await asyncio.gather(*futures)
        stats = pool.stats()
        assert (stats.size, stats.min_size, stats.max_size, stats.scale_ups,
                stats.scale_downs, stats.booting) == (2, 2, 2, 0, 0, 0)
        assert len(pool._slots) == 2 and pool._scaler is None
        await pool.terminate()

    run(main())


def test_a_hook_that_raises_does_not_stop_the_pool():
    async def main() -> None:
        GATE["open"] = asyncio.Event()

        def hook(event: ScaleEvent) -> None:
            raise RuntimeError("page bug")

        pool = WorkerPool(LoopbackTransport, min_size=1, max_size=2, up_cooldown=0.0,
                          on_scale=hook)
        await pool.start()
        futures = [pool.submit("scaletest", "hold", {"tag": i}) for i in range(4)]
        await until(lambda: pool.stats().size == 2)
        GATE["open"].set()
        assert await asyncio.gather(*futures) == [0, 2, 4, 6]
        assert pool.stats().scale_ups == 1
        await pool.terminate()

    run(main())
