"""Binary inputs: what callers may pass, how it crosses to a worker, how a worker reads it.

Accepted everywhere: ``bytes``/``bytearray``/``memoryview``, a JS ``ArrayBuffer`` (moved
to the worker: the caller's buffer is detached afterwards), a typed array or DataView
(its buffer is moved when the view covers all of it, else its bytes are copied), a
``SharedArrayBuffer`` (read in place), or a ``Blob``/``File`` (crosses as a handle and is
read in chunks inside the worker, so memory stays flat whatever the size).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.core.feed import UNREADABLE
from workerbridge.core.platform import IN_PYODIDE, js_global, type_tag

CHUNK_SIZE = 2 * 1024 * 1024  # bytes; ~8 ms of SHA-256 here, so a cancel lands quickly
# Blob reads cross to the browser's file thread and back: fewer, larger reads measured
# faster here; 8 MB is still ~30 ms of hashing between two interrupt checks.
BLOB_CHUNK_SIZE = 8 * 1024 * 1024
READ_AHEAD = 16  # reads of a Blob's stream asked for ahead (~0.5 MB each here)
# From this size a Blob is read by a helper worker (core.feed), beside the consumer's work;
# smaller ones are read on the consumer's thread, which saves starting the helper.
FEED_MIN = 4 * BLOB_CHUNK_SIZE


ACCEPTED = "bytes, bytearray, memoryview, an ArrayBuffer, a typed array, or a Blob/File"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A caller's data made ready for postMessage."""

    value: Any
    transfer: tuple[Any, ...]
    size: int


def is_jsproxy(value: Any) -> bool:
    if not IN_PYODIDE:
        return False
    from pyodide.ffi import JsProxy

    return isinstance(value, JsProxy)


def prepare(data: Any, what: str = "data") -> Outgoing:
    """Check a caller's data and choose how it crosses: transfer, share, handle or copy."""
    if isinstance(data, str):
        raise InvalidTypeError(f"{what} must be {ACCEPTED}; encode text first (str.encode())")
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        if not IN_PYODIDE:
            return Outgoing(bytes(view), (), view.nbytes)
        from workerbridge.core.jsconv import bytes_to_js

        buf = bytes_to_js(view)
        return Outgoing(buf, (buf,), view.nbytes)
    if not is_jsproxy(data):
        raise InvalidTypeError(f"{what} must be {ACCEPTED}, not {type(data).__name__}")
    g = js_global()
    tag = type_tag(data)
    if tag == "[object ArrayBuffer]":
        if getattr(data, "detached", False):
            raise InvalidInputError(f"{what} is a detached ArrayBuffer (it was already moved)")
        return Outgoing(data, (data,), int(data.byteLength))
    if tag == "[object SharedArrayBuffer]":
        return Outgoing(data, (), int(data.byteLength))
    if g.ArrayBuffer.isView(data):
        buf, offset, length = data.buffer, int(data.byteOffset), int(data.byteLength)
        if type_tag(buf) == "[object SharedArrayBuffer]":
            return Outgoing(g.Uint8Array.new(buf, offset, length), (), length)
        if getattr(buf, "detached", False):
            raise InvalidInputError(f"{what} views a detached ArrayBuffer")
        if offset == 0 and length == int(buf.byteLength):
            return Outgoing(buf, (buf,), length)
        copy = buf.slice(offset, offset + length)
        return Outgoing(copy, (copy,), length)
    if tag in ("[object Blob]", "[object File]"):
        return Outgoing(data, (), int(data.size))
    raise InvalidTypeError(f"{what} must be {ACCEPTED}, not a JS {tag[8:-1]}")


def size_of(data: Any) -> int:
    """Size in bytes of data received by a worker."""
    if isinstance(data, bytes | bytearray | memoryview):
        return memoryview(data).nbytes
    if is_jsproxy(data):
        tag = type_tag(data)
        if tag in ("[object Blob]", "[object File]"):
            return int(data.size)
        return int(data.byteLength)
    raise InvalidTypeError(f"data must be {ACCEPTED}, not {type(data).__name__}")


def native_input(data: Any) -> Any:
    """``data`` as a JS value a browser engine can take whole: an ArrayBuffer, a view of
    one, or a Blob/File; None for Python bytes and SharedArrayBuffers (which SubtleCrypto
    and friends refuse)."""
    if not is_jsproxy(data):
        return None
    tag = type_tag(data)
    if tag in ("[object ArrayBuffer]", "[object Blob]", "[object File]"):
        return data
    if js_global().ArrayBuffer.isView(data) \
            and type_tag(data.buffer) == "[object ArrayBuffer]":
        return data
    return None


@cache
def _ignore_failure() -> Any:
    """JS: let a promise fail unheard (made on first use: a JS object made at import
    could not go into a memory snapshot)."""
    return js_global().Function.new("promise", "promise.catch(() => {});")


