"""Test-only handlers: what a worker's random state and identity look like after boot."""

import asyncio
import hashlib
import os
import random
import uuid

from workerbridge import Context, handler
from workerbridge.runtime import snapshot as _snapshot

# Drawn at import, so before a snapshot is made: the same in every worker booted from it.
IMPORTED_AT = random.random()
# This worker's first draw after boot: without a reseed, every worker booted from one
# snapshot would draw the same number here.
_first: list[float] = []


@handler("probe", "state")
async def state(ctx: Context, payload: dict) -> dict:
    await asyncio.sleep(payload.get("linger", 0.0))  # so concurrent probes spread
    data = payload.get("data")
    data = data.to_bytes() if hasattr(data, "to_bytes") else bytes(data or b"")  # an ArrayBuffer
    if not _first:
        _first.append(random.random())
        _first.append(os.urandom(8).hex())  # names this worker: urandom is never shared
    return {
        "from_snapshot": _snapshot.booted_from_snapshot,
        "first_random": _first[0],
        "worker": _first[1],
        "urandom": os.urandom(16).hex(),
        "uuid": str(uuid.uuid4()),
        "imported_at": IMPORTED_AT,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
