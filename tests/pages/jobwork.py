"""Test-only job handlers (tests/browser/test_jobs.py): each reports what it saw."""

import asyncio
import time

from workerbridge import Context, Flow, Retry, handler, workflow


@handler("work", "echo")
async def echo(ctx: Context, payload: dict) -> dict:
    job = ctx.job
    return {"payload": payload, "job": None if job is None else
            {"id": job.id, "queue": job.queue, "attempt": job.attempt}}


@handler("work", "flaky")
async def flaky(ctx: Context, payload: dict) -> dict:
    """Raises ``payload["error"]`` (a builtin exception's name) until attempt ``until``."""
    import builtins

    if ctx.job.attempt < payload.get("until", 10**9):
        raise getattr(builtins, payload["error"])("a message that quotes the payload: "
                                                  + payload.get("secret", ""))
    return {"attempt": ctx.job.attempt}


@handler("work", "span")
async def span(ctx: Context, payload: dict) -> dict:
    """Sleeps a while; returns when it ran (the page's clock, in ms)."""
    import js

    start = js.Date.now()
    await asyncio.sleep(payload.get("seconds", 0.2))
    return {"start": start, "end": js.Date.now(), "group": payload.get("group")}


@handler("work", "spin")
async def spin(ctx: Context, payload: dict) -> int:
    """A pure-Python busy loop that never awaits: only the interrupt can stop it."""
    n = 0
    deadline = time.monotonic() + payload.get("seconds", 30.0)
    while time.monotonic() < deadline:
        n += 1
    return n


@handler("work", "crash_once")
async def crash_once(ctx: Context, payload: dict) -> dict:
    """Closes its own worker on the job's first attempt; succeeds after."""
    import js

    if ctx.job.attempt == 1 and not payload.get("crashed"):
        js.close()
    return {"attempt": ctx.job.attempt, "history_ok": True}


@handler("work", "step")
async def step(ctx: Context, payload: dict) -> dict:
    """A workflow step: records that it ran in Cache Storage (a side channel that
    survives a reload), sleeps if it is the slow one, and passes its input on."""
    import js

    cache = await js.caches.open("wf-exec")
    await cache.put(f"/exec/{ctx.job.id}/{js.crypto.randomUUID()}", js.Response.new("1"))
    if ctx.job.step == payload.get("slow_step"):
        await asyncio.sleep(payload.get("slow", 0))
    if ctx.job.step == payload.get("fail_step"):
        raise PermissionError("no")
    return {**payload, "trail": [*payload.get("trail", []), ctx.job.step]}


@handler("work", "noop")
async def noop(ctx: Context, payload: object) -> None:
    """Nothing at all (the jobs benchmark's no-op job)."""


@workflow("invoice-code")
async def invoice_code(w: Flow, data: dict) -> dict:
    """The code form of the invoice workflow: three steps with a durable sleep."""
    checked = await w.step("validate", "work.step", data)
    await w.sleep(data.get("nap", 0))
    charged = await w.step("charge", "work.step", checked, retry=Retry(2, delay=0.1))
    return await w.step("notify", "work.step", charged)


@handler("pipe", "step")
async def pipe_step(ctx: Context, event: dict) -> dict | None:
    """A pipeline stage (tests/browser/test_jobs.py): stage "b" drops odd events; each
    stage adds its name to the event's trail."""
    stage = ctx.job.queue.rsplit(":", 1)[1]
    await asyncio.sleep(event.get("sleep", 0))
    if stage == "b" and event["n"] % 2:
        return None
    return {**event, "trail": [*event.get("trail", []), stage]}


@handler("work", "pass")
async def pass_on(ctx: Context, payload: object) -> object:
    """Returns its payload (the benchmark's no-op pipeline stage)."""
    return payload
