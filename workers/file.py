"""The ``file`` channel: hashing, chunking and merging, type detection and metadata.

Inputs are streamed with ``chunks()`` in bounded memory; the outputs of ``chunk_file`` and
``merge_chunks`` are built straight into JS buffers that are moved to the page.

Its page half: ``workerbridge.channels.file``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from workerbridge.channels import imagesize
from workerbridge.channels import magic as _magic
from workerbridge.channels.algorithms import normalize_hash
from workerbridge.channels.manifest import DEFAULT_CHUNK_SIZE, Manifest, check_manifest, chunk_count
from workerbridge.core.data import ACCEPTED, chunks, is_jsproxy, size_of
from workerbridge.core.errors import IntegrityError, InvalidInputError, InvalidTypeError
from workerbridge.core.platform import IN_PYODIDE, js_global, type_tag
from workerbridge.runtime.dispatch import Context, handler

from .crypto import digest

BLOB_TAGS = ("[object Blob]", "[object File]")
# Where a JPEG's frame header may hide behind EXIF, ICC and other segments: read this
# much at a time, and give up after this much.
JPEG_WINDOW = 64 * 1024
JPEG_SCAN_LIMIT = 16 * 1024 * 1024


def _is_blob(data: Any) -> bool:
    return is_jsproxy(data) and type_tag(data) in BLOB_TAGS


def _is_file(data: Any) -> bool:
    return is_jsproxy(data) and type_tag(data) == "[object File]"


def _file_name(data: Any, given: object) -> str | None:
    """The caller's name for the data, else a File's own name."""
    if given is not None:
        if not isinstance(given, str):
            raise InvalidTypeError(f"file_name must be a str, not {type(given).__name__}")
        return given
    return str(data.name) if _is_file(data) else None


async def _read(data: Any, start: int, length: int) -> bytes:
    """Bytes ``start`` to ``start + length`` of ``data`` (fewer at its end)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(memoryview(data).cast("B")[start:start + length])
    if _is_blob(data):
        buf = await data.slice(start, start + length).arrayBuffer()
        return bytes(buf.to_bytes())
    g = js_global()
    if g.ArrayBuffer.isView(data):
        u8 = g.Uint8Array.new(data.buffer, data.byteOffset, data.byteLength)
    else:
        u8 = g.Uint8Array.new(data)
    return bytes(u8.subarray(start, start + length).to_bytes())


async def _head(data: Any) -> bytes:
    head = await _read(data, 0, _magic.HEAD_SIZE)
    if _magic.needs_more(head) and len(head) == _magic.HEAD_SIZE:
        head = await _read(data, 0, _magic.ZIP_HEAD_SIZE)
    return head


def _new_buffer(size: int) -> Any:
    """A buffer for output bytes: a JS Uint8Array in the browser (moved to the page
    without another copy), a bytearray on a plain Python host."""
    return js_global().Uint8Array.new(size) if IN_PYODIDE else bytearray(size)


def _fill(buf: Any, offset: int, part: memoryview) -> None:
    if isinstance(buf, bytearray):
        buf[offset:offset + len(part)] = part
    else:
        buf.subarray(offset, offset + len(part)).assign(part)


def _hand_over(ctx: Context, buf: Any, view: bool = False) -> Any:
    """``buf`` moved to the page: its ArrayBuffer (which the page takes as bytes), or with
    ``view`` as ``Context.hand_over`` does (which the page keeps as a JS object)."""
    if isinstance(buf, bytearray):
        return bytes(buf)
    return ctx.hand_over(buf.buffer) if view else ctx.transfer(buf.buffer)


class ChunkHashes:
    """SHA-256 of each finished chunk, in order. In a browser, by SubtleCrypto on the
    chunk's own JS buffer (it takes a copy of the bytes at the call, and runs about three
    times as fast as hashlib here); on a plain Python host, by hashlib as the bytes come."""

    def __init__(self) -> None:
        crypto = js_global().crypto if IN_PYODIDE else None
        self.subtle = getattr(crypto, "subtle", None)  # none outside a secure context
        self.part = hashlib.sha256()
        self.done: list[Any] = []  # hex digests, or the browser's promises of them

    def update(self, bit: memoryview) -> None:
        if self.subtle is None:
            self.part.update(bit)

    def finish(self, buf: Any) -> None:
        """The chunk is whole in ``buf``."""
        if self.subtle is None:
            self.done.append(self.part.hexdigest())
            self.part = hashlib.sha256()
        else:
            self.done.append(self.subtle.digest("SHA-256", buf))

    async def hexes(self) -> list[str]:
        return [h if isinstance(h, str) else bytes((await h).to_bytes()).hex()
                for h in self.done]


@handler("file", "hash_file")
async def hash_file(ctx: Context, payload: dict[str, Any]) -> dict[str, str]:
    """``{"hash": hex, "algorithm": name}`` of ``payload['data']``."""
    algorithm = normalize_hash(payload.get("algorithm", "SHA-256"))
    return {"hash": await digest(ctx, payload.get("data"), algorithm), "algorithm": algorithm}


