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


_timing = {"handle": 0.0, "post": 0.0, "n": 0}


@handler("faults", "instrument")
async def instrument(ctx: Context, payload: dict) -> None:
    import time

    rt = ctx._runtime
    orig_handle, orig_post = rt.handle, rt.post

    def handle(raw):
        t = time.perf_counter()
        orig_handle(raw)
        _timing["handle"] += time.perf_counter() - t
        _timing["n"] += 1

    def post(m, tr):
        t = time.perf_counter()
        orig_post(m, tr)
        _timing["post"] += time.perf_counter() - t

    rt.handle, rt.post = handle, post


@handler("faults", "instrument_report")
async def instrument_report(ctx: Context, payload: dict) -> dict:
    n = _timing["n"] or 1
    return {"handle_us": _timing["handle"] / n * 1e6, "post_us": _timing["post"] / n * 1e6, "n": n}


@handler("faults", "micro")
async def micro(ctx: Context, payload: dict) -> dict:
    import json
    import time

    import js

    def bench(f, n=3000):
        for _ in range(200):
            f()
        t = time.perf_counter()
        for _ in range(n):
            f()
        return round((time.perf_counter() - t) / n * 1e6, 2)

    d = {"v": 1, "kind": "response", "id": 123, "payload": {"x": 1}}
    s = json.dumps(d)
    fn = js.Function.new("a", "b", "c", "return a")
    x = [0]

    def py_only():
        x[0] += 1

    return {
        "json.dumps": bench(lambda: json.dumps(d)),
        "json.loads": bench(lambda: json.loads(s)),
        "js fn()": bench(lambda: fn()),
        "perf_counter": bench(lambda: time.perf_counter()),
        "py_only": bench(py_only),
        "postMessage": bench(lambda: js.postMessage(json.dumps({"v": 1, "kind": "progress", "id": 999999, "done": 0, "total": 0})), 300),
    }


@handler("faults", "instrument2")
async def instrument2(ctx: Context, payload: dict) -> None:
    import time

    from workerbridge import _jsconv, _worker

    orig_m2j, orig_pm = _worker.message_to_js, _worker._post_message

    def m2j(m, t):
        a = time.perf_counter()
        r = orig_m2j(m, t)
        _timing["m2j"] = _timing.get("m2j", 0) + time.perf_counter() - a
        return r

    def pm(*args):
        a = time.perf_counter()
        orig_pm(*args)
        _timing["pm"] = _timing.get("pm", 0) + time.perf_counter() - a

    _worker.message_to_js, _worker._post_message = m2j, pm


@handler("faults", "instrument2_report")
async def instrument2_report(ctx: Context, payload: dict) -> dict:
    n = _timing["n"] or 1
    return {k: v / n * 1e6 for k, v in _timing.items() if k != "n"}
