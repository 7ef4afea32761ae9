"""``WorkerBridge.file``: hashing, chunking, merging, type detection and metadata.

Its worker half: ``workers/file.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workerbridge.channels.algorithms import normalize_hash
from workerbridge.channels.base import Namespace
from workerbridge.channels.magic import ZIP_HEAD_SIZE
from workerbridge.channels.manifest import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNKS,
    check_manifest,
    chunk_count,
)
from workerbridge.core.data import Outgoing, is_jsproxy, like_input, prepare
from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.core.platform import js_global, type_tag
from workerbridge.core.shared import SharedCancellation
from workerbridge.pool.connection import ProgressCallback


def _check_name(file_name: object) -> str | None:
    if file_name is not None and not isinstance(file_name, str):
        raise InvalidTypeError(f"file_name must be a str, not {type(file_name).__name__}")
    return file_name


def _as_bytes(value: Any) -> bytes:
    # A worker's ArrayBuffer arrives as bytes; on the page's own thread (the fallback)
    # it is still the JS buffer.
    return value if isinstance(value, bytes) else bytes(value.to_bytes())


def _prefix(data: Any, limit: int) -> tuple[Outgoing, int, str | None]:
    """The first ``limit`` bytes of ``data`` ready to send, its size, and a File's name.

    Copies at most ``limit`` bytes and moves nothing of the caller's: their buffer stays
    usable. A Blob/File crosses as a slice handle and is read in the worker.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        return prepare(view[:limit]), view.nbytes, None
    if is_jsproxy(data) and js_global().ArrayBuffer.isView(data):
        if getattr(data.buffer, "detached", False):
            raise InvalidInputError("data views a detached ArrayBuffer")
        u8 = js_global().Uint8Array.new(data.buffer, data.byteOffset, data.byteLength)
    else:
        out = prepare(data)  # raises for every unaccepted type and detached buffers
        tag = type_tag(data)
        if tag in ("[object Blob]", "[object File]"):
            name = str(data.name) if tag == "[object File]" else None
            return Outgoing(data.slice(0, limit), (), out.size), out.size, name
        u8 = js_global().Uint8Array.new(data)
    head = u8.slice(0, limit)  # a copy
    return Outgoing(head.buffer, (head.buffer,), int(head.length)), int(u8.length), None


class FileNamespace(Namespace):
    channel = "file"

    async def hash_file(
        self,
        file: Any,
        algorithm: str = "SHA-256",
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> dict[str, str]:
        """``{"hash": lowercase hex, "algorithm": "SHA-256"}``; SHA-1/256/384/512.

        Same inputs and engines as ``crypto.hash_file``: an ArrayBuffer is moved to the
        worker (yours is detached after the call); a Blob/File is read in chunks.
        """
        name = normalize_hash(algorithm)
        out = prepare(file)
        result = await self._bridge.request(
            self.channel, "hash_file", {"data": out.value, "algorithm": name},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel)
        return dict(result)

    async def chunk_file(
        self,
        file: Any,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        file_name: str | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> dict[str, Any]:
        """Split ``file`` into ``chunk_size``-byte pieces (the last may be shorter).

        Returns ``{"chunks": [...], "metadata": {...}}``: the chunks are bytes when
        ``file`` is Python bytes, else JS ArrayBuffers (moved from the worker, never
        copied into the page's Python, however large the file); the metadata holds the
        file name (``file_name``, else a File's name), size, chunk_size, count, each
        chunk's size and SHA-256, the whole file's SHA-256, "algorithm" and "version".
        ``chunk_size``: 1 byte to 1 GiB (default 4 MiB), making at most 10,000 chunks.
        Progress reports bytes read. The chunks are made in the worker and moved back.
        """
        name = _check_name(file_name)
        out = prepare(file)
        chunk_count(out.size, chunk_size)
        result = await self._bridge.request(
            self.channel, "chunk_file",
            {"data": out.value, "chunk_size": chunk_size, "file_name": name},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel)
        return {"chunks": [like_input(c, file) for c in result["chunks"]],
                "metadata": result["metadata"]}

    async def merge_chunks(
        self,
        chunks: Sequence[Any],
        metadata: dict[str, Any] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> bytes:
        """The chunks joined in order, as bytes.

        With ``metadata`` (from ``chunk_file``) every chunk's size and SHA-256 and the
        whole file's SHA-256 are checked first; a missing, extra, reordered, truncated
        or modified chunk raises ``IntegrityError`` naming the first bad chunk's index.
        ArrayBuffer chunks are moved to the worker (detached after the call).
        """
        if not isinstance(chunks, list | tuple):
            raise InvalidTypeError(f"chunks must be a list, not {type(chunks).__name__}")
        if metadata is not None:
            check_manifest(metadata)
        elif not chunks:
            raise InvalidInputError("chunks is empty and there is no metadata")
        if len(chunks) > MAX_CHUNKS:
            raise InvalidInputError(f"more than {MAX_CHUNKS} chunks")
        outs = [prepare(c, f"chunks[{i}]") for i, c in enumerate(chunks)]
        result = await self._bridge.request(
            self.channel, "merge_chunks",
            {"chunks": [o.value for o in outs], "metadata": metadata},
            transfer=[t for o in outs for t in o.transfer],
            on_progress=on_progress, cancel=cancel)
        return _as_bytes(result)

    async def detect_type(
        self,
        data: Any,
        file_name: str | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> dict[str, Any]:
        """``{"type": "png", "mime_type": "image/png", "confidence": 0..1}``.

        Decided by magic numbers in the first few KB (more for a ZIP, to tell an Office
        document from a plain archive); nothing of ``data`` is moved or read whole.
        ``file_name``'s extension (a File's own name by default) is only a hint: it
        narrows a general finding (text to csv, zip to jar), raises the confidence of a
        matching one, and alone names a type at confidence 0.2. Nothing recognised:
        ``{"type": "unknown", "mime_type": "application/octet-stream", "confidence": 0}``.
        """
        name = _check_name(file_name)
        out, size, own_name = _prefix(data, ZIP_HEAD_SIZE)
        if size == 0:
            raise InvalidInputError("data is empty: there is no type to detect")
        result = await self._bridge.request(
            self.channel, "detect_type",
            {"data": out.value, "size": size, "file_name": name or own_name},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel)
        return dict(result)

    async def read_metadata(
        self,
        file: Any,
        file_name: str | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> dict[str, Any]:
        """``{"name", "size", "type", "mime_type", "last_modified", "hash", "width",
        "height"}``.

        ``name``: ``file_name``, else a File's name, else None; ``type``/``mime_type`` as
        ``detect_type``; ``last_modified``: a File's time in ms since the epoch, else
        None; ``hash``: SHA-256 hex (progress reports bytes hashed); ``width``/``height``
        in pixels for PNG, JPEG, GIF, WebP and BMP, else None.
        """
        name = _check_name(file_name)
        out = prepare(file)
        result = await self._bridge.request(
            self.channel, "read_metadata", {"data": out.value, "file_name": name},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel)
        return dict(result)
