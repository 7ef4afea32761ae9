"""The worker side: a registry of handlers and the loop that dispatches requests to them.

Handlers are plain async functions registered under a (channel, op) pair::

    @handler("images", "thumbnail")
    async def thumbnail(ctx: Context, payload: dict) -> bytes: ...

Only registered handlers run: a message names an operation, never code. Each request
gets a ``Context`` for progress, cancellation and transfer. A handler is stopped by
``asyncio.CancelledError`` raised at its next ``await`` (a CANCEL envelope), or — under
cross-origin isolation — in the middle of pure-Python work, through Pyodide's interrupt
buffer (see ``Runtime.on_interrupt``).

Pure logic: the platform is reached only through the ``post`` callable and the control
cells handed in.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

from workerbridge.core.envelope import (
    Cancel,
    DecodeError,
    Error,
    Progress,
    Ready,
    Request,
    decode,
    encode,
    response_wire,
    split_batch,
    usable_id,
)
from workerbridge.core.errors import (
    CancelledError,
    RemoteError,
    UnknownOperationError,
    WorkerBridgeError,
)
from workerbridge.core.shared import POLL_INTERVAL, Cells, SharedCancellation, SharedProgress

log = logging.getLogger("workerbridge.runtime")

Handler = Callable[["Context", Any], Awaitable[Any]]
Post = Callable[[dict[str, Any], Sequence[Any]], None]
F = TypeVar("F", bound=Handler)

_REGISTRY: dict[tuple[str, str], Handler] = {}

# Slot 0 of the control buffer is Pyodide's interrupt word; slot 1 names the request id the
# page wants stopped, so a late interrupt never stops the request that came after it.
CONTROL_SLOTS = 2
TARGET_SLOT = 1
INTERRUPT = 2  # SIGINT: the value Pyodide's interrupt word is set to

# Without isolation, how often a long handler lets CANCEL envelopes in, and for how long
# (seconds). Pyodide schedules delays above 2 ms with setTimeout, a real macrotask.
YIELD_EVERY = 0.03
YIELD_DELAY = 0.003


def handler(channel: str, op: str) -> Callable[[F], F]:
    """Register an async function as the handler of ``(channel, op)``."""

    def register(fn: F) -> F:
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError(f"handler {channel}.{op} must be an async function")
        _REGISTRY[(channel, op)] = fn
        return fn  # type: ignore[return-value]  # mypy widens F through the dict

    return register


def lookup(channel: str, op: str) -> Handler | None:
    """The handler registered for ``(channel, op)``, if any (a job names its handler)."""
    return _REGISTRY.get((channel, op))


def registered_ops() -> list[str]:
    return sorted(f"{c}.{o}" for c, o in _REGISTRY)


@dataclass(slots=True)
class RunState:
    task: asyncio.Task[Any] | None = None
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a handler run as a job knows of it (``ctx.job``)."""

    id: str
    queue: str
    attempt: int  # this run, counting from 1 (a run after a crash counts too)
    step: str | None = None


