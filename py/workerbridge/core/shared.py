"""Shared state between the page and its workers: progress, cancellation, counters, flags.

Under cross-origin isolation each object lives in a SharedArrayBuffer and every access is
an ``Atomics`` operation, so the page and any number of workers see one value without a
message. ``obj.buffer`` is that SharedArrayBuffer: send it to a worker and rebuild the
object there with ``from_buffer``. Without isolation (no COOP/COEP) the same classes keep
their state in plain Python; progress and cancellation then travel as envelopes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from workerbridge.core.errors import InvalidInputError
from workerbridge.core.platform import (
    IN_PYODIDE,
    big_atomics,
    cross_origin_isolated,
    in_worker,
    js_global,
)

__all__ = [
    "ProgressInfo",
    "SharedCancellation",
    "SharedCounter",
    "SharedFlag",
    "SharedProgress",
    "Unsubscribe",
]

Unsubscribe = Callable[[], None]
POLL_INTERVAL = 1 / 30  # seconds; progress callbacks fire at most ~30 times a second


class Cells(Protocol):
    buffer: Any

    def load(self, i: int) -> int: ...
    def store(self, i: int, value: int) -> None: ...
    def add(self, i: int, delta: int) -> int: ...
    def cas(self, i: int, expected: int, value: int) -> int: ...
    def wait(self, i: int, value: int, timeout: float | None) -> bool: ...
    def notify(self, i: int) -> None: ...


class LocalCells:
    """Plain-Python cells: the fallback when SharedArrayBuffer is unavailable."""

    buffer = None

    def __init__(self, n: int) -> None:
        self._v = [0] * n

    def load(self, i: int) -> int:
        return self._v[i]

    def store(self, i: int, value: int) -> None:
        self._v[i] = value

    def add(self, i: int, delta: int) -> int:
        old = self._v[i]
        self._v[i] = old + delta
        return old

    def cas(self, i: int, expected: int, value: int) -> int:
        old = self._v[i]
        if old == expected:
            self._v[i] = value
        return old

    def wait(self, i: int, value: int, timeout: float | None) -> bool:
        # Nothing else can change a local cell while this thread waits.
        return self._v[i] != value

    def notify(self, i: int) -> None:
        pass


class Int32Cells:
    """Int32 cells over a SharedArrayBuffer; every access is an Atomics operation."""

    def __init__(self, buffer: Any, n: int) -> None:
        g = js_global()
        self.buffer = buffer
        self._a = g.Int32Array.new(buffer, 0, n)
        self._atomics = g.Atomics

    def load(self, i: int) -> int:
        return int(self._atomics.load(self._a, i))

    def store(self, i: int, value: int) -> None:
        self._atomics.store(self._a, i, value)

    def add(self, i: int, delta: int) -> int:
        return int(self._atomics.add(self._a, i, delta))

    def cas(self, i: int, expected: int, value: int) -> int:
        return int(self._atomics.compareExchange(self._a, i, expected, value))

    def wait(self, i: int, value: int, timeout: float | None) -> bool:
        """Block while cell i holds value; True if woken or changed. Workers only."""
        if not in_worker():
            # Atomics.wait is forbidden on the page's thread, and spinning would freeze the
            # page just the same: there, report the current state without waiting.
            return self.load(i) != value
        ms = float("inf") if timeout is None else max(0.0, timeout * 1000)
        return str(self._atomics.wait(self._a, i, value, ms)) != "timed-out"

    def notify(self, i: int) -> None:
        self._atomics.notify(self._a, i)


class Int64Cells(Int32Cells):
    """BigInt64 cells, for byte counts beyond 2**31."""

    def __init__(self, buffer: Any, n: int) -> None:
        g = js_global()
        self.buffer = buffer
        self._a = g.BigInt64Array.new(buffer, 0, n)
        self._big = big_atomics()
        self._atomics = g.Atomics

    def load(self, i: int) -> int:
        return int(self._big.load(self._a, i))

    def store(self, i: int, value: int) -> None:
        self._big.store(self._a, i, value)

    def add(self, i: int, delta: int) -> int:
        return int(self._big.add(self._a, i, delta))

    def cas(self, i: int, expected: int, value: int) -> int:
        return int(self._big.cas(self._a, i, expected, value))


def _cells(n: int, wide: bool, buffer: Any, shared: bool | None) -> Cells:
    if buffer is not None:
        return Int64Cells(buffer, n) if wide else Int32Cells(buffer, n)
    if shared is None:
        shared = IN_PYODIDE and cross_origin_isolated()
    if not shared:
        return LocalCells(n)
    buf = js_global().SharedArrayBuffer.new(n * (8 if wide else 4))
    return Int64Cells(buf, n) if wide else Int32Cells(buf, n)


class _SharedBase:
    _N = 1
    _WIDE = False

    def __init__(self, *, buffer: Any = None, shared: bool | None = None) -> None:
        """``shared=None`` uses a SharedArrayBuffer exactly when the page is isolated."""
        self._cells = _cells(self._N, self._WIDE, buffer, shared)
        self._subscribers: list[Callable[[Any], None]] = []

    @property
    def buffer(self) -> Any:
        """The SharedArrayBuffer behind this object, or None in the fallback."""
        return self._cells.buffer

    @property
    def is_shared(self) -> bool:
        return self._cells.buffer is not None

    @classmethod
    def from_buffer(cls, buffer: Any) -> Any:
        """Rebuild the object over a SharedArrayBuffer received from another thread."""
        return cls(buffer=buffer)

    def _subscribe(
        self, callback: Callable[[Any], None], snapshot: Callable[[], Any]
    ) -> Unsubscribe:
        self._subscribers.append(callback)
        poller: asyncio.Task[None] | None = None
        if self.is_shared:
            # Another thread may write the buffer; nothing tells us, so look at ~30 Hz.
            async def poll() -> None:
                last = snapshot()
                while True:
                    await asyncio.sleep(POLL_INTERVAL)
                    now = snapshot()
                    if now != last:
                        last = now
                        callback(now)

            poller = asyncio.ensure_future(poll())

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)
            if poller is not None:
                poller.cancel()

        return unsubscribe

    def _changed(self, value: Any) -> None:
        if not self.is_shared:
            for cb in list(self._subscribers):
                cb(value)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class ProgressInfo:
    """A progress snapshot: ``done`` and ``total`` in bytes (or items), ``percent`` 0–100."""

    done: int
    total: int
    final: bool = False  # the last report of a finished call: percent is 100

    @property
    def percent(self) -> float:
        if self.final:
            return 100.0
        if self.total <= 0:
            return 0.0
        return min(100.0, 100.0 * self.done / self.total)


class ByMessage:
    """An ``on_progress`` callback that takes its reports as messages from the worker,
    not through a SharedArrayBuffer the page polls ~30 times a second: for many calls at
    once that seldom report (durable jobs), where a buffer and a poller per call cost
    more than the call."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[ProgressInfo], None]) -> None:
        self.callback = callback

    def __call__(self, info: ProgressInfo) -> None:
        self.callback(info)


