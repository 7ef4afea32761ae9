"""Host tests of the pure parts of snapshot boot: reseeding, and a pool booting its first
worker alone before the rest (so they can boot from the snapshot it makes)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from conftest import run
from workerbridge import InvalidTypeError, WorkerPool
from workerbridge.pool.factories import boots_from_snapshot
from workerbridge.pool.loopback import LoopbackTransport
from workerbridge.runtime import snapshot as _snapshot


def test_reseed_gives_fresh_random_state_and_marks_the_worker():
    random.seed(1234)  # what every worker booted from one snapshot would start with
    shared = random.getstate()
    expected = random.random()
    random.setstate(shared)
    _snapshot.reseed()
    assert _snapshot.booted_from_snapshot is True
    assert random.getstate() != shared
    assert random.random() != expected


def test_only_bundle_workers_boot_from_snapshots():
    assert boots_from_snapshot((), True)
    assert boots_from_snapshot(["./mine.py"], True)
    assert boots_from_snapshot("./mine.py", True)
    assert not boots_from_snapshot(["./mine.py"], False)
    assert not boots_from_snapshot("./custom-worker.mjs", True)  # someone else's script
    assert not boots_from_snapshot(LoopbackTransport, True)


def test_snapshot_must_be_a_bool():
    with pytest.raises(InvalidTypeError):
        WorkerPool(LoopbackTransport, size=1, snapshot="yes")  # type: ignore[arg-type]


class Booting(LoopbackTransport):
    """Answers READY only when the test says so; the first one made crashes at boot
    when ``fail_first`` is set."""

    fail_first = False

    def __init__(self, on_message: Any, on_crash: Any) -> None:
        super().__init__(on_message, on_crash)
        self.crash = on_crash
        made.append(self)

    def start(self) -> None:
        if self.fail_first and self is made[0]:
            self._loop.call_soon(self.crash, "boot exploded")


made: list[Booting] = []


def staggered(size: int) -> WorkerPool:
    pool = WorkerPool(Booting, size=size, max_boot_failures=1, fallback="never")
    pool._stagger = True  # as for bundle workers, which need a browser
    return pool


def test_a_staggered_pool_boots_the_rest_once_the_first_is_ready():
    async def main() -> None:
        made.clear()
        pool = staggered(3)
        starting = asyncio.ensure_future(pool.start())
        await asyncio.sleep(0.05)
        assert len(made) == 1, "the other workers booted before the first was ready"
        made[0].runtime.ready()
        await starting
        assert len(made) == 3
        for transport in made[1:]:
            transport.runtime.ready()
        await pool.wait_all_ready()
        assert pool.stats().size == 3
        await pool.terminate(force=True)

    run(main())


def test_a_first_worker_that_cannot_boot_releases_the_rest():
    async def main() -> None:
        made.clear()
        Booting.fail_first = True
        try:
            pool = staggered(3)
            starting = asyncio.ensure_future(pool.start())
            await asyncio.sleep(0.05)
            assert len(made) == 3, "the others waited forever for a worker that failed"
            made[1].runtime.ready()
            await starting
            assert pool.stats().size == 1
            await pool.terminate(force=True)
        finally:
            Booting.fail_first = False

    run(main())
