"""The page side of storage calls: short calls made in one turn leave in one message,
and each call is counted in the metrics (browser and host alike)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import RemoteError, UnconfiguredError, WorkerBridgeError, error_from_code
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
            self._dispatch(self.target, pending)

    def _dispatch(self, pool: WorkerPool, calls: list[Pending], again: bool = False) -> None:
        # A write whose worker died may or may not have committed: never send it twice.
        retries = 0 if any(c[3] for c in calls) else None
        try:
            if len(calls) == 1:
                op, payload, future, _ = calls[0]
                job = pool.submit(CHANNEL, op, payload, retries=retries)
                job.add_done_callback(lambda j: self._forward(pool, j, calls[0], again))
                future.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
            else:
                ops = [[op, payload] for op, payload, _, _ in calls]
                job = pool.submit(CHANNEL, "batch", {"ops": ops}, retries=retries)
                job.add_done_callback(lambda j: self._distribute(pool, j, calls, again))
        except Exception as exc:  # the pool refused: full queue, shut down, unsendable
            for call in calls:
                _settle(call[2], None, _copy(exc))

    def _forward(self, pool: WorkerPool, job: asyncio.Future[Any], call: Pending,
                 again: bool) -> None:
        future = call[2]
        if job.cancelled():
            future.cancel()
        elif isinstance(job.exception(), UnconfiguredError) and not again:
            self._resend(pool, [call])
        elif job.exception() is not None:
            _settle(future, None, job.exception())
        else:
            _settle(future, job.result(), None)

    def _distribute(self, pool: WorkerPool, job: asyncio.Future[Any], calls: list[Pending],
                    again: bool) -> None:
        if job.cancelled() or job.exception() is not None:
            for call in calls:
                if job.cancelled():
                    call[2].cancel()
                else:
                    _settle(call[2], None, _copy(job.exception()))  # type: ignore[arg-type]
            return
        refused = []
        for call, outcome in zip(calls, job.result(), strict=True):
            if outcome[0]:
                _settle(call[2], outcome[1], None)
            elif outcome[1] == UnconfiguredError.code and not again:
                refused.append(call)
            else:
                _settle(call[2], None, error_from_code(outcome[1], outcome[2], outcome[3]))
        if refused:
            self._resend(pool, refused)

    def _resend(self, pool: WorkerPool, calls: list[Pending]) -> None:
        """Calls a worker refused for lacking the settings (nothing of them ran): the
        settings first, then the calls, once more."""
        settled: asyncio.Future[Any] = PromptFuture()
        calls = [(op, {**payload, "cfg": self.generation}, future, write)
                 for op, payload, future, write in calls]
        self._dispatch(pool, [("configure", self._configuration(), settled, True), *calls],
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
