"""A fleet worker: one CPython process running the registered handlers as taskiq tasks.

    python -m workerbridge.fleet worker [--broker URL] [--module my_handlers] ...

The same ``@handler`` modules as the browser's workers run here unchanged: one generic
task, ``workerbridge.run``, looks the handler up in the registry. Its ``Context`` reports
progress through taskiq's progress API (throttled to ~30 reports a second) and stops at
the next ``checkpoint()`` or ``await`` when the caller cancels: a cancel on the fanout
exchange cancels the handler's task and sets its flag, and the worker goes on serving.
Channels that only a browser has (storage, ICE, the browser's job runner) refuse with
``UnsupportedError``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
from taskiq import Context as TaskiqContext
from taskiq import TaskiqDepends
from taskiq.api import run_receiver_task
from taskiq.depends.progress_tracker import TaskProgress, TaskState

from workerbridge.core.errors import UnknownOperationError, UnsupportedError
from workerbridge.core.shared import POLL_INTERVAL
from workerbridge.fleet.broker import (
    CANCELS,
    HEALTH_KEY,
    TASK,
    Events,
    FleetBackend,
    make_broker,
)
from workerbridge.runtime.dispatch import Context, JobInfo, RunState, lookup, registered_ops

log = logging.getLogger("workerbridge.fleet")

BUILT_IN = ("crypto", "file", "compression")
# Channels whose work needs a browser: they refuse here, with a reason.
BROWSER_ONLY = {
    "storage": "storage keeps its data in the browser's IndexedDB",
    "subscriptions": "subscriptions are the browser's own BroadcastChannel",
    "outbox": "an outbox drains a browser's IndexedDB",
    "jobs": "the browser's job runner runs in a browser (use the fleet's own jobs)",
    "network": "the network probes measure the browser's connection (fetch, ICE)",
}
HEARTBEAT = 1.0  # seconds between a worker's "alive" events


def load_modules(modules: list[str]) -> None:
    """Import the built-in handler modules and the user's (dotted names or .py paths)."""
    for name in BUILT_IN:
        importlib.import_module(f"workerbridge.workers.{name}")
    for module in modules:
        if module.endswith(".py"):
            path = Path(module).resolve()
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise SystemExit(f"cannot load handler module {module}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = mod
            spec.loader.exec_module(mod)
        else:
            importlib.import_module(module)


def fleet_ops() -> list[str]:
    """The operations a fleet worker serves: every registered one but the browser's."""
    return [op for op in registered_ops() if op.split(".", 1)[0] not in BROWSER_ONLY]


class _Runtime:
    """What a Context asks of its runtime, on a server: no shared buffers to read."""

    def interrupt_pending(self, rid: int) -> bool:
        return False


class FleetContext(Context):
    """A handler's ``ctx`` on a fleet worker: progress through taskiq, cancel by the flag."""

    __slots__ = ("_report",)

    def __init__(self, rid: int, channel: str, op: str, state: RunState,
                 report: Any, wants: bool, job: JobInfo | None) -> None:
        super().__init__(rid, channel, op, False, _Runtime(), state,  # type: ignore[arg-type]
                         job=job)
        self._progress_messages = wants
        self._report = report

    def progress(self, done: int, total: int | None = None, *, last: bool = False) -> None:
        if total is not None:
            self._total = total
        if not self._progress_messages:
            return
        now = time.monotonic()
        if last or now - self._last_sent >= POLL_INTERVAL:
            self._last_sent = now
            self._report(done, self._total)

    def hand_over(self, buffer: Any) -> Any:
        return bytes(buffer)

    async def install(self, *requirements: str) -> list[str]:
        raise UnsupportedError("a fleet worker installs its packages with pip, not at run time")


class FleetWorker:
    """The state of one worker process: the tasks it runs, its counters, its cancels."""

    def __init__(self, broker_url: str | None = None, name: str | None = None,
                 concurrency: int = 100) -> None:
        self.name = name or f"worker-{os.getpid()}"
        self.events = Events(broker_url)
        self.backend = FleetBackend(self.events, self.name)
        self.broker = make_broker(broker_url, worker=True, backend=self.backend,
                                  prefetch=concurrency)  # as many as may run at once
        self.running: dict[str, tuple[asyncio.Task[Any], RunState]] = {}
        self.cancelled_ids: dict[str, float] = {}  # cancels that came before their job
        self.served = 0
        self.cancelled = 0
        self._reports: set[asyncio.Task[Any]] = set()
        serve = self.run

        async def run(call: dict[str, Any],
                      context: TaskiqContext = TaskiqDepends()) -> Any:  # noqa: B008
            return await serve(call, context)

        self.broker.register_task(run, task_name=TASK)

    async def run(self, call: dict[str, Any], context: TaskiqContext) -> Any:
        """The one task: run the registered handler ``call`` names."""
        message = context.message
        labels = message.labels
        task_id = message.task_id
        channel, op = str(call.get("channel", "")), str(call.get("op", ""))
        if channel in BROWSER_ONLY:
            raise UnsupportedError(f"{channel}.{op[:40]} runs only in a browser: "
                                   f"{BROWSER_ONLY[channel]}")
        fn = lookup(channel, op)
        if fn is None:
            raise UnknownOperationError(f"no handler for {channel[:40]}.{op[:40]}")
        if self.cancelled_ids.pop(task_id, None) is not None:
            raise asyncio.CancelledError()
        job = None
        if "job" in labels:
            job = JobInfo(str(labels["job"]), str(call.get("queue", "")),
                          int(labels.get("_retries", 0)) + 1)
        state = RunState()

        def report(done: int, total: int) -> None:
            progress = TaskProgress(state=TaskState.STARTED, meta={
                "done": done, "total": total, "labels": labels})
            task = asyncio.ensure_future(self.backend.set_progress(task_id, progress))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)

        ctx = FleetContext(int(labels.get("rid", 0)), channel, op, state, report,
                           bool(int(labels.get("progress", 0))), job)
        if job is not None or ctx._progress_messages:  # who listens for a start
            await self.backend.event(labels, {"kind": "started", "task": task_id,
                                              "attempt": job.attempt if job else 1},
                                     confirm=False)
        inner = asyncio.ensure_future(fn(ctx, call.get("payload")))
        self.running[task_id] = (inner, state)
        try:
            return await inner
        except asyncio.CancelledError:
            if not state.cancelled:
                raise  # the worker itself is stopping
            self.cancelled += 1
            from workerbridge.core.errors import CancelledError

            raise CancelledError("cancelled by the caller") from None
        finally:
            self.served += 1
            self.running.pop(task_id, None)

    def cancel(self, task_id: str) -> None:
        found = self.running.get(task_id)
        if found is None:
            now = time.monotonic()
            self.cancelled_ids[task_id] = now
            for old, at in list(self.cancelled_ids.items()):  # a bounded memory of cancels
                if now - at > 3600 or len(self.cancelled_ids) > 10_000:
                    self.cancelled_ids.pop(old, None)
            return
        task, state = found
        state.cancelled = True
        task.cancel()

    async def listen_cancels(self) -> None:
        channel = await self.events.connection.channel()
        exchange = await channel.declare_exchange(CANCELS, aio_pika.ExchangeType.FANOUT)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                self.cancel(message.body.decode(errors="replace"))

    async def heartbeat(self) -> None:
        while True:
            await self.events.publish(HEALTH_KEY, {
                "kind": "alive", "worker": self.name, "pid": os.getpid(),
                "served": self.served, "cancelled": self.cancelled,
                "running": len(self.running), "at": time.time()}, confirm=False)
            await asyncio.sleep(HEARTBEAT)

    async def serve(self, concurrency: int = 100) -> None:
        await self.broker.startup()
        background = [asyncio.ensure_future(self.listen_cancels()),
                      asyncio.ensure_future(self.heartbeat())]
        log.info("%s serving %d operations", self.name, len(fleet_ops()))
        try:
            await run_receiver_task(self.broker, max_async_tasks=concurrency)
        finally:
            for task in background:
                task.cancel()
            await self.broker.shutdown()


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workerbridge.fleet worker")
    parser.add_argument("--broker", default=None, help="AMQP URL (WORKERBRIDGE_BROKER)")
    parser.add_argument("--module", action="append", default=[],
                        help="a handler module to load (dotted name or .py path)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--concurrency", type=int, default=100,
                        help="jobs one worker runs at once (and takes from the broker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    load_modules(args.module)
    worker = FleetWorker(args.broker, args.name, args.concurrency)
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(worker.serve(args.concurrency))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
