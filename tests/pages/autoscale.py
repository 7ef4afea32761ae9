"""Test-only handlers for autoscaling: CPU-busy work with a checkable answer, and a call
that holds its worker until the page lets it go (``WorkerBridge(modules=[...])``)."""

import uuid

from workerbridge import Context, handler

_worker: list[str] = []


def worker_id() -> str:
    """A name for this worker, made on first use (after any snapshot restore, so two
    workers booted from one snapshot never share it)."""
    if not _worker:
        _worker.append(uuid.uuid4().hex)
    return _worker[0]


@handler("autoscale", "crunch")
async def crunch(ctx: Context, payload: dict) -> list:
    """Pure-Python work: the sum of i*i below n, with the tag and the worker's name."""
    total = 0
    for i in range(payload["n"]):
        total += i * i
    return [payload["tag"], total, worker_id()]


@handler("autoscale", "hold")
async def hold(ctx: Context, payload: dict) -> list:
    """Blocks its worker until the page sets the flag (or the timeout, in seconds)."""
    from workerbridge import SharedFlag

    released = SharedFlag.from_buffer(payload["flag"]).wait(payload.get("timeout", 60.0))
    return [payload["tag"], released, worker_id()]
