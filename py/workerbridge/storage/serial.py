"""The queue a worker runs one database's calls through: one transaction at a time, in
arrival order, with group commit (pure asyncio)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from workerbridge.core.errors import (
    ConstraintError,
    IntegrityError,
    InvalidInputError,
    StorageQuotaError,
)
from workerbridge.core.futures import settle as _settle

log = logging.getLogger("workerbridge.storage")

GroupRunner = Callable[[list[Any]], Awaitable[list[Any]]]
Sink = Callable[[Any, BaseException | None], None]  # (result, error): called exactly once
# Errors that belong to one record of a group: retried one by one so only it fails.
PER_RECORD = (ConstraintError, InvalidInputError, StorageQuotaError, IntegrityError)


@dataclass(eq=False, slots=True)
class _Job:
    kind: str
    args: Any
    sink: Sink
    wanted: Callable[[], bool] | None = None  # False once its caller gave up


class SerialQueue:
    """Runs jobs one transaction at a time, in arrival order.

    Consecutive jobs of a groupable kind (``groups``: kind -> runner taking every job's
    args and returning one result each) run together, in one transaction: while a
    transaction commits, the creates (or gets) that arrive meanwhile pile up and then
    go together (group commit). If a group fails with an error that may belong to one
    record (a duplicate key, a bad value, the quota), it is retried in halves, in order,
    until the failing jobs are alone: one bad record fails only its own caller. Any other
    job's args is an async callable run on its own.

    Outcomes go to a sink callback rather than a future each: in Pyodide every future
    that wakes a task costs a trip through the browser's scheduler.
    """

    def __init__(self, groups: dict[str, GroupRunner], max_group: int = 2000, *,
                 uncounted: frozenset[str] = frozenset()) -> None:
        self._groups = groups
        self._uncounted = uncounted  # kinds that run no transaction
        self._max_group = max_group
        self._jobs: deque[_Job] = deque()
        self._drainer: asyncio.Future[None] | None = None
        self.transactions = 0

    def put(self, kind: str, args: Any, sink: Sink,
            wanted: Callable[[], bool] | None = None) -> None:
        """Queue a job; ``sink`` gets its outcome."""
        self._jobs.append(_Job(kind, args, sink, wanted))
        if _held is not None:
            _held.add(self)
        else:
            self._start()

    def _start(self) -> None:
        if self._drainer is None or self._drainer.done():
            # Started eagerly: a call to an idle queue reaches IndexedDB in the turn that
            # brought it, not one trip through the browser's scheduler later.
            self._drainer = _eager(self._drain())

    def submit(self, kind: str, args: Any) -> asyncio.Future[Any]:
        """Queue a job; its outcome as a future (cancel it to drop a job not yet run)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.put(kind, args, lambda result, error: _settle(future, result, error),
                 lambda: not future.done())
        return future

    def __len__(self) -> int:
        return len(self._jobs)

    async def _drain(self) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            if job.wanted is not None and not job.wanted():
                continue
            group = [job]
            if job.kind in self._groups:
                while self._jobs and len(group) < self._max_group \
                        and self._jobs[0].kind == job.kind:
                    group.append(self._jobs.popleft())
            await self._run_group(group)

    async def _run_group(self, group: list[_Job]) -> None:
        kind = group[0].kind
        if kind not in self._uncounted:
            self.transactions += 1
        try:
            if kind in self._groups:
                results = await self._groups[kind]([j.args for j in group])
            else:
                results = [await group[0].args()]
        except Exception as exc:
            if len(group) > 1 and isinstance(exc, PER_RECORD):
                # Halve until the bad records are alone: one bad record among n costs
                # about 2 log2(n) more transactions, and the order is kept.
                half = len(group) // 2
                await self._run_group(group[:half])
                await self._run_group(group[half:])
                return
            for job in group:
                _deliver(job.sink, None, exc)
            return
        for job, result in zip(group, results, strict=True):
            _deliver(job.sink, result, None)


_held: set[SerialQueue] | None = None


class held:
    """``with held():`` queues the jobs put meanwhile and starts them all at the end, so
    the calls of one message are all queued before the first runs (and group)."""

    def __enter__(self) -> None:
        global _held
        self._outer = _held
        if _held is None:
            _held = set()

    def __exit__(self, *exc: object) -> None:
        global _held
        if self._outer is not None:
            return
        queues, _held = _held, None
        for queue in queues or ():
            queue._start()


def _eager(coro: Any) -> asyncio.Future[None]:
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro)


def _deliver(sink: Sink, result: Any, error: BaseException | None) -> None:
    try:
        sink(result, error)
    except Exception:  # a sink must not stop the queue
        log.exception("a storage result could not be delivered")


