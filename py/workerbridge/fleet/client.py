"""The page's side of the fleet: a pool transport over one WebSocket to the gateway.

``WorkerBridge(remote="ws://host/v1/ws", token=...)`` makes its pool with
``remote_factory``: one "worker" that is the gateway's socket, so the pool's own machinery
(ids, timeouts, PROGRESS, CANCEL, typed errors, a lost connection settling every pending
call) serves remote calls unchanged. The socket is the browser's ``WebSocket`` on a page
and the ``websockets`` package under CPython.

Before a request leaves, its payload is made plain: JS buffers and typed arrays become
bytes, a Blob or File is read (up to the gateway's frame limit), other JS objects (a
CryptoKey …) are refused with ``InvalidTypeError``: they cannot leave the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from workerbridge.core.envelope import Error, encode
from workerbridge.core.errors import InvalidInputError, InvalidTypeError, WorkerBridgeError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.fleet.wire import decode_frame, encode_frame

log = logging.getLogger("workerbridge.fleet")

SUBPROTOCOL = "workerbridge.v1"
CONNECT_TIMEOUT = 10.0

OnMessage = Callable[[dict[str, Any]], None]
OnCrash = Callable[[str], None]


def remote_factory(url: str, token: str | None) -> Callable[[OnMessage, OnCrash], Any]:
    """A pool transport factory: each transport one connection to the gateway at ``url``."""
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise InvalidInputError("remote= is the gateway's WebSocket URL (ws:// or wss://)")
    if token is not None and (not isinstance(token, str) or not token.isprintable()
                              or " " in token or "," in token):
        raise InvalidInputError("token= is a string without spaces or commas")

    def make(on_message: OnMessage, on_crash: OnCrash) -> RemoteTransport:
        return RemoteTransport(url, token, on_message, on_crash)

    return make


class RemoteTransport:
    """One WebSocket to the gateway, speaking the pool's envelopes."""

    isolated = False

    def __init__(self, url: str, token: str | None, on_message: OnMessage,
                 on_crash: OnCrash) -> None:
        self.url = url
        self.token = token
        self._on_message = on_message
        self._on_crash = on_crash
        self.alive = True
        self.sent = 0
        self.max_frame: int | None = None
        self._outbox: asyncio.Queue[tuple[dict[str, Any], bool]] = asyncio.Queue()
        self._socket: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._ended = False

    # --- the Transport protocol -------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.ensure_future(self._connected()))

    def send(self, message: dict[str, Any], transfer: Sequence[Any], prompt: bool = False) -> None:
        if not self.alive:
            raise RuntimeError("the fleet connection was closed")
        self.sent += 1
        self._outbox.put_nowait((message, True))

    def set_control(self, buffer: Any) -> None:
        pass

    def interrupt(self, request_id: int) -> None:
        pass  # a CANCEL envelope goes to the gateway, which stops the job

    def terminate(self) -> None:
        self.alive = False
        self._ended = True
        for task in self._tasks:
            task.cancel()
        if self._socket is not None:
            with contextlib.suppress(Exception):
                self._socket.close()

    # --- the connection ---------------------------------------------------------------------

    def _crash(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self.alive = False
            self._on_crash(reason)

    def _deliver(self, frame: str | bytes) -> None:
        try:
            message = decode_frame(frame)
        except WorkerBridgeError as exc:
            log.warning("dropping a malformed frame from the gateway: %s", exc)
            return
        if isinstance(message, dict) and message.get("kind") == "ready":
            payload = message.get("payload")
            if isinstance(payload, dict) and isinstance(payload.get("max_frame"), int):
                self.max_frame = payload["max_frame"]
        self._on_message(message)

    async def _connected(self) -> None:
        try:
            if IN_PYODIDE:
                await self._run_browser()
            else:
                await self._run_host()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._crash(f"the fleet at {self.url} could not be reached ({type(exc).__name__})")

    async def _pump(self, send: Callable[[str | bytes], Any]) -> None:
        """Send queued messages in order, each made plain first."""
        while True:
            message, _ = await self._outbox.get()
            rid = message.get("id") if message.get("kind") == "request" else None
            try:
                if "payload" in message:
                    message = {**message, "payload": await plain(message["payload"],
                                                                 self.max_frame)}
                frame = encode_frame(message)
                if self.max_frame is not None and len(frame) > self.max_frame:
                    raise InvalidInputError(
                        f"the request is {len(frame) / 2**20:.1f} MB, over the fleet's "
                        f"{self.max_frame / 2**20:.1f} MB frame limit")
            except WorkerBridgeError as exc:
                if rid is not None:
                    self._on_message(encode(Error(rid, exc.code, str(exc),
                                                  type(exc).__name__)))
                continue
            except (TypeError, ValueError, RecursionError) as exc:
                if rid is not None:
                    self._on_message(encode(Error(rid, InvalidTypeError.code,
                                                  f"the payload cannot be sent to the fleet "
                                                  f"({type(exc).__name__})", "InvalidTypeError")))
                continue
            result = send(frame)
            if asyncio.iscoroutine(result):
                await result

    async def _run_host(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        socket = await asyncio.wait_for(connect(
            self.url, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers=headers, max_size=None, compression=None),
            CONNECT_TIMEOUT)
        self._socket = _HostSocket(socket)
        pump = asyncio.ensure_future(self._pump(socket.send))
        self._tasks.append(pump)
        try:
            async for frame in socket:
                self._deliver(frame)
            reason = f"the fleet closed the connection ({socket.close_code})"
        except ConnectionClosed as exc:
            reason = f"the fleet connection was lost ({exc})"
        finally:
            pump.cancel()
        self._crash(reason)

    async def _run_browser(self) -> None:
        import js
        from pyodide.ffi import create_proxy, to_js

        protocols = [SUBPROTOCOL] + ([f"bearer.{self.token}"] if self.token else [])
        socket = js.WebSocket.new(self.url, to_js(protocols))
        socket.binaryType = "arraybuffer"
        self._socket = socket
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_open(event: Any) -> None:
            if not opened.done():
                opened.set_result(None)

        def on_message(event: Any) -> None:
            data = event.data
            self._deliver(data if isinstance(data, str) else data.to_bytes())

        def on_close(event: Any) -> None:
            reason = f"the fleet connection closed ({event.code}{': ' if event.reason else ''}" \
                     f"{event.reason})"
            if not opened.done():
                opened.set_exception(ConnectionError(reason))
            self._crash(reason)

        proxies = [create_proxy(on_open), create_proxy(on_message), create_proxy(on_close)]
        socket.onopen, socket.onmessage, socket.onclose = proxies
        try:
            await asyncio.wait_for(opened, CONNECT_TIMEOUT)
        except (ConnectionError, TimeoutError):
            self._crash(f"the fleet at {self.url} could not be reached")
            return

        def send(frame: str | bytes) -> None:
            if socket.readyState != 1:
                return
            if isinstance(frame, str):
                socket.send(frame)
            else:
                socket.send(to_js(frame))

        await self._pump(send)


class _HostSocket:
    def __init__(self, socket: Any) -> None:
        self.socket = socket

    def close(self) -> None:
        self.closing = asyncio.ensure_future(self.socket.close())


async def plain(value: Any, limit: int | None = None) -> Any:
    """A payload with its JS values made plain Python for the fleet (see the module doc);
    a Blob larger than ``limit`` is refused before it is read."""
    if isinstance(value, dict):
        return {k: await plain(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [await plain(v, limit) for v in value]
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if not IN_PYODIDE:
        return value
    from pyodide.ffi import JsProxy

    if not isinstance(value, JsProxy):
        return value
    from workerbridge.core.platform import js_global, type_tag

    tag = type_tag(value)
    if tag == "[object ArrayBuffer]" or js_global().ArrayBuffer.isView(value):
        return bytes(value.to_bytes()) if tag == "[object ArrayBuffer]" \
            else bytes(js_global().Uint8Array.new(value.buffer, value.byteOffset,
                                                  value.byteLength).to_bytes())
    if tag in ("[object Blob]", "[object File]"):
        if limit is not None and int(value.size) > limit:
            raise InvalidInputError(f"a {int(value.size) / 2**20:.1f} MB {tag[8:-1]} is over "
                                    f"the fleet's {limit / 2**20:.1f} MB frame limit")
        return bytes((await value.arrayBuffer()).to_bytes())
    raise InvalidTypeError(f"a JS {tag[8:-1]} cannot be sent to the fleet: it stays in the "
                           "browser (pass bytes instead)")
