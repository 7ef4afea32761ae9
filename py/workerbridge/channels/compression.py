"""The page-side API of the ``compression`` channel.

Its worker half: ``workers/compression.py``.
"""

from __future__ import annotations

from typing import Any

from workerbridge.channels.algorithms import (
    DEFAULT_MAX_OUTPUT,
    compression_level,
    max_output_bytes,
    normalize_compression,
)
from workerbridge.channels.base import Namespace
from workerbridge.core.data import like_input, prepare
from workerbridge.core.shared import SharedCancellation
from workerbridge.pool.connection import ProgressCallback


class CompressionNamespace(Namespace):
    channel = "compression"

    async def compress_data(
        self,
        data: Any,
        algorithm: str = "gzip",
        level: int | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> Any:
        """``data`` compressed as gzip, deflate (zlib format), deflate-raw or zstd.

        Without ``level``, gzip/deflate/deflate-raw stream through the browser's
        CompressionStream; with a ``level`` (0-9) they run through Python's zlib, since
        CompressionStream has no level. zstd runs through Python's ``compression.zstd``
        (levels 1-22). ``data`` is taken as by ``crypto.hash_file``; progress reports
        input bytes consumed. Returns bytes when ``data`` is Python bytes, else a JS
        ArrayBuffer (moved from the worker, never copied into the page's Python).
        """
        name = normalize_compression(algorithm)
        payload: dict[str, Any] = {"algorithm": name, "level": compression_level(name, level)}
        out = prepare(data)
        payload["data"] = out.value
        return like_input(await self._bridge.request(
            self.channel, "compress", payload, transfer=out.transfer,
            on_progress=on_progress, cancel=cancel), data)

    async def decompress_data(
        self,
        data: Any,
        algorithm: str = "gzip",
        *,
        max_output: int = DEFAULT_MAX_OUTPUT,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> Any:
        """The bytes that ``data`` (gzip, deflate, deflate-raw or zstd) encodes.

        gzip/deflate/deflate-raw go through the browser's DecompressionStream, zstd
        through Python's ``compression.zstd``. Corrupt, truncated or trailing input
        raises ``CorruptDataError``; output beyond ``max_output`` bytes raises
        ``InvalidInputError``. Progress reports input bytes consumed. Returns bytes
        when ``data`` is Python bytes, else a JS ArrayBuffer.
        """
        name = normalize_compression(algorithm)
        limit = max_output_bytes(max_output)
        out = prepare(data)
        return like_input(await self._bridge.request(
            self.channel, "decompress", {"data": out.value, "algorithm": name, "max_output": limit},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel), data)
