"""``WorkerBridge``: the page's handle on a worker, with one namespace per channel.

``WorkerBridge.crypto.hash_file(...)`` (on the class) uses a shared default bridge that
boots its worker on first use; ``WorkerBridge(...)`` makes an independent one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, overload

from ._envelope import Priority
from ._errors import ShutdownError, WorkerCrashedError
from ._namespaces import CryptoNamespace
from ._platform import IN_PYODIDE
from ._protocol import Connection, ConnectionStats, ProgressCallback
from ._shared import SharedCancellation

log = logging.getLogger("workerbridge")

N = TypeVar("N")


class BridgeTransport(Protocol):
    alive: bool

    @property
    def isolated(self) -> bool: ...
    def send(self, message: dict[str, Any], transfer: Sequence[Any]) -> None: ...
    def interrupt(self, request_id: int) -> None: ...
    def set_control(self, buffer: Any) -> None: ...
    def terminate(self) -> None: ...


TransportFactory = Callable[
    [Callable[[dict[str, Any]], None], Callable[[str], None]], BridgeTransport
]


class namespace(Generic[N]):
    """Class attribute -> the default bridge's namespace; instance attribute -> its own."""

    def __init__(self, cls: Callable[[WorkerBridge], N]) -> None:
        self._cls = cls

    @overload
    def __get__(self, obj: None, owner: type[WorkerBridge]) -> N: ...
    @overload
    def __get__(self, obj: WorkerBridge, owner: type[WorkerBridge]) -> N: ...
    def __get__(self, obj: WorkerBridge | None, owner: type[WorkerBridge]) -> N:
        return self._cls(obj if obj is not None else owner.default())


class WorkerBridge:
    """A worker running Pyodide, and the calls the page makes into it."""

    _default: ClassVar[WorkerBridge | None] = None

    def __init__(
        self,
        *,
        base_url: str | None = None,
        modules: Sequence[str] = (),
        timeout: float | None = None,
        boot_timeout: float = 120.0,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        """``base_url``: the bundle's dist/ URL (found automatically in a bundle page);
        ``modules``: URLs of extra worker modules (.py) whose handlers the worker loads;
        ``timeout``: default per-call limit in seconds (None: no limit);
        ``boot_timeout``: seconds a worker may take to become ready."""
        self._base_url = base_url
        self._modules = tuple(modules)
        self._timeout = timeout
        self._boot_timeout = boot_timeout
        self._factory = transport_factory
        self._transport: BridgeTransport | None = None
        self._connection: Connection | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self.ready_info: dict[str, Any] = {}

    @classmethod
    def default(cls) -> WorkerBridge:
        """The shared bridge behind ``WorkerBridge.<namespace>``; created on first use."""
        if cls._default is None or cls._default._closed:
            cls._default = cls()
        return cls._default

    # --- lifecycle -------------------------------------------------------------------------

    def _make_transport(self) -> BridgeTransport:
        if self._factory is not None:
            return self._factory(self._on_message, self._on_crash)
        if not IN_PYODIDE:
            raise RuntimeError("WorkerBridge needs a browser; on the host pass transport_factory")
        from ._webworker import WORKER_SCRIPT, WorkerTransport, bundle_base, resolve

        base = resolve(self._base_url) if self._base_url else bundle_base()
        modules = [resolve(m) for m in self._modules]
        return WorkerTransport(resolve(WORKER_SCRIPT, base), on_message=self._on_message,
                               on_crash=self._on_crash, modules=modules)

    async def start(self) -> WorkerBridge:
        """Boot the worker (once) and wait for its READY; raise WorkerCrashedError on failure."""
        if self._closed:
            raise ShutdownError("this WorkerBridge was closed")
        if self._transport is not None and self._transport.alive and self._ready is not None:
            await self._ready
            return self
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._boot())
        await asyncio.shield(self._starting)
        return self

    async def _boot(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        transport = self._make_transport()
        self._transport = transport
        self._connection = Connection(transport, default_timeout=self._timeout,
                                      on_ready=self._on_ready)
        start = getattr(transport, "start", None)
        if start is not None:
            start()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self._boot_timeout)
        except TimeoutError:
            transport.terminate()
            raise WorkerCrashedError(
                f"the worker did not become ready within {self._boot_timeout:g} s") from None
        except WorkerCrashedError:
            transport.terminate()
            raise

    def _on_ready(self, info: Any) -> None:
        self.ready_info = dict(info) if isinstance(info, dict) else {}
        if self._transport is not None:
            self._transport.set_control(self.ready_info.get("control"))
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(self.ready_info)

    def _on_message(self, raw: dict[str, Any]) -> None:
        if (self._ready is not None and not self._ready.done() and isinstance(raw, dict)
                and raw.get("kind") == "error" and raw.get("id") is None):
            self._on_crash(str(raw.get("message", "worker failed to boot")))
            return
        if self._connection is not None:
            self._connection.handle_message(raw)

    def _on_crash(self, reason: str) -> None:
        log.error("worker crashed: %s", reason)
        error = WorkerCrashedError(f"the worker crashed: {reason}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerCrashedError(f"the worker failed to boot: {reason}"))
        if self._transport is not None:
            self._transport.terminate()
        if self._connection is not None:
            self._connection.fail_all(error)

    async def close(self) -> None:
        """Reject pending calls with ShutdownError and terminate the worker."""
        self._closed = True
        if self._connection is not None:
            self._connection.destroy(ShutdownError("the WorkerBridge was closed"))
        if self._transport is not None:
            self._transport.terminate()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ShutdownError("the WorkerBridge was closed"))
            self._ready.exception()  # retrieved: nobody else may be waiting
        if type(self)._default is self:
            type(self)._default = None

    # --- calls -----------------------------------------------------------------------------

    @property
    def isolated(self) -> bool:
        """True when progress and cancel use SharedArrayBuffer + Atomics."""
        return self._transport is not None and self._transport.isolated

    @property
    def connection(self) -> Connection | None:
        return self._connection

    def stats(self) -> ConnectionStats | None:
        return self._connection.stats() if self._connection is not None else None

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
    ) -> Any:
        """Call ``channel.op`` in the worker with ``payload``; see ``Connection.request``."""
        ready = self._ready
        if ready is None or not ready.done() or ready.exception() is not None \
                or self._transport is None or not self._transport.alive:
            await self.start()
        assert self._connection is not None
        return await self._connection.request(
            channel, op, payload, transfer=transfer, timeout=timeout,
            on_progress=on_progress, cancel=cancel, priority=priority)

    crypto: namespace[CryptoNamespace] = namespace(CryptoNamespace)
