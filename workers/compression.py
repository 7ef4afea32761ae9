"""The ``compression`` channel: gzip, deflate, deflate-raw and zstd inside a worker.

Which engine runs:

- gzip, deflate (zlib format) and deflate-raw without a level: the browser's
  CompressionStream / DecompressionStream. The input is written in chunks while a JS
  read loop drains the output; the output is joined once, in JS, and moved to the page.
- the same formats with a level (0-9): Python's zlib, chunk by chunk, because
  CompressionStream has no level. zlib also stands in where a browser lacks the format.
- zstd: Python's ``compression.zstd`` (built into Pyodide's Python 3.14), both ways; on
  an older CPython (a fleet worker), the ``zstandard`` package.

Decompression stops with ``InvalidInputError`` once the output passes ``max_output``
bytes; corrupt or truncated input, or bytes after the end, raise ``CorruptDataError``.

Its page half: ``workerbridge.channels.compression``.
"""

from __future__ import annotations

import importlib
import zlib
from typing import Any, Protocol

from workerbridge.channels.algorithms import (
    DEFAULT_MAX_OUTPUT,
    compression_level,
    max_output_bytes,
    normalize_compression,
)
from workerbridge.core.data import chunks, size_of
from workerbridge.core.errors import CorruptDataError, InvalidInputError, UnsupportedError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.runtime.dispatch import Context, handler

# zlib's wbits for each CompressionStream format: +16 adds the gzip wrapper, negative is raw.
WBITS = {"gzip": 31, "deflate": 15, "deflate-raw": -15}

# Python codecs get smaller chunks than the browser's streams: zlib at level 9 runs a few
# MB/s here, and a cancel without isolation lands only between chunks.
CODEC_CHUNK = 1024 * 1024

# A browser stream compresses each written chunk in one go on this worker's thread, where
# nothing else (a CANCEL, the interrupt) is seen meanwhile: an 8 MB Blob chunk of random
# data held a cancel's answer for 0.6-0.7 s here. Written in 1 MB pieces it waits for one.
STREAM_PIECE = 1024 * 1024


class Codec(Protocol):
    def feed(self, chunk: memoryview) -> bytes: ...
    def finish(self) -> bytes: ...


def output_limit(limit: int) -> InvalidInputError:
    return InvalidInputError(f"the decompressed data exceeds max_output ({limit} bytes)")


def _corrupt(algorithm: str, what: str = "corrupt") -> CorruptDataError:
    return CorruptDataError(f"the {algorithm} data is {what}")


def _zstd() -> Any:
    try:
        return importlib.import_module("compression.zstd")
    except ImportError:
        raise UnsupportedError("zstd needs Python 3.14's compression.zstd, "
                               "which this Python lacks") from None


def _zstandard() -> Any:
    """The ``zstandard`` package where Python has no ``compression.zstd`` (None if neither
    is there, or if it is)."""
    try:
        importlib.import_module("compression.zstd")
        return None
    except ImportError:
        pass
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


class Deflate:
    """zlib compression in one of the three CompressionStream formats."""

    def __init__(self, algorithm: str, level: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, WBITS[algorithm])

    def feed(self, chunk: memoryview) -> bytes:
        return self._c.compress(chunk)

    def finish(self) -> bytes:
        return self._c.flush()


class ZstdCompress:
    def __init__(self, level: int | None) -> None:
        package = _zstandard()
        if package is not None:
            self._c = package.ZstdCompressor(level=3 if level is None else level).compressobj()
            return
        self._c = _zstd().ZstdCompressor(level=level)

    def feed(self, chunk: memoryview) -> bytes:
        return bytes(self._c.compress(chunk))

    def finish(self) -> bytes:
        return bytes(self._c.flush())


