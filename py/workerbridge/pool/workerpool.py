"""``WorkerPool``: N workers behind one queue, with health checks and restarts.

This module queues and dispatches calls; ``supervisor`` keeps the workers alive.

Jobs wait in a priority queue (high first, FIFO within a priority) until a worker that
has answered READY has room; nothing is sent to a worker before its READY. A worker
that crashes, closes itself, stops answering heartbeats while idle, or ignores the
interrupt after a timeout or cancel is terminated and replaced; the jobs it held are
retried on another worker when that is safe (see ``RetryPolicy``), else rejected with
``WorkerCrashedError``. A worker that keeps failing to boot stops being restarted after
``max_boot_failures`` tries, and when none is left every caller gets a clear error —
or, with ``fallback="auto"``, the pool runs the handlers on the page's own thread.

An autoscaled pool (``min_size``/``max_size``) boots more workers under a backlog and
retires idle ones after a quiet spell (the policy is ``scaling``); a worker is retired
only with nothing in flight on it, so no call is ever dropped by a shrink.

Pure logic over injected transports: the browser's Worker in ``webworker``, the
in-process loopback in ``loopback``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from workerbridge.core.envelope import Priority
from workerbridge.core.errors import (
    InvalidInputError,
    InvalidTypeError,
    QueueFullError,
    ShutdownError,
    WorkerBridgeError,
    WorkerCrashedError,
)
from workerbridge.core.futures import PromptFuture
from workerbridge.core.shared import SharedCancellation
from workerbridge.pool.connection import Connection, ProgressCallback, RetryPolicy, settler
from workerbridge.pool.factories import Fallback, boots_from_snapshot, choose, default_size
from workerbridge.pool.scaling import ScaleEvent, ScalePolicy, Scaler, check_size
from workerbridge.pool.supervisor import PoolTransport, Supervisor, TransportFactory, _Slot

__all__ = ["PoolStats", "PoolTransport", "ScaleEvent", "Strategy", "TransportFactory",
           "WorkerPool"]

log = logging.getLogger("workerbridge.pool")

Strategy = Literal["least-busy", "round-robin"]


def _boot_error(exc: BaseException | None) -> WorkerBridgeError:
    """A fresh copy of the error that stopped the pool's workers booting, for a caller."""
    if isinstance(exc, WorkerBridgeError):
        try:
            return type(exc)(str(exc))
        except TypeError:
            pass
    return WorkerCrashedError(str(exc))


def _scaling(size: int | None, min_size: int | None, max_size: int | None,
             scale_up_at: float | None, scale_down_at: float | None,
             up_cooldown: float | None, down_cooldown: float | None,
             on_scale: Callable[[ScaleEvent], None] | None) -> ScalePolicy | None:
    """The policy of an autoscaled pool (``min_size`` or ``max_size`` given), else None;
    ``InvalidInputError`` (or ``InvalidTypeError``) for a bad value, or for a scaling
    option given to a fixed pool. Omitted options take ``ScalePolicy``'s defaults."""
    given: dict[str, Any] = {name: value for name, value in (
        ("scale_up_at", scale_up_at), ("scale_down_at", scale_down_at),
        ("up_cooldown", up_cooldown), ("down_cooldown", down_cooldown)) if value is not None}
    if min_size is None and max_size is None:
        if given or on_scale is not None:
            names = ", ".join([*given, *(["on_scale"] if on_scale is not None else [])])
            raise InvalidInputError(f"{names}: only for an autoscaled pool (give min_size= "
                                    "and max_size=)")
        return None
    if size is not None:
        raise InvalidInputError("size= makes a fixed pool, min_size=/max_size= an autoscaled "
                                "one: give one or the other")
    if on_scale is not None and not callable(on_scale):
        raise InvalidTypeError(f"on_scale must be callable, not {type(on_scale).__name__}")
    low = 1 if min_size is None else check_size("min_size", min_size)
    high = max(low, default_size()) if max_size is None else max_size
    return ScalePolicy(low, high, **given)


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int  # workers ready now
    busy: int  # ready workers with at least one request in flight
    idle: int
    queued: int
    in_flight: int
    processed: int
    errors: int
    restarts: int
    average_latency_ms: float
    fallback: bool  # running on the page's own thread
    booting: int = 0  # workers on their way to READY (or waiting to boot again)
    min_size: int = 0  # the fewest workers the pool keeps (a fixed pool: its size)
    max_size: int = 0  # the most it runs
    scale_ups: int = 0  # steps that booted workers (each may boot several)
    scale_downs: int = 0  # steps that retired idle workers


