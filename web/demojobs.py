"""The jobs demo's handler (web/jobs.html): a job that takes a little while."""

import asyncio

from workerbridge import Context, handler


@handler("demo", "work")
async def work(ctx: Context, payload: dict) -> int:
    """Sleeps ``payload["ms"]`` milliseconds; returns the job's number squared."""
    await asyncio.sleep(payload.get("ms", 20) / 1000)
    return payload["n"] * payload["n"]
