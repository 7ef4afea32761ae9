"""The streamed hashing path, stage by stage, inside a worker (bench/streamed.py): each
figure is one pass over the same data, in MB/s."""

import hashlib
import time

import js

from workerbridge import Context, handler
from workerbridge.core.data import BLOB_CHUNK_SIZE, CHUNK_SIZE, chunks
from workerbridge.core.feed import next_chunk, open_feed


def _rate(n: int, started: float) -> float:
    return n / 1048576 / (time.perf_counter() - started)


@handler("stages", "heap")
async def heap(ctx: Context, payload: None) -> int:
    """Bytes of WebAssembly memory this worker's Python uses (it never shrinks)."""
    import pyodide_js

    return int(pyodide_js._module.HEAP8.length)


@handler("stages", "hash")
async def stages(ctx: Context, payload: dict) -> dict:
    data = payload["data"]
    is_blob = str(js.Object.prototype.toString.call(data)) in ("[object File]",
                                                              "[object Blob]")
    n = int(data.size) if is_blob else int(data.byteLength)
    out = {}
    if is_blob:
        # Reading alone: the Blob's stream on this thread, and a helper worker's reads
        # (core.feed) with each chunk copied into this worker's heap.
        t = time.perf_counter()
        reader = data.stream().getReader()
        while not (await reader.read()).done:
            pass
        out["read_here"] = _rate(n, t)
        scratch = memoryview(bytearray(BLOB_CHUNK_SIZE))
        feed = open_feed(data, BLOB_CHUNK_SIZE)
        t = time.perf_counter()
        try:
            while await next_chunk(feed, scratch) is not None:
                pass
        finally:
            feed.stop()
        out["read_by_helper_and_copy"] = _rate(n, t)
    else:
        t = time.perf_counter()
        async for _ in chunks(data):
            pass
        out["copy_into_heap"] = _rate(n, t)  # a chunk at a time
    block = bytearray(CHUNK_SIZE)
    t = time.perf_counter()
    h = hashlib.sha256()
    for _ in range(n // CHUNK_SIZE):
        h.update(block)
    out["hashlib_in_memory"] = _rate(n // CHUNK_SIZE * CHUNK_SIZE, t)
    t = time.perf_counter()
    h = hashlib.sha256()
    async for chunk in chunks(data):
        h.update(chunk)
    out["read_copy_hash"] = _rate(n, t)
    t = time.perf_counter()
    h = hashlib.sha256()
    done = 0
    async for chunk in chunks(data):
        h.update(chunk)
        done += len(chunk)
        ctx.progress(done)
        await ctx.checkpoint()
    out["read_copy_hash_progress"] = _rate(n, t)
    return out
