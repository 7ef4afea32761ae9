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


@handler("faults", "raise")
async def boom(ctx: Context, payload: dict) -> None:
    raise KeyError(payload.get("secret", "hidden-value"))


@handler("faults", "close")
async def close(ctx: Context, payload: dict) -> str:
    """Closes its own worker (js.close()) unless the flag says it already did once."""
    import js

    from workerbridge import SharedFlag

    flag = payload.get("once")
    if flag is not None:
        once = SharedFlag.from_buffer(flag)
        if once.is_set():
            return "survived"
        once.set()
    js.close()
    return "closed"


@handler("faults", "stubborn_spin")
async def stubborn_spin(ctx: Context, payload: dict) -> int:
    """A pure-Python loop that swallows the interrupt: only termination stops it."""
    n = 0
    deadline = time.monotonic() + payload.get("seconds", 30.0)
    while time.monotonic() < deadline:
        try:
            while time.monotonic() < deadline:
                n += 1
        except BaseException:  # deliberately ignores cancellation
            continue
    return n


@handler("faults", "never")
async def never(ctx: Context, payload: dict) -> None:
    """Never answers on its own (a future nobody resolves)."""
    await asyncio.get_running_loop().create_future()


@handler("faults", "busy")
async def busy(ctx: Context, payload: dict) -> str:
    """Keeps its worker busy in plain Python for payload['seconds']."""
    deadline = time.monotonic() + payload["seconds"]
    while time.monotonic() < deadline:
        pass
    return payload["tag"]


@handler("faults", "count")
async def count(ctx: Context, payload: dict) -> int:
    from workerbridge import SharedCounter

    counter = SharedCounter.from_buffer(payload["counter"])
    for _ in range(payload["n"]):
        counter.increment()
    return counter.get()


@handler("faults", "wait_flag")
async def wait_flag(ctx: Context, payload: dict) -> list:
    from workerbridge import SharedFlag

    flag = SharedFlag.from_buffer(payload["flag"])
    t0 = time.monotonic()
    woke = flag.wait(payload.get("timeout", 10.0))
    return [woke, time.monotonic() - t0]


@handler("faults", "wasm_heap")
async def wasm_heap(ctx: Context, payload: dict) -> int:
    """Bytes of WebAssembly memory this worker's Python uses (it never shrinks)."""
    import pyodide_js

    return int(pyodide_js._module.HEAP8.length)


_turns = {"n": 0}


@handler("faults", "count_turns")
async def count_turns(ctx: Context, payload: dict) -> int:
    """Start counting the callbacks this worker's event loop schedules (each is a trip
    through the browser's scheduler); returns the count so far and resets it."""
    loop = asyncio.get_running_loop()
    if not hasattr(loop, "_counted_call_soon"):
        plain = loop.call_soon

        def counted(*args, **kwargs):
            _turns["n"] += 1
            return plain(*args, **kwargs)

        loop._counted_call_soon = plain
        loop.call_soon = counted
    n, _turns["n"] = _turns["n"], 0
    return n


@handler("faults", "steps")
async def steps(ctx: Context, payload: dict) -> int:
    """Pure-Python work in small steps with a cancellation checkpoint between them (what a
    well-behaved long handler does); returns the number of steps taken."""
    total = payload["steps"]
    ctx.set_total(total)
    acc = 0
    for i in range(total):
        for j in range(2_000):
            acc = (acc * 31 + j) % 1_000_003
        ctx.progress(i + 1)
        await ctx.checkpoint()
    return total


@handler("faults", "shared_init")
async def shared_init(ctx: Context, payload: dict) -> list:
    """Shared-state objects made in the worker with initial values (positional and
    keyword), and what the worker reads from the page's, when their buffers came along."""
    from workerbridge import SharedCounter, SharedFlag, SharedProgress

    made = [SharedCounter(7).get(), SharedCounter(initial=-2).get(), SharedFlag(True).is_set(),
            SharedFlag(initial=False).is_set(), SharedProgress(9).get().total,
            SharedProgress(total=4).get().total]
    seen = None
    if payload.get("counter") is not None:
        seen = [SharedCounter.from_buffer(payload["counter"]).get(),
                SharedFlag.from_buffer(payload["flag"]).is_set(),
                SharedProgress.from_buffer(payload["progress"]).get().total]
    return [made, seen]


@handler("faults", "deep_result")
async def deep_result(ctx: Context, payload: int) -> object:
    """A JS object nested ``payload`` deep: more than the page can convert."""
    import js

    value = js.Object.new()
    for _ in range(payload):
        outer = js.Object.new()
        outer.inner = value
        value = outer
    return value