@dataclass(slots=True, eq=False)  # identity equality: jobs live in sets and heaps
class _Job:
    channel: str
    op: str
    payload: Any
    transfer: Sequence[Any]
    priority: Priority
    timeout: float | None
    on_progress: ProgressCallback | None
    cancel: SharedCancellation | None
    idempotent: bool
    sink: Callable[[Any, BaseException | None], None]  # told the outcome, exactly once
    seq: int
    max_retries: int
    attempts: int = 0
    started: float = 0.0
    done: bool = False
    attempt: tuple[Connection, int] | None = None  # where it runs now: (connection, id)



class _JobFuture(PromptFuture):
    """The caller's future; cancelling it cancels the request at once, with no callback
    round trip through the browser's scheduler."""

    on_cancel: Callable[[], None] | None = None

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg=msg):
            return False
        if self.on_cancel is not None:
            self.on_cancel()
        return True


class WorkerPool(Supervisor):
    """Runs requests on ``size`` workers; see the module docstring for the guarantees."""

    def __init__(
        self,
        modules_or_url: TransportFactory | str | Sequence[str] = (),
        *,
        size: int | None = None,
        strategy: Strategy = "least-busy",
        task_timeout: float | None = None,
        max_queue: int = 10_000,
        max_in_flight: int = 64,
        retry: RetryPolicy | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 10.0,
        cancel_grace: float = 2.0,
        max_boot_failures: int = 3,
        boot_timeout: float = 120.0,
        fallback: Fallback = "auto",
        base_url: str | None = None,
        fallback_factory: TransportFactory | None = None,
        fallback_where: str = "on the page's thread",
        clock: Callable[[], float] = time.monotonic,
        snapshot: bool = True,
        packages: Sequence[str] = (),
        packages_base_url: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        scale_up_at: float | None = None,
        scale_down_at: float | None = None,
        up_cooldown: float | None = None,
        down_cooldown: float | None = None,
        on_scale: Callable[[ScaleEvent], None] | None = None,
    ) -> None:
        """``modules_or_url``: URLs of worker modules (.py) for the bundle's workers, the
        URL of your own worker script (.mjs/.js), or a transport factory.
        ``size``: workers (default ``navigator.hardwareConcurrency``); or ``min_size`` and
        ``max_size`` (default: 1 and ``size``'s default) for a pool that grows under a
        backlog and shrinks when idle, by ``scale_up_at``, ``scale_down_at``,
        ``up_cooldown`` and ``down_cooldown`` (``scaling.ScalePolicy``), telling
        ``on_scale`` of each step (docs/bridge-and-pool.md); ``task_timeout``:
        default per-request limit in seconds; ``max_in_flight``: requests one worker may
        hold at once; ``fallback``: "auto" runs the handlers on the page's thread when no
        worker can boot, "main" always does, "never" fails instead. ``snapshot``: bundle
        workers boot from a cached Pyodide memory snapshot; with none cached the first
        worker boots normally and makes it, and the others boot once it is ready.
        ``packages``: names of packages every worker loads from the bundle (with their
        dependencies) before importing the modules; ``start()`` raises
        ``PackageNotFoundError`` for one the bundle lacks. ``packages_base_url``: the
        folder of a Pyodide distribution (its ``pyodide-lock.json`` and wheels) to load
        them from instead (docs/packages.md)."""
        transport_factory, on_main, main_thread = choose(modules_or_url, base_url, fallback,
                                                         snapshot, packages, packages_base_url)
        fallback_factory = fallback_factory or on_main
        policy = _scaling(size, min_size, max_size, scale_up_at, scale_down_at, up_cooldown,
                          down_cooldown, on_scale)
        if policy is not None:
            size = policy.max_size
        size = 1 if main_thread else default_size() if size is None else size
        if main_thread:
            warnings.warn("fallback='main': the handlers run on the page's thread",
                          RuntimeWarning, stacklevel=2)
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        if not isinstance(snapshot, bool):
            raise InvalidTypeError(f"snapshot must be True or False, not {snapshot!r}")
        if strategy not in ("least-busy", "round-robin"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self._factory = transport_factory
        self._fallback_factory = fallback_factory
        self.size = size
        self.strategy: Strategy = strategy
        self.task_timeout = task_timeout
        self.max_queue = max_queue
        self.max_in_flight = max_in_flight
        self.retry = retry or RetryPolicy()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.cancel_grace = cancel_grace
        self.max_boot_failures = max_boot_failures
        self.boot_timeout = boot_timeout
        self._clock = clock
        # Fixed on the page's thread, where one interpreter runs everything.
        self._scaler = Scaler(policy, clock) if policy is not None and not main_thread else None
        self.min_size = self._scaler.policy.min_size if self._scaler is not None else size
        self.on_scale = on_scale
        self._scale_ups = 0
        self._scale_downs = 0
        self._scale_soon = False
        self._slots: list[_Slot] = []
        # heap of (-priority, seq, job): high priority first, FIFO within a priority
        self._queue: list[tuple[int, int, _Job]] = []
        self._seq = itertools.count()
        self._rr = 0
        self._jobs: set[_Job] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._processed = 0
        self._errors = 0
        self._restarts = 0
        self._latency_total = 0.0
        self._closing = False
        self._closed = False
        self._fallback = main_thread
        self._fallback_where = fallback_where
        self._stagger = boots_from_snapshot(modules_or_url, snapshot) and not main_thread
        self._held: list[_Slot] = []
        self._health: asyncio.Task[None] | None = None
        self._first_ready: asyncio.Future[None] | None = None
        self._started = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> WorkerPool:
        """Boot the workers; return once one is ready (the rest keep booting)."""
        if self._closed:
            raise ShutdownError("this pool was terminated")
        if not self._started:
            self._started = True
            self._first_ready = asyncio.get_running_loop().create_future()
            self._slots = [_Slot(i) for i in range(self.min_size)]
            # With snapshots, one worker boots first: it makes the snapshot (or finds one
            # cached) that the rest then boot from in a fraction of the time.
            self._held = self._slots[1:] if self._stagger else []
            for slot in self._slots[: 1 if self._stagger else None]:
                self._boot(slot)
            self._health = asyncio.ensure_future(self._health_loop())
            if self._scaler is not None:
                self._spawn(self._scale_loop(self._scaler.policy))
        assert self._first_ready is not None
        await asyncio.shield(self._first_ready)
        return self

    async def wait_all_ready(self) -> None:
        """Wait until every worker that can boot has answered READY."""
        await self.start()
        while any(s.state == "booting" for s in self._slots):
            await asyncio.sleep(0.02)

    async def terminate(self, force: bool = False) -> None:
        """Stop the pool. ``force``: reject everything now; else let queued work finish."""
        if self._closed:
            return
        self._closing = True
        if not force:
            while self._queue or any(s.load for s in self._slots if s.state == "ready"):
                if not any(s.state in ("ready", "booting") for s in self._slots):
                    break
                await asyncio.sleep(0.01)
        self._closed = True
        for _, _, job in list(self._queue):
            self._fail(job, ShutdownError("the pool was terminated"))
        self._queue.clear()
        for slot in self._slots:
            if slot.connection is not None:
                slot.connection.destroy(ShutdownError("the pool was terminated"))
            if slot.transport is not None:
                slot.transport.terminate()
            slot.state = "dead"
        for task in list(self._tasks):
            task.cancel()
        if self._health is not None:
            self._health.cancel()
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_exception(ShutdownError("the pool was terminated"))
            self._first_ready.exception()

    @property
    def closed(self) -> bool:
        """True once ``terminate()`` has begun: nothing new is accepted."""
        return self._closed or self._closing

    def sibling(self, size: int | None = None, **scaling: Any) -> WorkerPool:
        """A new pool made as this one's are (the same transports, fallback, timeouts and
        limits): of ``size`` workers (default 1), or autoscaled by ``scaling``
        (``min_size``, ``max_size`` and the thresholds and cooldowns)."""
        if size is None and not scaling:
            size = 1
        return WorkerPool(self._factory, size=size, task_timeout=self.task_timeout,
                          max_queue=self.max_queue, max_in_flight=self.max_in_flight,
                          boot_timeout=self.boot_timeout,
                          fallback_factory=self._fallback_factory,
                          fallback_where=self._fallback_where, **scaling)

    def restart_worker(self, index: int, reason: str = "restarted by the page") -> bool:
        """Terminate ready worker ``index`` now and boot a replacement (to recycle one that
        grew large, say). Its calls fail with ``WorkerCrashedError``, which the pool's
        ``RetryPolicy`` retries on another worker. False if that worker was not ready."""
        slot = next((s for s in self._slots if s.index == index), None)
        if slot is None or slot.state != "ready":
            return False
        self._lost(slot, reason)
        return True

    # --- submitting ------------------------------------------------------------------------

    def submit(
        self,
        channel: str,
        op: str,
        payload: Any = None,
        *,
        transfer: Sequence[Any] = (),
        priority: Priority | int = Priority.NORMAL,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
        idempotent: bool = False,
        retries: int | None = None,
    ) -> asyncio.Future[Any]:
        """Queue one request and return its future at once.

        ``retries`` overrides the pool's ``RetryPolicy.max_retries`` for this call.

        Raises ``QueueFullError`` immediately when ``max_queue`` requests are waiting,
        ``ShutdownError`` after ``terminate()``. Cancelling the future cancels the request.
        """
        future = _JobFuture()
        job = self._enqueue(channel, op, payload, settler(future), transfer=transfer,
                            priority=priority,
                            timeout=timeout, on_progress=on_progress, cancel=cancel,
                            idempotent=idempotent, retries=retries)
        future.on_cancel = lambda: self._cancel_job(job)
        return future

    def _enqueue(
        self,
        channel: str,
        op: str,
        payload: Any,
        sink: Callable[[Any, BaseException | None], None],
        *,
        transfer: Sequence[Any] = (),
        priority: Priority | int = Priority.NORMAL,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
        idempotent: bool = False,
        retries: int | None = None,
        check_queue: bool = True,
        pump: bool = True,
    ) -> _Job:
        if self._closing or self._closed:
            raise ShutdownError("the pool was terminated")
        if check_queue and len(self._queue) >= self.max_queue:
            raise QueueFullError(f"the pool's queue is full ({self.max_queue} waiting)")
        if not self._started:
            self._spawn(self.start())
        job = _Job(channel, op, payload, tuple(transfer) if transfer else (),
                   priority if type(priority) is Priority else Priority(priority),
                   self.task_timeout if timeout is None else timeout, on_progress, cancel,
                   idempotent, sink, next(self._seq),
                   self.retry.max_retries if retries is None else retries,
                   started=self._clock())
        self._jobs.add(job)
        if self._first_ready is not None and self._first_ready.done() \
                and self._first_ready.exception() is not None and not self._fallback:
            self._settle_job(job, None, _boot_error(self._first_ready.exception()))
            return job
        if pump and not self._queue:
            slot = self._pick()
            if slot is not None:  # nothing waits ahead of it: skip the queue
                self._dispatch(job, slot)
                return job
        heapq.heappush(self._queue, (-job.priority, job.seq, job))
        if pump:
            self._pump()
        return job

    async def execute(self, channel: str, op: str, payload: Any = None, **options: Any) -> Any:
        """``await submit(...)``: run one request and return its result."""
        return await self.submit(channel, op, payload, **options)

    async def map(self, channel: str, op: str, payloads: Iterable[Any],
                  **options: Any) -> list[Any]:
        """Run one request per payload across the pool; results in payload order.

        The whole batch shares one future, so a large map costs one wake-up of the
        caller, not one per request. The first error cancels the rest and is raised.
        """
        items = list(payloads)
        if not items:
            return []
        if len(self._queue) + len(items) > self.max_queue + self.size * self.max_in_flight:
            raise QueueFullError(f"{len(items)} requests do not fit the pool's queue "
                                 f"({self.max_queue} waiting at most)")
        group: asyncio.Future[list[Any]] = PromptFuture()
        results: list[Any] = [None] * len(items)
        remaining = len(items)
        jobs: list[_Job] = []

        def sink_for(i: int) -> Callable[[Any, BaseException | None], None]:
            def sink(result: Any, error: BaseException | None) -> None:
                nonlocal remaining
                if group.done():
                    return
                if error is not None:
                    group.set_exception(error if type(error) is not asyncio.CancelledError
                                        else asyncio.CancelledError())
                    return
                results[i] = result
                remaining -= 1
                if remaining == 0:
                    group.set_result(results)

            return sink

        try:
            for i, payload in enumerate(items):
                jobs.append(self._enqueue(channel, op, payload, sink_for(i), check_queue=False,
                                          pump=False, **options))
            self._pump()
            return await group
        finally:
            for job in jobs:
                self._cancel_job(job)

    def _cancel_job(self, job: _Job) -> None:
        """Give up on a job (its caller cancelled): stop it in its worker if it runs."""
        if job.done:
            return
        attempt = job.attempt
        self._settle_job(job, None, asyncio.CancelledError())
        if attempt is not None:
            attempt[0].cancel_request(attempt[1])

    def _settle_job(self, job: _Job, result: Any, error: BaseException | None) -> None:
        if job.done:
            return
        job.done = True
        job.attempt = None
        self._jobs.discard(job)
        if error is None:
            self._processed += 1
            self._latency_total += self._clock() - job.started
        elif type(error) is not asyncio.CancelledError:
            self._errors += 1
        job.sink(result, error)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        self._settle_job(job, None, exc)

    def _queue_failed(self, error: WorkerBridgeError) -> None:
        for _, _, job in list(self._queue):
            self._fail(job, _boot_error(error))
        self._queue.clear()

    # --- dispatch --------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand queued jobs to ready workers with room, by the pool's strategy."""
        while self._queue:
            slot = self._pick()
            if slot is None:
                self._autoscale_soon()  # a backlog: the pool may grow
                return
            job = heapq.heappop(self._queue)[2]
            if not job.done:
                self._dispatch(job, slot)

    def _pick(self) -> _Slot | None:
        """The ready worker the strategy gives the next job to, if one has room."""
        # While an autoscaled pool can still grow, a worker holds one request at a time:
        # the rest wait in the queue, where they count as backlog and can go to the
        # workers that boot, instead of lining up behind a busy one.
        limit = self.max_in_flight if self._scaler is None or self._grown() else 1
        if self.strategy == "least-busy":
            best: _Slot | None = None
            for slot in self._slots:
                if slot.state == "ready" and (best is None or slot.load < best.load):
                    best = slot
            return best if best is not None and best.load < limit else None
        ready = [s for s in self._slots if s.state == "ready"]
        for _ in range(len(ready)):
            self._rr = (self._rr + 1) % len(ready)
            if ready[self._rr].load < limit:
                return ready[self._rr]
        return None

    def _dispatch(self, job: _Job, slot: _Slot) -> None:
        connection = slot.connection
        assert connection is not None
        job.attempts += 1
        slot.assigned += 1
        settled = False

        def on_done(result: Any, error: BaseException | None) -> None:
            nonlocal settled
            if settled:
                return
            settled = True
            if slot.connection is connection:
                slot.assigned -= 1
            self._attempt_done(job, result, error)
            if error is not None:
                self._pump()  # an answer pumps through on_settled; a local failure does not

        try:
            rid = connection.start(
                job.channel, job.op, job.payload, on_done=on_done, transfer=job.transfer,
                timeout=job.timeout, on_progress=job.on_progress, cancel=job.cancel,
                priority=job.priority)
        except BaseException as exc:  # e.g. a payload that cannot be sent
            on_done(None, exc)
            return
        if not settled:
            job.attempt = (connection, rid)

    def _attempt_done(self, job: _Job, result: Any, error: BaseException | None) -> None:
        job.attempt = None
        if job.done:
            return
        if error is None or type(error) is asyncio.CancelledError:
            self._settle_job(job, result, error)
            return
        can_retry = (job.attempts <= job.max_retries and not job.transfer
                     and self.retry.retryable(error, idempotent=job.idempotent)
                     and not self._closing)
        if not can_retry:
            self._fail(job, error)
            return
        log.info("retrying %s.%s after %s (attempt %d)", job.channel, job.op,
                 type(error).__name__, job.attempts + 1)

        async def again() -> None:
            await asyncio.sleep(self.retry.delay(job.attempts))
            if not job.done:
                heapq.heappush(self._queue, (-job.priority, job.seq, job))
                self._pump()

        self._spawn(again())

    # --- state -----------------------------------------------------------------------------

    @property
    def fallback(self) -> bool:
        """True when the handlers run on the page's own thread."""
        return self._fallback

    @property
    def isolated(self) -> bool:
        return any(s.transport is not None and s.transport.isolated for s in self._slots
                   if s.state == "ready")

    def ready_info(self) -> list[dict[str, Any]]:
        return [dict(s.ready_info) for s in self._slots if s.state == "ready"]

    def pending_ids(self) -> list[int]:
        """Ids still awaited by a caller, over all workers (empty when nothing hangs)."""
        return sorted(rid for s in self._slots if s.connection is not None
                      for rid in s.connection.pending_ids if rid != s.ping)

    def pending(self) -> int:
        """Callers still waiting: queued, running or between retries."""
        return sum(1 for j in self._jobs if not j.done)

    def unanswered_cancels(self) -> int:
        """Requests cancelled by their callers that a worker has not yet let go of (0 once
        every cancel has been answered; past ``cancel_grace`` the worker is replaced)."""
        return sum(len(s.connection.overdue_cancels(0.0)) for s in self._slots
                   if s.connection is not None)

    def stats(self) -> PoolStats:
        ready = [s for s in self._slots if s.state == "ready"]
        busy = sum(1 for s in ready if s.load)
        return PoolStats(
            size=len(ready), busy=busy, idle=len(ready) - busy, queued=len(self._queue),
            in_flight=sum(s.load for s in ready), processed=self._processed,
            errors=self._errors, restarts=self._restarts,
            average_latency_ms=(self._latency_total / self._processed * 1000
                                if self._processed else 0.0),
            fallback=self._fallback,
            booting=sum(1 for s in self._slots if s.state in ("booting", "dead")),
            min_size=self.min_size, max_size=self.size, scale_ups=self._scale_ups,
            scale_downs=self._scale_downs)