@dataclass(slots=True)
class Context:
    """What a handler gets besides its payload: progress, cancellation, transfer."""

    request_id: int
    channel: str
    op: str
    isolated: bool
    _runtime: Runtime
    _state: RunState
    _progress: SharedProgress | None = None
    _progress_messages: bool = False
    _token: SharedCancellation | None = None
    _transfer: list[Any] = field(default_factory=list)
    _last_sent: float = 0.0
    _last_yield: float = 0.0
    _total: int = 0
    job: JobInfo | None = None  # set when the request runs a durable job

    @property
    def cancelled(self) -> bool:
        token = self._token
        return self._state.cancelled or (token is not None and token.is_cancelled()) \
            or self._runtime.interrupt_pending(self.request_id)

    @property
    def wants_progress(self) -> bool:
        """Whether the caller listens for progress (worth streaming work to report it)."""
        return self._progress is not None or self._progress_messages

    async def install(self, *requirements: str) -> list[str]:
        """Install packages into this worker from the bundle's own index (micropip, never
        PyPI): ``await ctx.install("python-dateutil")``. Returns "name version" of each
        requirement installed; raises ``PackageNotFoundError`` if the index lacks one."""
        from workerbridge.runtime.packages import install

        return await install(requirements)

    def check_cancelled(self) -> None:
        """Raise ``CancelledError`` if the caller has cancelled this request."""
        if self.cancelled:
            raise CancelledError("cancelled by the caller")

    async def checkpoint(self) -> None:
        """Check for cancellation between chunks.

        With isolation the shared buffers are read directly. Without it a CANCEL envelope
        can only arrive while the worker's event loop runs, so every ``YIELD_EVERY``
        seconds we yield through a timer: a zero delay would go through Pyodide's
        MessageChannel scheduler, which Chromium runs ahead of the worker's own messages.
        """
        if not self.isolated:
            now = time.monotonic()
            if now - self._last_yield >= YIELD_EVERY:
                await asyncio.sleep(YIELD_DELAY)
                self._last_yield = time.monotonic()
        self.check_cancelled()

    def set_total(self, total: int) -> None:
        self._total = total
        self.progress(0, total)

    def progress(self, done: int, total: int | None = None, *, last: bool = False) -> None:
        """Report ``done`` of ``total`` units (bytes for file work); ``last``: the final
        report, sent even within the ~30 Hz limit on PROGRESS envelopes."""
        if total is not None:
            self._total = total
        if self._progress is not None:
            self._progress.set(done, self._total)
        elif self._progress_messages:
            now = time.monotonic()
            if last or now - self._last_sent >= POLL_INTERVAL:
                self._last_sent = now
                self._runtime.post(encode(Progress(self.request_id, done, self._total)), ())

    def transfer(self, obj: Any) -> Any:
        """Move ``obj`` (an ArrayBuffer) to the caller with the response instead of copying."""
        self._transfer.append(obj)
        return obj

    def hand_over(self, buffer: Any) -> Any:
        """Move ``buffer`` (an ArrayBuffer) to the caller as a Uint8Array over it, which the
        page keeps as a JS object (a bare ArrayBuffer arrives there as bytes): its channel
        gives bytes back for bytes, the buffer itself for a JS input (browser only)."""
        import js

        return js.Uint8Array.new(self.transfer(buffer))


