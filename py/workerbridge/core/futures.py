"""Futures whose callers wake up in the turn that settles them.

asyncio wakes a task that awaits a future through ``loop.call_soon``. Pyodide's loop makes
every ``call_soon`` a browser task of its own (a MessageChannel message), so on the page a
worker's answer would cost two trips through the browser's scheduler: the worker's message,
then the wake-up — measured here as about half of a small round trip.

The futures made here queue their done-callbacks instead, and ``delivering()`` runs the
queue when the transport has finished handing over the worker's message — still inside
that message's own turn, with nothing else of ours on the stack, which is exactly where an
event loop would run them. A future settled anywhere else (a timeout, a local failure)
falls back to ``loop.call_soon``. Callbacks keep their order; each runs once.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from asyncio import futures
from collections import deque
from collections.abc import Callable
from contextvars import Context
from typing import Any


class _Wakeups:
    """The futures' view of their loop: it only schedules callbacks (and reports errors)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: deque[asyncio.Handle] = deque()
        self.holding = 0  # > 0 while a message is being delivered or the queue runs
        self.scheduled = False

    def get_debug(self) -> bool:
        return self.loop.get_debug()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.loop.call_exception_handler(context)

    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self.loop, context=context)
        self.ready.append(handle)
        if not self.holding and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._run_scheduled)
        return handle

    def _run_scheduled(self) -> None:
        self.scheduled = False
        self.run()

    def run(self) -> None:
        self.holding += 1
        try:
            ready = self.ready
            while ready:
                handle = ready.popleft()
                if not handle.cancelled():
                    handle._run()  # reports its own exceptions to the loop
        finally:
            self.holding -= 1

    def release(self) -> None:
        """End of a delivery: run what it woke now if we are at the top of the stack
        (no task running on the loop), else leave it to the loop."""
        if not self.ready or self.scheduled:
            return
        try:
            here = asyncio.get_running_loop() is self.loop and asyncio.current_task() is None
        except RuntimeError:  # no running loop: this is not the loop's thread or turn
            here = False
        if here:
            self.run()
        else:
            self.scheduled = True
            self.loop.call_soon(self._run_scheduled)


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wakeups] = (
    weakref.WeakKeyDictionary())
_last: _Wakeups | None = None  # a page has one loop: skip the dict almost always


def _wakeups(loop: asyncio.AbstractEventLoop) -> _Wakeups:
    global _last
    w = _last
    if w is not None and w.loop is loop:
        return w
    w = _BY_LOOP.get(loop)
    if w is None:
        w = _BY_LOOP[loop] = _Wakeups(loop)
    _last = w
    return w


class PromptFuture(futures._PyFuture):  # type: ignore[name-defined,misc]
    """An ``asyncio.Future`` of the running loop whose callbacks run via ``_Wakeups``."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._real_loop = loop or asyncio.get_running_loop()
        super().__init__(loop=_wakeups(self._real_loop))

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._real_loop


class delivering:
    """``with delivering():`` holds wake-ups while a received message is handed out and
    runs them at the end. (A class: cheaper than a generator on the per-message path.)"""

    __slots__ = ("_w",)

    def __enter__(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        self._w = w = _wakeups(loop)
        w.holding += 1

    def __exit__(self, *exc: object) -> None:
        w = self._w
        w.holding -= 1
        if not w.holding:
            w.release()


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Give ``future`` its result or exception, unless it is already done."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# --- JS promises -----------------------------------------------------------------------------

class JsRejection(Exception):
    """A JS promise's rejection; ``message`` is the JS error's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_THEN_JS = """
return (settle) => (key, fn, ...args) => {
  let promise;
  try {
    promise = Promise.resolve(fn(...args));
  } catch (error) {
    promise = Promise.reject(error);
  }
  promise.then(
    (value) => settle(key, true, value),
    (error) => settle(key, false, String((error && error.message) || error)));
};
"""
_watch: Any = None
_waiting: dict[int, asyncio.Future[Any]] = {}
_keys = itertools.count()


def _settled(key: int, ok: bool, value: Any) -> None:
    future = _waiting.pop(key, None)
    if future is not None:
        with delivering():
            settle(future, value if ok else None, None if ok else JsRejection(str(value)))


def call_js(fn: Any, *args: Any) -> asyncio.Future[Any]:
    """A future of what the JS function ``fn(*args)`` returns or resolves to (browser
    only). A promise from a JS call made in Python wakes its awaiting task a turn of the
    event loop after it settles; this future wakes it in the promise's own reaction, and
    the promise never crosses into Python. A throw or rejection raises ``JsRejection``."""
    global _watch
    if _watch is None:
        import js
        from pyodide.ffi import create_proxy

        _watch = js.Function.new(_THEN_JS)()(create_proxy(_settled))
    future = PromptFuture()
    key = next(_keys)
    _waiting[key] = future
    _watch(key, fn, *args)
    return future
