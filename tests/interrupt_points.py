"""An interrupt taken at every point a request passes through, one run per point.

Python takes the interrupt that Pyodide's interrupt buffer raises at whatever call or
line check comes next: in the handler, in asyncio, or in the runtime's own code around
the handler. ``sys.settrace`` stands in for that check here: run N takes the interrupt
at the Nth traced event after the request arrives (raising into that frame what the
runtime's SIGINT handler raises), for every N until the request finishes first. Each run
must answer the request exactly once and leave nothing active.

Pure Python over the runtime: run on the host by ``tests/test_protocol.py`` and on a
real page's Pyodide (its own Python version, where handlers start eagerly) by
``tests/browser/test_foundation.py``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from workerbridge import handler
from workerbridge.core.shared import LocalCells
from workerbridge.runtime.dispatch import CONTROL_SLOTS, INTERRUPT, TARGET_SLOT, Runtime


@handler("points", "work")
async def _work(ctx: Any, payload: int) -> int:
    total = 0
    for i in range(3):
        total += i
        await asyncio.sleep(0)
    return payload + total


async def _one_run(at: int) -> tuple[bool, list[str]]:
    """Take the interrupt at traced event ``at``; (whether it was taken, problems)."""
    posted: list[dict[str, Any]] = []
    cells = LocalCells(CONTROL_SLOTS)
    rt = Runtime(lambda m, t: posted.append(m), control=cells, isolated=True)
    cells.store(TARGET_SLOT, 5)
    cells.store(0, INTERRUPT)
    seen = 0
    taken = False

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal seen, taken
        if taken:
            return None
        if event in ("call", "line"):
            seen += 1
            if seen == at:
                taken = True
                cells.store(0, 0)  # Pyodide clears the word as it raises the signal
                rt.on_interrupt(signal.SIGINT, frame)  # may raise, into ``frame``
        return tracer

    problems = []
    undo = rt.watch_unraisable()  # as a worker does: a swallowed interrupt is re-armed
    sys.settrace(tracer)
    try:
        # What a worker's message listener calls: it must never raise (an exception
        # there is an uncaught error in the worker, which the page takes for a crash).
        rt.handle({"v": 1, "kind": "request", "id": 5, "channel": "points", "op": "work",
                   "payload": 10})
    except BaseException as exc:
        problems.append(f"event {at}: handle() raised {type(exc).__name__}")
    try:
        for _ in range(20):
            await asyncio.sleep(0)
    finally:
        sys.settrace(None)
        undo()
    answers = [m for m in posted if m.get("id") == 5]
    if len(answers) != 1:
        problems.append(f"event {at}: {len(answers)} answers")
    elif answers[0]["kind"] == "response" and answers[0]["payload"] != 13:
        problems.append(f"event {at}: wrong result {answers[0]['payload']!r}")
    if rt._active:
        problems.append(f"event {at}: still active {sorted(rt._active)}")
    return taken, problems


async def check_every_point(limit: int = 2000) -> tuple[int, list[str]]:
    """(how many points were tried, the problems found)."""
    problems: list[str] = []
    for at in range(1, limit):
        taken, found = await _one_run(at)
        problems += found
        if not taken:
            return at - 1, problems
    return limit, problems