class Runtime:
    """Dispatches envelopes to registered handlers and posts their answers."""

    def __init__(
        self,
        post: Post,
        *,
        control: Cells | None = None,
        isolated: bool = False,
        convert_payload: Callable[[Any], Any] = lambda p: p,
    ) -> None:
        self.post = post
        self.control = control
        self.isolated = isolated
        self._convert = convert_payload
        self._active: dict[int, RunState] = {}
        # An interrupt that came before its request: Python may run (and so take the
        # interrupt) while the REQUEST still waits behind other messages.
        self._interrupted_early: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.served = 0
        self.cancelled = 0

    def ready(self, **info: Any) -> None:
        payload = {"ops": registered_ops(), "isolated": self.isolated, **info}
        if self.control is not None:
            payload["control"] = self.control.buffer
        self.post(encode(Ready(payload)), ())

    def _error(self, rid: int | None, exc: BaseException) -> None:
        if isinstance(exc, RemoteError):  # from a call this handler made: keep its type
            code, message, kind = exc.code, str(exc), exc.remote_type or "RemoteError"
        elif isinstance(exc, WorkerBridgeError):
            code, message, kind = exc.code, str(exc), type(exc).__name__
        elif isinstance(exc, asyncio.CancelledError):
            code, message, kind = CancelledError.code, "cancelled by the caller", "CancelledError"
        else:
            # Foreign messages may quote payload data: only the type name leaves the worker.
            log.error("handler for request %s raised", rid, exc_info=exc)
            code, kind = "remote", type(exc).__name__
            message = f"the handler raised {kind}"
        self.post(encode(Error(rid, code, message, kind)), ())

    def handle(self, raw: object) -> None:
        """Process one incoming message. Never raises: problems become ERROR envelopes."""
        for item in split_batch(raw):
            self._handle_one(item)

    def _handle_one(self, raw: object) -> None:
        try:
            env = decode(raw)
        except DecodeError as exc:
            self.post(encode(Error(exc.request_id, exc.code, str(exc), "ProtocolError")), ())
            return
        if isinstance(env, Request):
            self._start(env)
        elif isinstance(env, Cancel):
            state = self._active.get(env.id)
            if state is not None:
                state.cancelled = True
                if state.task is not None:
                    state.task.cancel()
        else:
            message = f"a worker does not accept {type(env).__name__.upper()} envelopes"
            rid = usable_id(raw) if isinstance(raw, Mapping) else None
            self.post(encode(Error(rid, "protocol", message, "ProtocolError")), ())

    def _start(self, req: Request) -> None:
        fn = _REGISTRY.get((req.channel, req.op))
        if fn is None:
            name = f"{req.channel}.{req.op}"
            name = name if len(name) <= 80 else name[:77] + "..."  # names arrive from outside
            self._error(req.id, UnknownOperationError(f"no handler for {name}"))
            return
        if req.id in self._active:
            self._error(req.id, DecodeError(f"request id {req.id} is already running"))
            return
        state = RunState()
        ctx = Context(req.id, req.channel, req.op, self.isolated, self, state)
        if req.id == self._interrupted_early:  # cancelled before it arrived: never run it
            self._interrupted_early = None
            self._finish(req.id, ctx, None, asyncio.CancelledError())
            return
        try:
            if req.progress is True:
                ctx._progress_messages = True
            elif req.progress is not None:
                ctx._progress = SharedProgress.from_buffer(req.progress)
            if req.cancel is not None:
                ctx._token = SharedCancellation.from_buffer(req.cancel)
            payload = self._convert(req.payload)
        except Exception as exc:
            self._error(req.id, exc)
            return
        self._active[req.id] = state
        if self._interrupted_early == req.id:  # interrupted while its payload converted
            self._interrupted_early = None
            state.cancelled = True  # _call raises before the handler starts
        # The first step runs inside _eager_task: state.task is still None meanwhile.
        task = self._eager_task(self._serve(req.id, ctx, fn, payload))
        state.task = task
        if state.cancelled and not task.done():  # interrupted while its task was made
            task.cancel()
        if not task.done() and sys.version_info < (3, 12):  # a task that may never start
            task.add_done_callback(lambda _: self._unstarted(req.id, ctx, state))

    async def _serve(self, rid: int, ctx: Context, fn: Handler, payload: Any) -> None:
        """A handler's task, which posts the outcome itself: a done callback would post it
        a turn of the event loop later."""
        try:
            result = await _call(ctx, fn, payload)
        except Exception as exc:
            self._finish(rid, ctx, None, exc)
        except BaseException as exc:  # cancelled, or an interrupt: answered all the same
            self._finish(rid, ctx, None, exc)
            raise
        else:
            self._finish(rid, ctx, result, None)

    def _unstarted(self, rid: int, ctx: Context, state: RunState) -> None:
        """A task cancelled before its first step never ran ``_serve``: answer for it."""
        if self._active.get(rid) is state:
            self._finish(rid, ctx, None, asyncio.CancelledError())

    def _eager_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Start the handler now, so one that never awaits answers in the same turn."""
        if self._loop is None:
            self._loop = asyncio.get_event_loop()
        if sys.version_info >= (3, 12):
            return asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[arg-type]
        return self._loop.create_task(coro)  # type: ignore[arg-type]

    def _finish(self, rid: int, ctx: Context, result: Any, exc: BaseException | None) -> None:
        self._active.pop(rid, None)
        self.served += 1
        if exc is not None:
            if isinstance(exc, asyncio.CancelledError):
                self.cancelled += 1
            self._error(rid, exc)
            return
        try:
            self.post(response_wire(rid, result), ctx._transfer)
        except Exception as post_exc:
            self._error(rid, post_exc)

    def interrupt_pending(self, rid: int) -> bool:
        """Whether the page has asked to interrupt ``rid`` and Python has not yet noticed
        (work running in JS, not Python, reads this)."""
        cells = self.control
        return cells is not None and cells.load(0) == INTERRUPT \
            and cells.load(TARGET_SLOT) == rid

    def on_interrupt(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """SIGINT handler, fed by Pyodide's interrupt buffer.

        The page writes the id it wants stopped into the control buffer before raising
        the interrupt. If that request's handler is running Python right now, stop it
        here; if it is suspended on an await, cancel its task; if it has not arrived yet
        (its REQUEST waits behind other messages), it is answered as cancelled when it
        does.

        Python takes an interrupt at whatever call or loop check comes next, which may be
        in this runtime's own code around the handler rather than in the handler. A
        ``CancelledError`` raised there — as ``_serve`` starts, or as it enters ``_finish``
        to post the answer — escaped ``_serve``'s ``try`` and ended the task with no answer
        posted: the page's cancel was never acknowledged, and after its grace period the
        pool replaced a healthy worker. So the error is raised only inside the handler's
        own frames (below ``_call``, whose caller answers whatever it raises); anywhere
        else the task is cancelled instead, which takes effect at its next await, and
        ``_call`` checks the flag before the handler starts.
        """
        if self.control is None:
            return
        target = self.control.load(TARGET_SLOT)
        state = self._active.get(target)
        if state is None:
            self._interrupted_early = target  # unless it has finished already
            return
        state.cancelled = True
        task = state.task
        if task is None:
            # Its task is being made (_start): stop its handler if that is running its
            # first, eager step; else _call or _start sees the flag.
            if _inside_handler(frame if frame is not None else sys._getframe(1)):
                raise Interrupted()
            return
        try:
            current = asyncio.current_task()
        except RuntimeError:  # no running loop: Python was not inside any task
            current = None
        if task is current and _inside_handler(frame if frame is not None
                                               else sys._getframe(1)):
            raise Interrupted()
        task.cancel()

    def watch_unraisable(self) -> Callable[[], None]:
        """Re-arm an interrupt that Python swallowed; returns a function that undoes this.

        Python may take the interrupt inside a weakref callback or a ``__del__`` that the
        garbage collector runs in the middle of a handler (seen here in
        ``WeakSet._remove``). An exception raised there cannot propagate: Python reports
        it as unraisable and goes on, and a handler that never awaits would run on to the
        pool's grace period. So the interrupt is raised again, at Python's next check.
        """
        previous = sys.unraisablehook

        def hook(info: Any) -> None:
            if isinstance(info.exc_value, Interrupted) and self.control is not None:
                self.control.store(0, INTERRUPT)
                return
            previous(info)

        sys.unraisablehook = hook

        def undo() -> None:
            sys.unraisablehook = previous

        return undo


class Interrupted(asyncio.CancelledError):
    """What the interrupt raises in a running handler (a cancellation, recognisable when
    Python swallows it)."""


async def _call(ctx: Context, fn: Handler, payload: Any) -> Any:
    """The frame every handler runs below: an interrupt raises only beneath it."""
    if ctx._state.cancelled:  # interrupted before the handler started
        raise asyncio.CancelledError()
    return await fn(ctx, payload)


def _inside_handler(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs beneath ``_call`` (in a handler, not in the runtime)."""
    while frame is not None:
        if frame.f_code is _call.__code__:
            return True
        frame = frame.f_back
    return False


@handler("system", "echo")
async def _echo(ctx: Context, payload: Any) -> Any:
    """Return the payload unchanged: the round-trip probe."""
    return payload


@handler("system", "stats")
async def _stats(ctx: Context, payload: Any) -> dict[str, int]:
    """Counters of this worker's runtime (heartbeat and test probe)."""
    rt = ctx._runtime
    others = len(rt._active) - 1  # not counting this request
    return {"served": rt.served, "cancelled": rt.cancelled, "active": others}
