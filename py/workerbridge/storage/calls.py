"""The page side of storage calls: short calls made in one turn leave in one message,
and each call is counted in the metrics (browser and host alike)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workerbridge.core.errors import (
    RemoteError,
    UnconfiguredError,
    WorkerBridgeError,
    error_from_code,
)
from workerbridge.core.futures import PromptFuture
from workerbridge.core.futures import settle as _settle

if TYPE_CHECKING:
    from workerbridge.pool.workerpool import WorkerPool

CHANNEL = "storage"
EVENTS = ("operation-completed", "operation-failed", "conflict-resolved")
MAX_BATCH = 256  # calls per message at most
BATCHED = ("create", "get")  # short calls that may share a message (and a transaction)


@dataclass(slots=True)
class OpStats:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    latency: float = 0.0  # seconds, summed

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "succeeded": self.succeeded, "failed": self.failed,
                "success_rate": self.succeeded / self.total if self.total else 0.0,
                "average_latency_ms": self.latency / self.total * 1000 if self.total else 0.0}


class Call:
    """One storage call on its way: its future, and what settling it involves (turning
    the worker's result into the caller's, and ``finish(error)``: metrics, events)."""

    __slots__ = ("finish", "future", "op", "payload", "value", "write")

    def __init__(self, op: str, payload: dict[str, Any], write: bool,
                 value: Callable[[Any], Any] | None = None,
                 finish: Callable[[BaseException | None], None] | None = None) -> None:
        self.op, self.payload, self.write = op, payload, write
        self.value, self.finish = value, finish
        self.future: asyncio.Future[Any] = PromptFuture()

    def settle(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is None and self.value is not None:
            try:
                result = self.value(result)
            except Exception as exc:
                error = exc
        if self.finish is not None:
            self.finish(error)
        _settle(self.future, result, error)

    def cancel(self) -> None:
        if not self.future.done():
            self.future.cancel()


@dataclass(slots=True)
class StorageState:
    """What one bridge's storage remembers: the schema in use, listeners, metrics, and
    the calls made in this turn, not yet sent."""

    pool: WorkerPool | None = None
    database: str | None = None
    version: int = 0
    keys: dict[str, str] = field(default_factory=dict)  # collection -> key field
    indexed: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)  # their fields
    listeners: dict[str, list[Callable[[dict[str, Any]], Any]]] = field(
        default_factory=lambda: {e: [] for e in EVENTS})
    stats: dict[str, OpStats] = field(default_factory=dict)
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    pending: list[Call] = field(default_factory=list)
    target: WorkerPool | None = None  # where pending calls go
    scheduled: bool = False
    sent: int = 0  # messages sent and not yet answered
    # Features' settings for the database (name -> value), and their generation: every
    # call carries it, so a worker that restarted without them refuses the call, which is
    # then sent again after them.
    settings: dict[str, Any] = field(default_factory=dict)
    generation: int = 0

    def stamp(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload["db"], payload["v"], payload["cfg"] = self.database, self.version, \
            self.generation
        return payload

    def configure(self, pool: WorkerPool, name: str, value: Any) -> asyncio.Future[Any]:
        """Set one feature's settings; they reach the worker before any later call."""
        self.settings[name] = value
        self.generation += 1
        return self.send(pool, "configure", self._configuration(), True)

    def _configuration(self) -> dict[str, Any]:
        return self.stamp({"settings": dict(self.settings)})

    def send(self, pool: WorkerPool, op: str, payload: dict[str, Any],
             write: bool) -> asyncio.Future[Any]:
        """Queue a call; its future."""
        return self.put(pool, Call(op, payload, write))

    def put(self, pool: WorkerPool, call: Call) -> asyncio.Future[Any]:
        """Queue a call. Single creates and gets made until the loop's next turn leave
        together, in one message (a long run of them every ``MAX_BATCH`` calls, so the
        worker starts on the first while the page still makes the next)."""
        if self.target is not pool:
            self.flush()
            self.target = pool
        self.pending.append(call)
        if call.op not in BATCHED or len(self.pending) >= MAX_BATCH \
                or (self.sent == 0 and len(self.pending) == 1):
            # (With nothing on its way, a call need not wait for company: the worker is
            # idle, and the calls made after it in this turn go together next.)
            # A longer call goes alone (its caller hears as soon as it is done), after
            # whatever was queued before it: the worker receives calls in order.
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)
        return call.future

    def _scheduled_flush(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        pending = [c for c in self.pending if not c.future.done()]
        self.pending = []
        if pending and self.target is not None:
            self._dispatch(self.target, pending)

    def _dispatch(self, pool: WorkerPool, calls: list[Call], again: bool = False) -> None:
        # A write whose worker died may or may not have committed: never send it twice.
        retries = 0 if any(c.write for c in calls) else None
        try:
            if len(calls) == 1:
                call = calls[0]
                job = pool.submit(CHANNEL, call.op, call.payload, retries=retries)
                job.add_done_callback(lambda j: self._forward(pool, j, call, again))
                call.future.add_done_callback(
                    lambda f: job.cancel() if f.cancelled() else None)
            else:
                ops = [[c.op, c.payload] for c in calls]
                job = pool.submit(CHANNEL, "batch", {"ops": ops}, retries=retries)
                job.add_done_callback(lambda j: self._distribute(pool, j, calls, again))
        except Exception as exc:  # the pool refused: full queue, shut down, unsendable
            for call in calls:
                call.settle(None, _copy(exc))
            return
        self.sent += 1

    def _forward(self, pool: WorkerPool, job: asyncio.Future[Any], call: Call,
                 again: bool) -> None:
        self.sent -= 1
        if job.cancelled():
            call.cancel()
        elif isinstance(job.exception(), UnconfiguredError) and not again:
            self._resend(pool, [call])
        elif job.exception() is not None:
            call.settle(None, job.exception())
        else:
            call.settle(job.result(), None)

    def _distribute(self, pool: WorkerPool, job: asyncio.Future[Any], calls: list[Call],
                    again: bool) -> None:
        self.sent -= 1
        if job.cancelled() or job.exception() is not None:
            for call in calls:
                if job.cancelled():
                    call.cancel()
                else:
                    call.settle(None, _copy(job.exception()))  # type: ignore[arg-type]
            return
        refused = []
        for call, outcome in zip(calls, job.result(), strict=True):
            if outcome[0]:
                call.settle(outcome[1], None)
            elif outcome[1] == UnconfiguredError.code and not again:
                refused.append(call)
            else:
                call.settle(None, error_from_code(outcome[1], outcome[2], outcome[3]))
        if refused:
            self._resend(pool, refused)

    def _resend(self, pool: WorkerPool, calls: list[Call]) -> None:
        """Calls a worker refused for lacking the settings (nothing of them ran): the
        settings first, then the calls, once more."""
        for call in calls:
            call.payload = {**call.payload, "cfg": self.generation}
        self._dispatch(pool, [Call("configure", self._configuration(), True), *calls],
                       again=True)


def _copy(exc: BaseException) -> BaseException:
    """One exception per caller (raising a shared one would chain their tracebacks)."""
    if isinstance(exc, WorkerBridgeError) and type(exc) is not RemoteError:
        try:
            return type(exc)(str(exc))
        except Exception:
            return exc
    return exc



_STATES: weakref.WeakKeyDictionary[Any, StorageState] = weakref.WeakKeyDictionary()


def state_of(bridge: Any) -> StorageState:
    state = _STATES.get(bridge)
    if state is None:
        state = _STATES[bridge] = StorageState()
    return state
