"""The streamed hashing path, stage by stage, inside a worker (bench/streamed.py): each
figure is one pass over the same data, in MB/s."""

import hashlib
import time

import js

from workerbridge import Context, handler
from workerbridge.core.data import CHUNK_SIZE, chunks


def _rate(n: int, started: float) -> float:
    return n / 1048576 / (time.perf_counter() - started)


@handler("stages", "hash")
async def stages(ctx: Context, payload: dict) -> dict:
    data = payload["data"]
    is_file = str(js.Object.prototype.toString.call(data)) == "[object File]"
    n = int(data.size) if is_file else int(data.byteLength)
    out = {}
    if is_file:
        # Reading alone: 4 MB slices, the next requested before the current is used (as
        # core.data.chunks does), and the Blob's own stream.
        size = 4 * 1024 * 1024
        t = time.perf_counter()
        nxt, off = data.slice(0, size).arrayBuffer(), 0
        while nxt is not None:
            await nxt
            off += size
            nxt = data.slice(off, off + size).arrayBuffer() if off < n else None
        out["read_slices"] = _rate(n, t)
        t = time.perf_counter()
        reader = data.stream().getReader()
        while not (await reader.read()).done:
            pass
        out["read_stream"] = _rate(n, t)
    t = time.perf_counter()
    async for _ in chunks(data):
        pass
    out["read_and_copy"] = _rate(n, t)  # into the WebAssembly heap, a chunk at a time
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
