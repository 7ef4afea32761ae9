"""The page-side API of each built-in channel. Each method checks its arguments here, so
bad input fails at once with a typed error, then sends one request to the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._algorithms import normalize_hash
from ._data import prepare
from .protocol import ProgressCallback
from .shared import SharedCancellation

if TYPE_CHECKING:
    from ._bridge import WorkerBridge


class _Namespace:
    channel = ""

    def __init__(self, bridge: WorkerBridge) -> None:
        self._bridge = bridge


class Channel(_Namespace):
    """Calls into a custom channel: ``ns.op(**payload)`` sends ``payload`` to ``op``."""

    def __init__(self, bridge: WorkerBridge, name: str) -> None:
        super().__init__(bridge)
        self.channel = name

    def __getattr__(self, op: str) -> Any:
        if op.startswith("_"):
            raise AttributeError(op)

        async def call(**payload: Any) -> Any:
            return await self._bridge.request(self.channel, op, payload)

        call.__name__ = op
        return call


class CryptoNamespace(_Namespace):
    channel = "crypto"

    async def hash_file(
        self,
        data: Any,
        algorithm: str = "SHA-256",
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> str:
        """Digest of ``data`` as lowercase hex; SHA-1, SHA-256, SHA-384 or SHA-512.

        ``data``: bytes, an ArrayBuffer (moved to the worker: yours is detached after the
        call), a typed array, or a Blob/File (read in chunks in the worker). Progress
        reports bytes hashed; cancelling the task or ``cancel`` stops the worker's work.
        """
        name = normalize_hash(algorithm)
        out = prepare(data)
        return str(await self._bridge.request(
            self.channel, "hash_file", {"data": out.value, "algorithm": name},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel))
