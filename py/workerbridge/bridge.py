"""``WorkerBridge``: the page's handle on a pool of workers, one namespace per channel.

``WorkerBridge.crypto.hash_file(...)`` (on the class) uses a shared default bridge that
boots its worker on first use; ``WorkerBridge(...)`` makes an independent one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar, overload

from workerbridge.channels.aead import NonceRegistry
from workerbridge.channels.base import Channel
from workerbridge.channels.compression import CompressionNamespace
from workerbridge.channels.crypto import CryptoNamespace
from workerbridge.channels.file import FileNamespace
from workerbridge.channels.network import NetworkNamespace
from workerbridge.core.envelope import Priority
from workerbridge.core.errors import InvalidInputError, ShutdownError
from workerbridge.core.platform import IN_PYODIDE, js_global
from workerbridge.core.shared import SharedCancellation
from workerbridge.jobs.engine import Jobs
from workerbridge.jobs.subscriptions import Subscriptions
from workerbridge.pool.connection import ProgressCallback, RetryPolicy
from workerbridge.pool.factories import Fallback
from workerbridge.pool.workerpool import PoolStats, Strategy, TransportFactory, WorkerPool
from workerbridge.storage.calls import state_of
from workerbridge.storage.storage import StorageNamespace

log = logging.getLogger("workerbridge")

N = TypeVar("N")


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
    """Workers running Pyodide, and the calls the page makes into them."""

    _default: ClassVar[WorkerBridge | None] = None

    crypto: namespace[CryptoNamespace] = namespace(CryptoNamespace)
    file: namespace[FileNamespace] = namespace(FileNamespace)
    compression: namespace[CompressionNamespace] = namespace(CompressionNamespace)
    network: namespace[NetworkNamespace] = namespace(NetworkNamespace)
    storage: namespace[StorageNamespace] = namespace(StorageNamespace)

    def __init__(
        self,
        *,
        workers: int | tuple[int, int] = 1,
        base_url: str | None = None,
        modules: Sequence[str] = (),
        packages: Sequence[str] = (),
        packages_base_url: str | None = None,
        timeout: float | None = None,
        boot_timeout: float = 120.0,
        fallback: Fallback | Literal["local"] = "auto",
        strategy: Strategy = "least-busy",
        max_queue: int = 10_000,
        retry: RetryPolicy | None = None,
        transport_factory: TransportFactory | None = None,
        remote: str | None = None,
        token: str | None = None,
        **pool_options: Any,
    ) -> None:
        """``workers``: pool size, or ``(min, max)`` for a pool that grows under a
        backlog and shrinks when idle (docs/bridge-and-pool.md); ``base_url``: the
        bundle's dist/ URL (found automatically in a bundle page); ``modules``: URLs of
        extra worker modules (.py);
        ``packages``: packages the workers load from the bundle before the modules
        (``packages_base_url``: from your own Pyodide distribution instead);
        ``timeout``: default per-call limit in seconds (None: none); ``fallback``:
        "auto" runs handlers on the page's thread if no worker can boot, "main" always
        does, "never" fails instead. ``remote``: the WebSocket URL of a fleet gateway
        (``ws://host/v1/ws``) that runs the calls and ``jobs`` instead, with ``token``;
        there ``fallback="local"`` runs calls in a local worker when the fleet cannot be
        reached (docs/fleet.md). Other options go to ``WorkerPool``."""
        self.nonces = NonceRegistry()  # every (key, nonce) this bridge encrypted with
        self._key_ids: Any = None  # a JS WeakMap: CryptoKey -> number
        self._jobs: Jobs | None = None
        self._subscriptions: Subscriptions | None = None
        self._next_key_id = 0
        self.remote = remote
        if remote is not None:
            self.pool = _fleet_pool(remote, token, fallback, modules, base_url, packages,
                                    packages_base_url, timeout, max_queue, retry,
                                    boot_timeout, transport_factory, pool_options)
            return
        if fallback == "local":
            raise InvalidInputError("fallback='local' is for a remote bridge (remote=...)")
        if isinstance(workers, tuple | list):
            if len(workers) != 2:
                raise InvalidInputError(f"workers=(min, max) takes two counts, not "
                                        f"{len(workers)}")
            pool_options.update(min_size=workers[0], max_size=workers[1])
        else:
            pool_options["size"] = workers
        self.pool = WorkerPool(
            transport_factory or tuple(modules), strategy=strategy,
            task_timeout=timeout, max_queue=max_queue, retry=retry, boot_timeout=boot_timeout,
            fallback=fallback, base_url=base_url, packages=packages,
            packages_base_url=packages_base_url, **pool_options)

    def key_id(self, key: Any) -> int:
        """A number naming a JS object (a CryptoKey) for this bridge's lifetime."""
        if self._key_ids is None:
            self._key_ids = js_global().WeakMap.new()
        found = self._key_ids.get(key)
        if isinstance(found, int):
            return found
        self._next_key_id += 1
        self._key_ids.set(key, self._next_key_id)
        return self._next_key_id

    @classmethod
    def default(cls) -> WorkerBridge:
        """The shared bridge behind ``WorkerBridge.<namespace>``; created on first use."""
        if cls._default is None or cls._default._closed:
            cls._default = cls()
        return cls._default

    @property
    def jobs(self) -> Jobs:
        """This bridge's durable job queues, in the default database (docs/jobs.md); on a
        remote bridge, the fleet's (``fleet.jobs.RemoteJobs``, the same calls)."""
        if self._jobs is None:
            if self.remote is not None:
                from workerbridge.fleet.jobs import RemoteJobs

                self._jobs = RemoteJobs(self)  # type: ignore[assignment]
            else:
                self._jobs = Jobs(self.pool)
        return self._jobs  # type: ignore[return-value]  # RemoteJobs: the same calls

    @property
    def subscriptions(self) -> Subscriptions:
        """Subscriptions to changes, across this origin's tabs (docs/pipelines.md)."""
        if self._subscriptions is None:
            self._subscriptions = Subscriptions()
        return self._subscriptions

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def _closed(self) -> bool:
        return self.pool.closed

    async def start(self) -> WorkerBridge:
        """Boot the workers; return once one is ready. Raises WorkerCrashedError if none can."""
        if self._closed:
            raise ShutdownError("this WorkerBridge was closed")
        await self.pool.start()
        return self

    async def close(self) -> None:
        """Reject pending calls with ShutdownError and terminate the workers; running jobs
        go back to their queues, their attempt not counted."""
        if self._jobs is not None:
            await self._jobs.close(timeout=0)
        if self._subscriptions is not None:
            self._subscriptions.close()
        await self.pool.terminate(force=True)
        storage_pool = state_of(self).pool  # storage's own worker, when the pool is larger
        if storage_pool is not None and storage_pool is not self.pool:
            await storage_pool.terminate(force=True)
        if type(self)._default is self:
            type(self)._default = None

    # --- calls -----------------------------------------------------------------------------

    @property
    def isolated(self) -> bool:
        """True when progress and cancel use SharedArrayBuffer + Atomics."""
        return self.pool.isolated

    @property
    def ready_info(self) -> dict[str, Any]:
        """What the first ready worker reported at boot (ops, isolation, boot time)."""
        infos = self.pool.ready_info()
        return infos[0] if infos else {}

    def stats(self) -> PoolStats:
        return self.pool.stats()

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
        priority: Priority | int = Priority.NORMAL,
        idempotent: bool = False,
        retries: int | None = None,
    ) -> Any:
        """Call ``channel.op`` in a worker with ``payload`` and return its result.

        ``timeout`` in seconds; ``idempotent=True`` lets a timed-out call be retried on
        another worker. Cancel the awaiting task, or ``cancel.cancel()``, to stop it.
        """
        return await self.pool.submit(
            channel, op, payload, transfer=transfer, timeout=timeout,
            on_progress=on_progress, cancel=cancel, priority=priority, idempotent=idempotent,
            retries=retries)

    def channel(self, name: str) -> Channel:
        """A namespace for a custom channel: ``await bridge.channel("images").thumb(x=1)``."""
        return Channel(self, name)


