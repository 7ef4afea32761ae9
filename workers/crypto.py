"""The ``crypto`` channel: hashing (and, later, encryption) inside a worker."""

from __future__ import annotations

import hashlib
from typing import Any

from workerbridge._algorithms import HASHES, normalize_hash
from workerbridge._data import chunks, size_of
from workerbridge._runtime import Context, handler


@handler("crypto", "hash_file")
async def hash_file(ctx: Context, payload: dict[str, Any]) -> str:
    """Hex digest of ``payload['data']``, streamed chunk by chunk with progress."""
    algorithm = normalize_hash(payload.get("algorithm", "SHA-256"))
    data = payload.get("data")
    total = size_of(data)
    h = hashlib.new(HASHES[algorithm])
    ctx.set_total(total)
    done = 0
    async for chunk in chunks(data):
        h.update(chunk)
        done += len(chunk)
        ctx.progress(done)
        await ctx.checkpoint()
    return h.hexdigest()