class _Capped:
    """Counts decompressed bytes and refuses to go past ``limit``."""

    def __init__(self, algorithm: str, limit: int) -> None:
        self.algorithm = algorithm
        self.limit = limit
        self.size = 0

    def room(self) -> int:
        # One byte more than allowed, so going over is seen; never 0 (zlib: "no limit").
        return self.limit - self.size + 1

    def take(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.limit:
            raise output_limit(self.limit)
        return piece


class Inflate(_Capped):
    """zlib decompression of one gzip member / zlib stream / raw deflate stream."""

    def __init__(self, algorithm: str, limit: int) -> None:
        super().__init__(algorithm, limit)
        self._d = zlib.decompressobj(WBITS[algorithm])

    def feed(self, chunk: memoryview) -> bytes:
        if not chunk:
            return b""
        if self._d.eof:
            raise _corrupt(self.algorithm, "followed by extra bytes")
        out: list[bytes] = []
        data: memoryview | bytes = chunk
        try:
            while data:
                out.append(self.take(self._d.decompress(data, self.room())))
                data = self._d.unconsumed_tail
        except zlib.error:
            raise _corrupt(self.algorithm) from None
        if self._d.unused_data:
            raise _corrupt(self.algorithm, "followed by extra bytes")
        return b"".join(out)

    def finish(self) -> bytes:
        try:
            rest = self.take(self._d.flush())
        except zlib.error:
            raise _corrupt(self.algorithm) from None
        if not self._d.eof:
            raise _corrupt(self.algorithm, "truncated")
        return rest


class ZstdDecompress(_Capped):
    """Decompression of one zstd frame."""

    def __init__(self, limit: int) -> None:
        super().__init__("zstd", limit)
        self._zstd = _zstd()
        self._d = self._zstd.ZstdDecompressor()

    def feed(self, chunk: memoryview) -> bytes:
        if not chunk:
            return b""
        if self._d.eof:
            raise _corrupt("zstd", "followed by extra bytes")
        d = self._d
        try:
            out = [self.take(d.decompress(chunk, self.room()))]
            while not d.eof and not d.needs_input:  # stopped at room(): drain what it holds
                out.append(self.take(d.decompress(b"", self.room())))
        except self._zstd.ZstdError:
            raise _corrupt("zstd") from None
        if d.eof and d.unused_data:
            raise _corrupt("zstd", "followed by extra bytes")
        return b"".join(out)

    def finish(self) -> bytes:
        if not self._d.eof:
            raise _corrupt("zstd", "truncated")
        return b""


def compressor(algorithm: str, level: int | None) -> Codec:
    if algorithm == "zstd":
        return ZstdCompress(level)
    return Deflate(algorithm, zlib.Z_DEFAULT_COMPRESSION if level is None else level)


class ZstandardDecompress(ZstdDecompress):
    """Decompression of one zstd frame by the ``zstandard`` package, whose decompressor
    takes no output limit: the input goes in ``PIECE``-byte slices, so one step yields at
    most 16 MB (a zstd block of 128 KB can take 4 bytes) before ``max_output`` is checked."""

    PIECE = 512

    def __init__(self, limit: int, package: Any) -> None:
        _Capped.__init__(self, "zstd", limit)
        self._zstd = package
        self._d = package.ZstdDecompressor().decompressobj()

    def feed(self, chunk: memoryview) -> bytes:
        if not chunk:
            return b""
        d, out = self._d, []
        view = memoryview(chunk).cast("B")
        for off in range(0, view.nbytes, self.PIECE):
            if d.eof:
                raise _corrupt("zstd", "followed by extra bytes")
            try:
                out.append(self.take(d.decompress(view[off:off + self.PIECE])))
            except self._zstd.ZstdError:
                raise _corrupt("zstd") from None
            if d.eof and d.unused_data:
                raise _corrupt("zstd", "followed by extra bytes")
        return b"".join(out)


def decompressor(algorithm: str, limit: int) -> Codec:
    if algorithm != "zstd":
        return Inflate(algorithm, limit)
    package = _zstandard()
    return ZstdDecompress(limit) if package is None else ZstandardDecompress(limit, package)


async def through_codec(ctx: Context, data: Any, codec: Codec) -> bytes:
    """Run ``data`` through a Python codec chunk by chunk, reporting input bytes."""
    parts: list[bytes] = []
    done = 0
    async for chunk in chunks(data, CODEC_CHUNK):
        parts.append(codec.feed(chunk))
        done += len(chunk)
        ctx.progress(done)
        await ctx.checkpoint()
    parts.append(codec.finish())
    return b"".join(parts)


# --- the browser's streams ------------------------------------------------------------------

# The read loop runs in JS beside Python's writes: a write() promise settles only once
# the stream's reader has pulled, so reading after writing would deadlock. Output chunks
# are joined once at the end. Going past ``limit`` cancels the reader, which also errors
# the writable side, so a pending write() rejects instead of waiting forever.
_SESSION_JS = """
return (stream, limit) => {
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  const state = { over: false };
  const collected = (async () => {
    const parts = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        state.over = true;
        const err = new RangeError("output limit");
        reader.cancel(err).catch(() => {});
        throw err;
      }
      parts.push(value);
    }
    const out = new Uint8Array(size);
    let offset = 0;
    for (const part of parts) { out.set(part, offset); offset += part.byteLength; }
    return out.buffer;
  })();
  collected.catch(() => {});  // a failure also rejects write() or finish(): handled there
  return {
    state,
    write: (chunk) => writer.write(chunk),
    finish: async () => { await writer.close(); return collected; },
    abort: () => { reader.cancel().catch(() => {}); writer.abort().catch(() => {}); },
  };
};
"""

_session: Any = None


def browser_stream(kind: str, algorithm: str) -> Any:
    """A new ``kind`` (CompressionStream or DecompressionStream) for ``algorithm``, or None
    where there is none (outside a browser, or a browser without that format)."""
    if not IN_PYODIDE or algorithm not in WBITS:
        return None
    import js
    from pyodide.ffi import JsException

    ctor = getattr(js, kind, None)
    if ctor is None:
        return None
    try:
        return ctor.new(algorithm)
    except JsException:  # TypeError: unsupported format
        return None


async def through_stream(ctx: Context, data: Any, stream: Any, algorithm: str,
                         limit: int | None) -> Any:
    """Run ``data`` through a browser stream; returns the output ArrayBuffer (to move).

    ``limit``: the most output bytes a DecompressionStream may give; None to compress.
    """
    import js
    from pyodide.ffi import JsException

    from workerbridge.core.jsconv import bytes_to_js

    global _session
    if _session is None:
        _session = js.Function.new(_SESSION_JS)()
    session = _session(stream, float("inf") if limit is None else limit)
    done = 0
    try:
        async for chunk in chunks(data):
            for off in range(0, len(chunk), STREAM_PIECE):
                # chunks() reuses its buffer: the stream gets a copy of its own.
                piece = chunk[off:off + STREAM_PIECE]
                await session.write(bytes_to_js(piece))
                done += len(piece)
                ctx.progress(done)
                await ctx.checkpoint()
        return await session.finish()
    except JsException as exc:
        session.abort()
        if limit is None:
            raise
        if session.state.over:
            raise output_limit(limit) from None
        if exc.name == "TypeError":  # what a DecompressionStream rejects bad input with
            truncated = "truncated" in str(exc.message)  # the browser's words, not data
            raise _corrupt(algorithm, "truncated" if truncated else "corrupt") from None
        raise
    except BaseException:  # cancelled or interrupted: tear the stream down
        session.abort()
        raise


# --- handlers -------------------------------------------------------------------------------


@handler("compression", "compress")
async def compress(ctx: Context, payload: dict[str, Any]) -> Any:
    """``payload['data']`` compressed with ``algorithm`` at ``level`` (None: the default)."""
    algorithm = normalize_compression(payload.get("algorithm", "gzip"))
    level = compression_level(algorithm, payload.get("level"))
    data = payload.get("data")
    ctx.set_total(size_of(data))
    stream = browser_stream("CompressionStream", algorithm) if level is None else None
    if stream is not None:
        return _moved(ctx, await through_stream(ctx, data, stream, algorithm, None))
    return _moved(ctx, await through_codec(ctx, data, compressor(algorithm, level)))


@handler("compression", "decompress")
async def decompress(ctx: Context, payload: dict[str, Any]) -> Any:
    """The bytes ``payload['data']`` encodes, at most ``max_output`` of them."""
    algorithm = normalize_compression(payload.get("algorithm", "gzip"))
    limit = max_output_bytes(payload.get("max_output", DEFAULT_MAX_OUTPUT))
    data = payload.get("data")
    ctx.set_total(size_of(data))
    stream = browser_stream("DecompressionStream", algorithm)
    if stream is not None:
        return _moved(ctx, await through_stream(ctx, data, stream, algorithm, limit))
    return _moved(ctx, await through_codec(ctx, data, decompressor(algorithm, limit)))


def _moved(ctx: Context, out: Any) -> Any:
    """The output handed over to the page (``Context.hand_over``); bytes on a host."""
    if not IN_PYODIDE:
        return out
    from workerbridge.core.jsconv import bytes_to_js

    return ctx.hand_over(bytes_to_js(out) if isinstance(out, bytes) else out)
