"""The page side of storage calls: short calls made in one turn leave in one message,
and each call is counted in the metrics (browser and host alike)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import RemoteError, WorkerBridgeError, error_from_code
from ._futures import PromptFuture
from ._futures import settle as _settle

if TYPE_CHECKING:
    from .pool import WorkerPool

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


Pending = tuple[str, dict[str, Any], asyncio.Future[Any], bool]  # op, payload, future, write


@dataclass(slots=True)
class StorageState:
    """What one bridge's storage remembers: the schema in use, listeners, metrics, and
    the calls made in this turn, not yet sent."""

    pool: WorkerPool | None = None
    database: str | None = None
    version: int = 0
    keys: dict[str, str] = field(default_factory=dict)  # collection -> key field
    listeners: dict[str, list[Callable[[dict[str, Any]], Any]]] = field(
        default_factory=lambda: {e: [] for e in EVENTS})
    stats: dict[str, OpStats] = field(default_factory=dict)
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    pending: list[Pending] = field(default_factory=list)
    target: WorkerPool | None = None  # where pending calls go
    scheduled: bool = False

    def send(self, pool: WorkerPool, op: str, payload: dict[str, Any],
             write: bool) -> asyncio.Future[Any]:
        """Queue a call. Single creates and gets made until the loop's next turn leave
        together, in one message (a long run of them every ``MAX_BATCH`` calls, so the
        worker starts on the first while the page still makes the next)."""
        future: asyncio.Future[Any] = PromptFuture()
        if self.target is not pool:
            self.flush()
            self.target = pool
        self.pending.append((op, payload, future, write))
        if op not in BATCHED or len(self.pending) >= MAX_BATCH:
            # A longer call goes alone (its caller hears as soon as it is done), after
            # whatever was queued before it: the worker receives calls in order.
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)
        return future

    def _scheduled_flush(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        pending = [p for p in self.pending if not p[2].done()]
        self.pending = []
        if pending and self.target is not None:
            _dispatch(self.target, pending)


def _dispatch(pool: WorkerPool, calls: list[Pending]) -> None:
    # A write whose worker died may or may not have committed: never send it twice.
    retries = 0 if any(c[3] for c in calls) else None
    try:
        if len(calls) == 1:
            op, payload, future, _ = calls[0]
            job = pool.submit(CHANNEL, op, payload, retries=retries)
            job.add_done_callback(lambda j: _forward(j, future))
            future.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
        else:
            ops = [[op, payload] for op, payload, _, _ in calls]
            job = pool.submit(CHANNEL, "batch", {"ops": ops}, retries=retries)
            job.add_done_callback(lambda j: _distribute(j, calls))
    except Exception as exc:  # the pool refused: full queue, shut down, unsendable payload
        for call in calls:
            _settle(call[2], None, _copy(exc))


def _forward(job: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    if job.cancelled():
        future.cancel()
    elif job.exception() is not None:
        _settle(future, None, job.exception())
    else:
        _settle(future, job.result(), None)


def _distribute(job: asyncio.Future[Any], calls: list[Pending]) -> None:
    if job.cancelled() or job.exception() is not None:
        for call in calls:
            if job.cancelled():
                call[2].cancel()
            else:
                _settle(call[2], None, _copy(job.exception()))  # type: ignore[arg-type]
        return
    for call, outcome in zip(calls, job.result(), strict=True):
        if outcome[0]:
            _settle(call[2], outcome[1], None)
        else:
            _settle(call[2], None, error_from_code(outcome[1], outcome[2], outcome[3]))


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
