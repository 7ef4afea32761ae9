"""Request/response matching over one transport: ids, timeouts, progress, cancellation.

A ``Connection`` talks to one worker through an injected ``Transport`` (a real Worker in
the browser, ``LoopbackTransport`` on the host). Every request it sends is tracked by id
until it settles — on a response, an error, a timeout, a cancel, a crash (``fail_all``)
or ``destroy`` — so no caller is ever left waiting on a future nobody will resolve.

Pure logic: imports only the standard library and the layers above it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from workerbridge.core.envelope import (
    MAX_ID,
    Cancel,
    DecodeError,
    Error,
    Priority,
    Progress,
    Ready,
    Response,
    decode,
    encode,
    request_wire,
    split_batch,
)
from workerbridge.core.errors import (
    CancelledError,
    RequestTimeoutError,
    ShutdownError,
    WorkerBridgeError,
    WorkerCrashedError,
    error_from_code,
)
from workerbridge.core.futures import PromptFuture, delivering
from workerbridge.core.shared import (
    ByMessage,
    ProgressInfo,
    SharedCancellation,
    SharedProgress,
    Unsubscribe,
)

__all__ = [
    "Connection",
    "ConnectionStats",
    "ProgressCallback",
    "RetryPolicy",
    "Transport",
    "make_request",
]

log = logging.getLogger("workerbridge")

ProgressCallback = Callable[[ProgressInfo], Any]
OnDone = Callable[[Any, BaseException | None], None]  # (result, error): exactly one call


def settler(future: asyncio.Future[Any]) -> OnDone:
    """An ``on_done`` that settles ``future``: result, exception, or (plain) cancellation."""

    def on_done(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        elif type(error) is asyncio.CancelledError:
            future.cancel()
        else:
            future.set_exception(error)

    return on_done


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how soon a failed request is sent again (to another worker).

    Only failures that say nothing about the request itself are retried: the worker
    crashed under it, or — for operations declared idempotent — it timed out. A
    handler's own exception is never retried.
    """

    max_retries: int = 2
    base_delay: float = 0.05  # seconds before the first retry
    max_delay: float = 2.0
    jitter: float = 0.5  # each delay is scaled by a random factor in [1 - jitter, 1]

    def retryable(self, exc: BaseException, *, idempotent: bool) -> bool:
        if isinstance(exc, WorkerCrashedError):
            return True
        return idempotent and isinstance(exc, RequestTimeoutError)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): exponential, jittered."""
        raw = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(raw * (1 - self.jitter * rng()))


def make_request(
    rid: int,
    channel: str,
    op: str,
    payload: Any = None,
    *,
    priority: Priority = Priority.NORMAL,
    timeout: float | None = None,
    correlation: str | None = None,
) -> dict[str, Any]:
    """A REQUEST envelope in wire form (what ``Connection.request`` sends)."""
    return request_wire(rid, channel, op, payload, Priority(priority), timeout, correlation)


class Transport(Protocol):
    """What a Connection needs from the platform."""

    @property
    def isolated(self) -> bool:
        """True when SharedArrayBuffers reach the other side (progress/cancel without messages)."""
        ...

    def send(self, message: dict[str, Any], transfer: Sequence[Any], prompt: bool = False) -> None:
        """Post one wire message, moving the objects in ``transfer`` instead of copying them.
        ``prompt``: the other side has nothing else in hand, so post now rather than batch
        it with what else this turn sends (a hint; either way the order is kept)."""
        ...

    def interrupt(self, request_id: int) -> None:
        """Stop ``request_id`` now if it is running Python (the interrupt buffer), else no-op."""
        ...


@dataclass(slots=True)
class _Pending:
    on_done: OnDone
    started: float
    progress: SharedProgress | None = None
    on_progress: ProgressCallback | None = None
    cleanups: list[Unsubscribe] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    pending: int  # calls whose caller is still waiting
    in_flight: int  # requests the worker has not answered yet (includes cancelled ones)
    completed: int
    failed: int
    average_response_ms: float
    oldest_pending_ms: float


class Connection:
    """Sends requests to one worker and settles each caller's future exactly once."""

    def __init__(
        self,
        transport: Transport,
        *,
        default_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_ready: Callable[[Any], None] | None = None,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        """``on_settled`` is called whenever the worker answers a request (it has room)."""
        self.transport = transport
        self.default_timeout = default_timeout
        self._clock = clock
        self._on_ready = on_ready
        self._on_settled = on_settled
        self._cancel_sent: dict[int, float] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._in_flight: set[int] = set()
        self._completed = 0
        self._failed = 0
        self._total_response = 0.0
        self._closed: WorkerBridgeError | None = None

    # --- sending ---------------------------------------------------------------------------

    def _next_id(self) -> int:
        rid = next(self._ids)
        if rid > MAX_ID:
            self._ids = itertools.count(2)
            rid = 1
        return rid

    def start(
        self,
        channel: str,
        op: str,
        payload: Any = None,
        *,
        on_done: OnDone,
        transfer: Sequence[Any] = (),
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
        priority: Priority = Priority.NORMAL,
        correlation: str | None = None,
    ) -> int:
        """Send one request; ``on_done(result, error)`` is called exactly once, in the
        turn that settles it. Returns the request id. No task, no future: the fast path
        the pool uses. ``request()`` is the awaitable form."""
        if self._closed is not None:
            raise type(self._closed)(str(self._closed))
        if cancel is not None and cancel.is_cancelled():
            raise CancelledError("the cancel token was already cancelled")
        rid = self._next_id()
        entry = _Pending(on_done, self._clock())
        progress_field: Any = None
        if on_progress is not None:
            entry.on_progress = on_progress
            entry.progress = SharedProgress(shared=self.transport.isolated
                                            and not isinstance(on_progress, ByMessage))
            entry.cleanups.append(entry.progress.subscribe(on_progress))
            progress_field = entry.progress.buffer if entry.progress.is_shared else True
        if cancel is not None:
            def on_cancel(_: bool) -> None:
                self.cancel_request(rid, token=True)

            entry.cleanups.append(cancel.subscribe(on_cancel))
        timeout = self.default_timeout if timeout is None else timeout
        if timeout is not None:
            handle = asyncio.get_running_loop().call_later(timeout, self._expire, rid, timeout)
            entry.cleanups.append(handle.cancel)
        self._pending[rid] = entry
        message = request_wire(rid, channel, op, payload, priority, timeout, correlation,
                               progress_field, cancel.buffer if cancel is not None else None)
        try:
            self.transport.send(message, transfer, not self._in_flight)
        except BaseException:
            self._pending.pop(rid, None)
            for cleanup in entry.cleanups:
                cleanup()
            raise
        self._in_flight.add(rid)
        return rid

    async def request(
        self,
        channel: str,
        op: str,
        payload: Any = None,
        *,
        transfer: Sequence[Any] = (),
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
        priority: Priority = Priority.NORMAL,
        correlation: str | None = None,
    ) -> Any:
        """Send one request and wait for its result.

        ``timeout`` is in seconds (``None``: the connection's default, which may be no
        limit). Cancelling the awaiting task, or ``cancel.cancel()``, stops the work in
        the worker and raises ``asyncio.CancelledError`` / ``workerbridge.CancelledError``.
        """
        future: asyncio.Future[Any] = PromptFuture()
        rid = self.start(channel, op, payload, on_done=settler(future), transfer=transfer,
                         timeout=timeout, on_progress=on_progress, cancel=cancel,
                         priority=priority, correlation=correlation)
        try:
            return await future
        except asyncio.CancelledError:
            if rid in self._pending:  # our caller's task was cancelled, not the request
                self.cancel_request(rid)
            raise

    def _settle(self, rid: int, result: Any = None, error: BaseException | None = None) -> None:
        """The one exit of every request: clean up, count, and tell its caller."""
        entry = self._pending.pop(rid, None)
        if entry is None:
            return
        for cleanup in entry.cleanups:
            cleanup()
        if error is None:
            self._completed += 1
            self._total_response += self._clock() - entry.started
            if entry.on_progress is not None and entry.progress is not None:
                last = entry.progress.get()
                total = max(last.total, last.done)
                entry.on_progress(ProgressInfo(total, total, final=True))
        else:
            self._failed += 1
        entry.on_done(result, error)

    def _reject(self, rid: int, exc: BaseException) -> None:
        self._settle(rid, None, exc)

    def _expire(self, rid: int, timeout: float) -> None:
        if rid in self._pending:
            self._send_cancel(rid)
            self._reject(rid, RequestTimeoutError(f"no answer within {timeout:g} s"))

    def _send_cancel(self, rid: int) -> None:
        if rid not in self._in_flight:
            return
        self._cancel_sent.setdefault(rid, self._clock())
        self.transport.interrupt(rid)
        try:
            self.transport.send(encode(Cancel(rid)), (), True)
        except Exception:
            log.debug("could not send CANCEL for %d", rid, exc_info=True)

    def cancel_request(self, rid: int, *, token: bool = False) -> bool:
        """Stop request ``rid`` in the worker and reject its caller; False if not pending."""
        if rid not in self._pending:
            return False
        self._send_cancel(rid)
        if token:
            self._reject(rid, CancelledError("cancelled through its cancel token"))
        else:
            self._reject(rid, asyncio.CancelledError())
        return True

    def cancel_all(self) -> int:
        """Cancel every pending request; returns how many there were."""
        return sum(self.cancel_request(rid) for rid in list(self._pending))

    # --- receiving -------------------------------------------------------------------------

    def handle_message(self, raw: object) -> None:
        """Route one message (or each envelope of a BATCH) to the caller it answers."""
        with delivering():
            for item in split_batch(raw):
                self._handle_one(item)

    def _handle_one(self, raw: object) -> None:
        try:
            env = decode(raw)
        except DecodeError as exc:
            # Only a well-formed answer settles a call: a malformed message that names a
            # pending id is not that call's answer, and must not settle it.
            log.warning("dropping a malformed message from the worker: %s", exc)
            return
        if isinstance(env, Response):
            self._settle(env.id, env.payload)
            self._answered(env.id)  # after: on_settled sees the caller's slot freed
        elif isinstance(env, Error):
            if env.id is None:
                log.warning("worker reported an error: %.200s (%.40s)", env.message, env.code)
                return
            self._reject(env.id, error_from_code(env.code, env.message, env.error_type))
            self._answered(env.id)
        elif isinstance(env, Progress):
            entry = self._pending.get(env.id)
            if entry is not None and entry.progress is not None and not entry.progress.is_shared:
                entry.progress.set(env.done, env.total)
        elif isinstance(env, Ready):
            if self._on_ready is not None:
                self._on_ready(env.payload)
        else:
            log.warning("ignoring a %s envelope sent by the worker", type(env).__name__)

    def _answered(self, rid: int) -> None:
        self._cancel_sent.pop(rid, None)
        if rid in self._in_flight:
            self._in_flight.discard(rid)
            if self._on_settled is not None:
                self._on_settled()

    # --- state -----------------------------------------------------------------------------

    def overdue_cancels(self, grace: float) -> list[int]:
        """Ids cancelled more than ``grace`` seconds ago that the worker never acknowledged."""
        limit = self._clock() - grace
        return [rid for rid, at in self._cancel_sent.items() if at <= limit]

    @property
    def pending_ids(self) -> frozenset[int]:
        return frozenset(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def stats(self) -> ConnectionStats:
        now = self._clock()
        oldest = min((e.started for e in self._pending.values()), default=now)
        avg = self._total_response / self._completed if self._completed else 0.0
        return ConnectionStats(len(self._pending), len(self._in_flight), self._completed,
                               self._failed, avg * 1000, (now - oldest) * 1000)

    def fail_all(self, exc: WorkerBridgeError) -> None:
        """Reject every pending call with ``exc`` (the worker died); the connection stays usable."""
        self._in_flight.clear()
        self._cancel_sent.clear()
        for rid in list(self._pending):
            self._reject(rid, type(exc)(str(exc)))
        if self._on_settled is not None:
            self._on_settled()

    def destroy(self, exc: WorkerBridgeError | None = None) -> None:
        """Reject everything pending and refuse new requests."""
        self._closed = exc or ShutdownError("the connection was closed")
        self.fail_all(self._closed)