class SharedProgress(_SharedBase):
    """Done/total counters that a worker writes and the page reads without messages."""

    _N = 2
    _WIDE = True

    def __init__(self, total: int = 0, *, buffer: Any = None,
                 shared: bool | None = None) -> None:
        """``total``: the units of work to be done (bytes, items); ``buffer``: wrap another
        thread's SharedArrayBuffer instead (its values are kept)."""
        super().__init__(buffer=buffer, shared=shared)
        if buffer is None and total:
            self._cells.store(1, _count(total, "total"))

    def set_total(self, total: int) -> None:
        self._cells.store(1, total)
        self._changed(self.get())

    def increment(self, delta: int = 1) -> int:
        done = self._cells.add(0, delta) + delta
        self._changed(self.get())
        return done

    def set(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self._cells.store(1, total)
        self._cells.store(0, done)
        self._changed(self.get())

    def get(self) -> ProgressInfo:
        return ProgressInfo(self._cells.load(0), self._cells.load(1))

    def percent(self) -> float:
        return self.get().percent

    def reset(self) -> None:
        self.set(0, 0)

    def subscribe(self, callback: Callable[[ProgressInfo], None]) -> Unsubscribe:
        """Call ``callback(ProgressInfo)`` on change, at most ~30 times a second."""
        return self._subscribe(callback, self.get)


class SharedCancellation(_SharedBase):
    """A cancel token: pass it as ``cancel=`` to any call, then ``.cancel()`` it."""

    def cancel(self) -> None:
        if self._cells.cas(0, 0, 1) == 0:
            self._cells.notify(0)
            for cb in list(self._subscribers):
                cb(True)

    def is_cancelled(self) -> bool:
        return self._cells.load(0) != 0

    def reset(self) -> None:
        self._cells.store(0, 0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; True if cancelled.

        Workers only: on the page's thread it returns the current state at once."""
        if not self.is_cancelled():
            self._cells.wait(0, 0, timeout)
        return self.is_cancelled()

    def subscribe(self, callback: Callable[[bool], None]) -> Unsubscribe:
        """Call ``callback(True)`` once when cancelled from this thread (or seen by polling)."""
        return self._subscribe(callback, self.is_cancelled)


class SharedCounter(_SharedBase):
    """A 32-bit signed integer that any thread may change atomically."""

    def __init__(self, initial: int = 0, *, buffer: Any = None,
                 shared: bool | None = None) -> None:
        """``initial``: the starting value; ``buffer``: wrap another thread's
        SharedArrayBuffer instead (its value is kept)."""
        super().__init__(buffer=buffer, shared=shared)
        if buffer is None and initial:
            if isinstance(initial, bool) or not isinstance(initial, int) \
                    or not -2**31 <= initial < 2**31:
                raise InvalidInputError("initial must be a 32-bit signed integer")
            self._cells.store(0, initial)

    def increment(self, delta: int = 1) -> int:
        return self._cells.add(0, delta) + delta

    def decrement(self, delta: int = 1) -> int:
        return self._cells.add(0, -delta) - delta

    def get(self) -> int:
        return self._cells.load(0)

    def set(self, value: int) -> None:
        self._cells.store(0, value)

    def compare_and_swap(self, expected: int, value: int) -> bool:
        """Set to ``value`` if it holds ``expected``; True if it did."""
        return self._cells.cas(0, expected, value) == expected


class SharedFlag(_SharedBase):
    """A boolean that threads can set, clear and wait on."""

    def __init__(self, initial: bool = False, *, buffer: Any = None,
                 shared: bool | None = None) -> None:
        """``initial``: whether the flag starts set; ``buffer``: wrap another thread's
        SharedArrayBuffer instead (its state is kept)."""
        super().__init__(buffer=buffer, shared=shared)
        if buffer is None and initial:
            self._cells.store(0, 1)

    def set(self) -> None:
        self._cells.store(0, 1)
        self._cells.notify(0)

    def clear(self) -> None:
        self._cells.store(0, 0)
        self._cells.notify(0)

    def is_set(self) -> bool:
        return self._cells.load(0) != 0

    def toggle(self) -> bool:
        while True:
            old = self._cells.load(0)
            if self._cells.cas(0, old, 0 if old else 1) == old:
                self._cells.notify(0)
                return not old

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds pass; True if set.

        Workers only: on the page's thread it returns the current state at once."""
        if not self.is_set():
            self._cells.wait(0, 0, timeout)
        return self.is_set()