def _fleet_pool(remote: str, token: str | None, fallback: str, modules: Sequence[str],
                base_url: str | None, packages: Sequence[str], packages_base_url: str | None,
                timeout: float | None, max_queue: int, retry: RetryPolicy | None,
                boot_timeout: float, transport_factory: TransportFactory | None,
                options: dict[str, Any]) -> WorkerPool:
    """The pool of a remote bridge: one connection to the gateway, many calls in flight
    on it; with ``fallback="local"``, a local worker when the fleet cannot be reached."""
    from workerbridge.fleet.client import remote_factory
    from workerbridge.pool.factories import choose

    if fallback not in ("auto", "never", "local"):
        raise InvalidInputError(f"a remote bridge's fallback is 'local' or 'never', not "
                                f"{fallback!r}")
    if transport_factory is not None:
        raise InvalidInputError("remote= and transport_factory= cannot go together")
    for key in ("size", "min_size", "max_size"):
        options.pop(key, None)
    local: TransportFactory | None = None
    if fallback == "local":
        if IN_PYODIDE:
            local = choose(tuple(modules), base_url, "never", True, packages,
                           packages_base_url)[0]
        else:
            from workerbridge.pool.loopback import LoopbackTransport

            local = LoopbackTransport
    # A call is not sent twice over a new connection: it may have run on the fleet.
    return WorkerPool(remote_factory(remote, token), size=1, task_timeout=timeout,
                      max_queue=max_queue, retry=retry or RetryPolicy(max_retries=0),
                      boot_timeout=boot_timeout, fallback="never", fallback_factory=local,
                      fallback_where="in a local worker",
                      max_in_flight=options.pop("max_in_flight", 4096), **options)
