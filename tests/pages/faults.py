"""Test-only handlers, loaded into a worker by URL (``WorkerBridge(modules=[...])``)."""

import asyncio
import signal
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


@handler("faults", "signal_state")
async def signal_state(ctx: Context, payload: dict) -> str:
    return repr(signal.getsignal(signal.SIGINT))


@handler("faults", "control")
async def control(ctx: Context, payload: dict) -> list:
    c = ctx._runtime.control
    return [c.load(0), c.load(1)] if c is not None else []


_profiler = None


@handler("faults", "prof_start")
async def prof_start(ctx: Context, payload: dict) -> None:
    import cProfile

    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()


@handler("faults", "prof_stop")
async def prof_stop(ctx: Context, payload: dict) -> str:
    import io
    import pstats

    _profiler.disable()
    s = io.StringIO()
    pstats.Stats(_profiler, stream=s).sort_stats("tottime").print_stats(20)
    return s.getvalue()


@handler("faults", "post_bench")
async def post_bench(ctx: Context, payload: dict) -> dict:
    import json
    import time

    import js
    from pyodide.ffi import to_js

    msg = json.dumps({"v": 1, "kind": "progress", "id": 999999, "done": 0, "total": 0})
    pm = js.postMessage
    out = {}

    def bench(name, f, n=500):
        t = time.perf_counter()
        for _ in range(n):
            f()
        out[name] = (time.perf_counter() - t) / n * 1e6

    bench("js.postMessage(s)", lambda: js.postMessage(msg))
    bench("cached pm(s)", lambda: pm(msg))
    bench("pm(s, to_js([]))", lambda: pm(msg, to_js([])))
    bench("dumps", lambda: json.dumps({"v": 1, "kind": "progress", "id": 999999}))
    bench("perf_counter", lambda: time.perf_counter())
    return out


@handler("faults", "tasks")
async def tasks(ctx: Context, payload: dict) -> list:
    out = []
    for rid, st in ctx._runtime._active.items():
        t = st.task
        out.append([rid, st.cancelled, repr(t)[:300], getattr(t, "_must_cancel", None),
                    repr(getattr(t, "_fut_waiter", None))[:200]])
    return out
