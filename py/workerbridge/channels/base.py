"""What every page-side namespace is built on: the ``Requester`` it makes its calls
through (a ``WorkerBridge``, or anything that offers the same few things) and the
``Namespace`` base class. ``Channel`` calls any channel's operations by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from workerbridge.channels.aead import NonceRegistry
from workerbridge.core.envelope import Priority
from workerbridge.core.shared import SharedCancellation
from workerbridge.pool.connection import ProgressCallback

if TYPE_CHECKING:
    from workerbridge.pool.workerpool import WorkerPool


class Requester(Protocol):
    """Something that can make a request, and the services namespaces share."""

    @property
    def pool(self) -> WorkerPool:
        """The pool the requests run on (storage starts a pool of its own beside it)."""
        ...

    @property
    def nonces(self) -> NonceRegistry:
        """Every (key, nonce) pair encrypted with, so none is used twice."""
        ...

    def key_id(self, key: Any) -> int:
        """A number naming a JS object (a CryptoKey) for the requester's lifetime."""
        ...

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
        """Run ``op`` of ``channel`` in a worker and return its result."""
        ...


class Namespace:
    """A channel's page half: its methods check their arguments, then make requests."""

    channel = ""

    def __init__(self, bridge: Requester) -> None:
        self._bridge = bridge


class Channel(Namespace):
    """Calls into a custom channel: ``ns.op(**payload)`` sends ``payload`` to ``op``."""

    def __init__(self, bridge: Requester, name: str) -> None:
        super().__init__(bridge)
        self.channel = name

    def __getattr__(self, op: str) -> Any:
        if op.startswith("_"):
            raise AttributeError(op)

        async def call(**payload: Any) -> Any:
            return await self._bridge.request(self.channel, op, payload)

        call.__name__ = op
        return call
