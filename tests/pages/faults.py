"""Test-only handlers, loaded into a worker by URL (``WorkerBridge(modules=[...])``)."""

import asyncio
import time

from workerbridge import Context, handler


@handler("faults", "spin")
async def spin(ctx: Context, payload: dict) -> int:
    """A pure-Python busy loop: only the interrupt buffer can stop it."""
    n = 0
    deadline = time.monotonic() + payload.get("seconds", 5.0)
    while time.monotonic() < deadline:
        n += 1
    return n


@handler("faults", "sleep")
async def sleep(ctx: Context, payload: dict) -> str:
    """Suspended on an await: stopped by cancelling its task."""
    await asyncio.sleep(payload.get("seconds", 5.0))
    return "slept"


@handler("faults", "raise")
async def boom(ctx: Context, payload: dict) -> None:
    raise KeyError(payload.get("secret", "hidden-value"))
