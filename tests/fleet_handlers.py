"""Handlers the fleet tests and the benchmark load into their workers (and gateway)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from workerbridge.runtime.dispatch import Context, handler


@handler("fleettest", "whoami")
async def whoami(ctx: Context, payload: Any) -> dict[str, Any]:
    """Which worker ran this, with the payload back (bytes stay bytes)."""
    return {"pid": os.getpid(), "payload": payload,
            "attempt": ctx.job.attempt if ctx.job else None}


@handler("fleettest", "noop")
async def noop(ctx: Context, payload: Any) -> None:
    return None


@handler("fleettest", "steps")
async def steps(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """``n`` steps of ``step`` seconds each, reporting progress and checking for cancel."""
    n, step = int(payload.get("n", 10)), float(payload.get("step", 0.01))
    ctx.set_total(n)
    for i in range(n):
        await asyncio.sleep(step)
        ctx.progress(i + 1)
        await ctx.checkpoint()
    return {"pid": os.getpid(), "n": n}


@handler("fleettest", "spin")
async def spin(ctx: Context, payload: dict[str, Any]) -> int:
    """Pure-Python work between checkpoints (no await but the checkpoint's own)."""
    rounds = 0
    while rounds < int(payload.get("rounds", 10**9)):
        sum(range(20_000))
        rounds += 1
        ctx.progress(rounds)
        await ctx.checkpoint()
    return rounds


@handler("fleettest", "flaky")
async def flaky(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Raise ``error`` on every attempt before ``succeed_on``."""
    attempt = ctx.job.attempt if ctx.job else 1
    if attempt < int(payload.get("succeed_on", 10**9)):
        error = {"KeyError": KeyError, "ValueError": ValueError}[payload.get("error", "KeyError")]
        raise error("secret-payload-value")
    return {"attempt": attempt, "pid": os.getpid()}