async def read_blob(pending: Any, stream: bool = False) -> Any:
    """Await a Blob read, turning the browser's refusal into a typed error. A read of a
    Blob's stream fails with a bare "TypeError: network error" when the data is gone (its
    file changed on disk): from a stream (``stream``) every refusal means that."""
    from pyodide.ffi import JsException

    try:
        return await pending
    except JsException as exc:
        if exc.name == "NotReadableError" or stream:
            raise InvalidInputError(UNREADABLE) from None
        raise


async def chunks(data: Any, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[memoryview]:
    """Yield the bytes of ``data`` in order, ``chunk_size`` at a time.

    The yielded memoryview is reused for the next chunk: consume it before moving on.
    A Blob is read through its own stream: by a helper worker from ``FEED_MIN`` bytes
    (core.feed), so the reading runs beside the caller's work on each chunk; on this
    thread below that, or where no worker may start, with reads requested ahead
    (bench/streamed.py measures each).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for off in range(0, view.nbytes, chunk_size):
            yield view[off:off + chunk_size]
        return
    if not is_jsproxy(data):
        raise InvalidTypeError(f"data must be {ACCEPTED}, not {type(data).__name__}")
    g = js_global()
    tag = type_tag(data)
    scratch = memoryview(bytearray(chunk_size))
    if tag in ("[object Blob]", "[object File]"):
        chunk_size = max(chunk_size, BLOB_CHUNK_SIZE)
        scratch = memoryview(bytearray(chunk_size))
        if int(data.size) >= FEED_MIN:
            from workerbridge.core.feed import HelperFailed, next_chunk, open_feed

            feed, done = open_feed(data, chunk_size), 0
            if feed is not None:
                try:
                    while (n := await next_chunk(feed, scratch)) is not None:
                        done += n
                        yield scratch[:n]
                    return
                except HelperFailed:
                    # The helper could not start (or died): read the rest here, from
                    # a chunk boundary, so the chunks stay exact.
                    data = data.slice(done)
                finally:
                    feed.stop()
        reader = data.stream().getReader()
        # Reads asked for ahead, so that the browser goes on reading while this thread
        # hashes (or compresses …) a whole chunk: about one chunk's worth.
        ahead = deque(reader.read() for _ in range(READ_AHEAD))
        try:
            fill = 0
            while True:
                got = await read_blob(ahead.popleft(), stream=True)
                if got.done:
                    break
                part = got.value  # a Uint8Array of the browser's choosing (~0.5 MB)
                ahead.append(reader.read())
                n, pos = int(part.length), 0
                while pos < n:
                    take = min(n - pos, chunk_size - fill)
                    part.subarray(pos, pos + take).assign_to(scratch[fill:fill + take])
                    fill += take
                    pos += take
                    if fill == chunk_size:
                        yield scratch
                        fill = 0
            if fill:
                yield scratch[:fill]
        finally:
            # Stopped early (a cancel, an error): let the browser stop reading, and drop
            # the read ahead quietly.
            ignore = _ignore_failure()
            for pending in ahead:
                ignore(pending)
            ignore(reader.cancel())
        return
    if g.ArrayBuffer.isView(data):
        u8 = g.Uint8Array.new(data.buffer, data.byteOffset, data.byteLength)
    else:
        u8 = g.Uint8Array.new(data)
    total = int(u8.length)
    for off in range(0, total, chunk_size):
        end = min(off + chunk_size, total)
        out = scratch[: end - off]
        u8.subarray(off, end).assign_to(out)
        yield out


async def js_read(data: Any, start: int = 0, end: int | None = None) -> Any:
    """Bytes ``start:end`` of ``data`` (a JS ArrayBuffer, view or Blob) as a Uint8Array."""
    g = js_global()
    if type_tag(data) in ("[object Blob]", "[object File]"):
        part = data.slice(start, end) if end is not None else data.slice(start)
        return g.Uint8Array.new(await read_blob(part.arrayBuffer()))
    if g.ArrayBuffer.isView(data):
        u8 = g.Uint8Array.new(data.buffer, data.byteOffset, data.byteLength)
    else:
        u8 = g.Uint8Array.new(data)
    return u8.subarray(start, end if end is not None else int(u8.length))


def like_input(result: Any, given: Any) -> Any:
    """A worker's Uint8Array result as bytes for a Python caller, as an ArrayBuffer for a
    JS one (which keeps large results out of the page's Python heap)."""
    if isinstance(given, bytes | bytearray | memoryview) or not IN_PYODIDE:
        return bytes(result.to_bytes()) if hasattr(result, "to_bytes") else bytes(result)
    if isinstance(result, bytes | bytearray | memoryview):  # from a fleet (remote bridge)
        from workerbridge.core.jsconv import bytes_to_js

        return bytes_to_js(result)
    return result.buffer