@handler("file", "chunk_file")
async def chunk_file(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Split ``data`` into ``chunk_size``-byte buffers with SHA-256 of each and of all."""
    data: Any = payload.get("data")
    size = size_of(data)
    chunk_size = payload.get("chunk_size", DEFAULT_CHUNK_SIZE)
    count = chunk_count(size, chunk_size)
    name = _file_name(data, payload.get("file_name"))
    ctx.set_total(size)
    whole = hashlib.sha256()
    out: list[Any] = []
    sizes: list[int] = []
    hashes = ChunkHashes()
    buf: Any = None
    filled = done = 0
    async for piece in chunks(data):
        whole.update(piece)
        pos = 0
        while pos < len(piece):
            if buf is None:
                want = min(chunk_size, size - len(out) * chunk_size)
                if want <= 0:
                    raise InvalidInputError("the data changed size while it was read")
                buf, filled = _new_buffer(want), 0
                sizes.append(want)
            take = min(sizes[-1] - filled, len(piece) - pos)
            bit = piece[pos:pos + take]
            _fill(buf, filled, bit)
            hashes.update(bit)
            filled += take
            pos += take
            if filled == sizes[-1]:
                hashes.finish(buf)
                out.append(_hand_over(ctx, buf, view=True))
                buf = None
        done += len(piece)
        ctx.progress(done)
        await ctx.checkpoint()
    if done != size or len(out) != count:
        raise InvalidInputError("the data changed size while it was read")
    meta = Manifest(name, size, chunk_size, count, sizes, await hashes.hexes(),
                    whole.hexdigest())
    return {"chunks": out, "metadata": meta.as_dict()}


@handler("file", "merge_chunks")
async def merge_chunks(ctx: Context, payload: dict[str, Any]) -> Any:
    """Concatenate ``chunks``; with ``metadata``, verify every chunk and the whole first."""
    parts = payload.get("chunks")
    if not isinstance(parts, list):
        raise InvalidTypeError(f"chunks must be a list of {ACCEPTED}")
    meta = payload.get("metadata")
    manifest = check_manifest(meta) if meta is not None else None
    sizes = [size_of(p) for p in parts]
    total = sum(sizes)
    ctx.set_total(total)
    out = _new_buffer(total)
    whole = hashlib.sha256()
    done = 0
    for i, data in enumerate(parts):
        if manifest is not None:
            _check_size(manifest, i, sizes[i])
        part, start = ChunkHashes(), done
        async for piece in chunks(data):
            _fill(out, done, piece)
            if manifest is not None:
                part.update(piece)
                whole.update(piece)
            done += len(piece)
            ctx.progress(done)
            await ctx.checkpoint()
        if manifest is None:
            continue
        part.finish(out[start:done] if isinstance(out, bytearray) else out.subarray(start, done))
        if (await part.hexes())[0] != manifest.chunk_hashes[i]:
            raise IntegrityError(f"chunk {i} of {manifest.count} does not match its hash")
    if manifest is not None:
        if len(parts) < manifest.count:
            raise IntegrityError(f"chunk {len(parts)} of {manifest.count} is missing")
        if whole.hexdigest() != manifest.hash:
            raise IntegrityError("the merged data does not match the metadata's whole-file hash")
    return _hand_over(ctx, out)


def _check_size(manifest: Manifest, i: int, size: int) -> None:
    if i >= manifest.count:
        raise IntegrityError(f"chunk {i} is extra: the metadata lists {manifest.count} chunks")
    if size != manifest.sizes[i]:
        raise IntegrityError(
            f"chunk {i} of {manifest.count} has {size} bytes, expected {manifest.sizes[i]}")


@handler("file", "detect_type")
async def detect_type(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """``{"type", "mime_type", "confidence"}`` from the first bytes of ``data``."""
    data: Any = payload.get("data")
    size = payload.get("size")
    if not isinstance(size, int):
        size = size_of(data)
    if size == 0:
        raise InvalidInputError("data is empty: there is no type to detect")
    head = await _head(data)
    name = _file_name(data, payload.get("file_name"))
    return _magic.detect(head, name, complete=len(head) >= size).as_dict()


async def _jpeg_size(data: Any, size: int, head: bytes) -> tuple[int, int] | None:
    found = imagesize.jpeg_size(head)
    while isinstance(found, imagesize.NeedMore):
        at = found.offset
        if at >= min(size, JPEG_SCAN_LIMIT):
            return None
        window = await _read(data, at, JPEG_WINDOW)
        found = imagesize.jpeg_size(window, at)
        if isinstance(found, imagesize.NeedMore) and found.offset == at:
            return None  # the file ends inside a segment header
    return found


@handler("file", "read_metadata")
async def read_metadata(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Name, size, type, last modified time, SHA-256 and pixel size of ``data``."""
    data: Any = payload.get("data")
    size = size_of(data)
    name = _file_name(data, payload.get("file_name"))
    kind = _magic.UNKNOWN
    dims: tuple[int, int] | None = None
    if size:
        # Read the head first: the hash may move an ArrayBuffer to a helper worker.
        head = await _head(data)
        kind = _magic.detect(head, name, complete=len(head) >= size)
        if kind.type == "jpeg":
            dims = await _jpeg_size(data, size, head)
        else:
            dims = imagesize.image_size(kind.type, head)
    modified = None
    if _is_file(data):
        modified = int(data.lastModified)
    return {
        "name": name, "size": size, "type": kind.type, "mime_type": kind.mime_type,
        "last_modified": modified, "hash": await digest(ctx, data, "SHA-256"),
        "width": dims[0] if dims else None, "height": dims[1] if dims else None,
    }
