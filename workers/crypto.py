"""The ``crypto`` channel: hashing (and, later, encryption) inside a worker."""

from __future__ import annotations

import hashlib
from typing import Any

from workerbridge._algorithms import HASHES, normalize_hash
from workerbridge._data import chunks, native_input, size_of
from workerbridge._runtime import Context, handler

# Data between these sizes is hashed by the browser's SubtleCrypto in one call, in a
# helper worker so a cancel can stop it (a Blob/File is read whole there). SubtleCrypto
# holds its whole input in memory and reports no progress: larger inputs, and calls that
# ask for progress, stream through hashlib in bounded memory; smaller ones are hashed at
# once, sparing the helper's round trip.
ONE_SHOT_MIN = 4 * 1024 * 1024
ONE_SHOT_MAX = 256 * 1024 * 1024


async def digest(ctx: Context, data: Any, algorithm: str) -> str:
    """Hex digest of ``data`` (as received by a worker) with a normalized ``algorithm``,
    reporting progress in bytes to ``ctx``."""
    total = size_of(data)
    ctx.set_total(total)
    whole = native_input(data)
    if whole is not None and ONE_SHOT_MIN <= total <= ONE_SHOT_MAX \
            and not ctx.wants_progress:
        from workerbridge._engines import subtle_call

        out = await subtle_call("digest", [algorithm], whole)
        ctx.progress(total)
        return str(out.to_bytes().hex())
    h = hashlib.new(HASHES[algorithm])
    done = 0
    async for chunk in chunks(data):
        h.update(chunk)
        done += len(chunk)
        ctx.progress(done)
        await ctx.checkpoint()
    return h.hexdigest()


@handler("crypto", "hash_file")
async def hash_file(ctx: Context, payload: dict[str, Any]) -> str:
    """Hex digest of ``payload['data']``."""
    algorithm = normalize_hash(payload.get("algorithm", "SHA-256"))
    return await digest(ctx, payload.get("data"), algorithm)
