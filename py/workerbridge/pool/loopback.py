"""An in-process transport: a Connection and a Runtime wired together on one event loop.

Used by the host unit tests (no browser) and usable for running handlers on the page's
own thread. Messages are delivered on later loop turns, as postMessage would deliver them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from workerbridge.runtime.dispatch import Runtime


class LoopbackTransport:
    """Delivers wire dicts between a Connection and a Runtime; never shares buffers."""

    isolated = False

    def __init__(self, on_message: Callable[[dict[str, Any]], None],
                 on_crash: Callable[[str], None] | None = None) -> None:
        self._loop = asyncio.get_event_loop()
        self._on_message = on_message
        self.alive = True
        self.sent = 0  # messages sent so far (a count: the transport keeps none of them)
        self.runtime = Runtime(self._from_runtime)

    def start(self) -> None:
        self.runtime.ready()

    def _from_runtime(self, message: dict[str, Any], transfer: Sequence[Any]) -> None:
        if self.alive:
            self._loop.call_soon(self._on_message, dict(message))

    def send(self, message: dict[str, Any], transfer: Sequence[Any], prompt: bool = False) -> None:
        if not self.alive:
            raise RuntimeError("the loopback transport was terminated")
        self.sent += 1
        self._loop.call_soon(self.runtime.handle, dict(message))

    def set_control(self, buffer: Any) -> None:
        pass

    def interrupt(self, request_id: int) -> None:
        pass

    def terminate(self) -> None:
        self.alive = False
