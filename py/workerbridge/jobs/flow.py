"""Workflows written as code: ``@workflow("name") async def wf(w, data): ...``.

The function runs in a worker, as a job, and is replayed from its start each time it
goes on (durable execution): ``await w.step(name, handler, data)`` returns the step's
stored result when the step is done, and otherwise stops the run there and asks the page
to run that step as a job of its own; ``await w.sleep(seconds)`` stops it the same way
and asks to be run again once the time has passed. The page stores each step's result in
the transaction that ends the step (``store.complete``), beside the workflow, and then
adds the next run of the function: so after a reload or a crash the workflow goes on at
its first unfinished step and a finished step never runs again.

The function must therefore call the same steps in the same order each time it runs on
the same results (no clock, no randomness between steps: put those in a step).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError, WorkflowError
from workerbridge.jobs.policy import Backoff, Retry
from workerbridge.jobs.store import JobSpec
from workerbridge.runtime.dispatch import Context, handler

CHANNEL = "workflow"  # a code workflow NAME is the handler "workflow.NAME" in the workers
NAME = re.compile(r"[A-Za-z_][\w-]*")
Body = Callable[["Flow", Any], Awaitable[Any]]


class _Suspend(BaseException):
    """Raised out of ``w.step`` / ``w.sleep`` to end this run of the function there (a
    BaseException, so that a handler's ``except Exception`` does not swallow it)."""

    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__("suspend")
        self.request = request


def retry_fields(retry: Retry | None) -> tuple[int, Backoff]:
    """A step's attempts and backoff from its ``Retry`` (one attempt when None)."""
    if retry is not None and not isinstance(retry, Retry):
        raise InvalidTypeError("a step's retry is a Retry(...)")
    retry = retry or Retry(1)
    delay = retry.delay
    backoff = delay if isinstance(delay, Backoff) else Backoff() if delay is None \
        else Backoff(base=float(delay), factor=1.0, max=float(delay), jitter=False)
    return retry.attempts, backoff


class Flow:
    """What a code workflow gets as ``w``: its id, and ``step`` / ``sleep``."""

    def __init__(self, workflow_id: str, done: Sequence[dict[str, Any]]) -> None:
        self.id = workflow_id
        self._done = list(done)
        self._next = 0

    def _checkpoint(self, kind: str, name: str) -> dict[str, Any] | None:
        index = self._next
        self._next += 1
        if index >= len(self._done):
            return None
        seen = self._done[index]
        if seen.get("kind") != kind or seen.get("name") != name:
            raise WorkflowError(
                f"workflow {self.id[:60]!r}: at checkpoint {index} it called "
                f"{kind} {name[:60]!r}, where its last run called {seen.get('kind')} "
                f"{str(seen.get('name'))[:60]!r}; a workflow must call the same steps in "
                "the same order every time it runs")
        return seen

    async def step(self, name: str, handler_name: str, data: Any = None, *,
                   retry: Retry | None = None, timeout: float | None = None) -> Any:
        """Run the handler ``handler_name`` ("channel.op") on ``data`` as the step
        ``name``, once: its result, stored. ``retry``: its retry policy."""
        if not isinstance(name, str) or not name:
            raise InvalidInputError("a step's name is a non-empty string")
        seen = self._checkpoint("step", name)
        if seen is not None:
            return seen.get("result")
        attempts, backoff = retry_fields(retry)
        # Checked here, in the body, so that a bad step fails the workflow with the
        # error of the line that asked for it.
        JobSpec("step", handler_name, data, None, 0, 0.0, attempts, backoff, timeout)
        raise _Suspend({"kind": "step", "name": name, "handler": handler_name,
                        "payload": data, "attempts": attempts,
                        "backoff": {"base": backoff.base, "factor": backoff.factor,
                                    "max": backoff.max, "jitter": backoff.jitter},
                        "timeout": timeout})

    async def sleep(self, seconds: float, name: str = "sleep") -> None:
        """Wait ``seconds``, durably: through reloads and while no tab is open (the
        workflow goes on at the first claim after the time has passed)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not math.isfinite(seconds) or seconds < 0:
            raise InvalidInputError(f"sleep takes seconds ≥ 0, not {seconds!r}")
        if self._checkpoint("sleep", name) is not None:
            return
        raise _Suspend({"kind": "sleep", "name": name, "seconds": float(seconds)})


async def replay(body: Body, workflow_id: str, data: Any,
                 done: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` on the checkpoints so far: ``{"kind": "done", "result": ...}`` when it
    returned, else the step or sleep it stopped at."""
    try:
        result = await body(Flow(workflow_id, done), data)
    except _Suspend as stop:
        return stop.request
    return {"kind": "done", "result": result}


def workflow(name: str) -> Callable[[Body], Body]:
    """Register ``async def fn(w, data)`` as the code workflow ``name`` in this worker
    module; the page declares it with ``jobs.workflow(name)`` and starts it with
    ``jobs.start_workflow(name, data)``."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInputError(f"a workflow name is an identifier (dashes allowed), not "
                                f"{name!r}")

    def register(body: Body) -> Body:
        async def drive(ctx: Context, payload: Any) -> dict[str, Any]:
            if ctx.job is None or not isinstance(payload, dict) or "done" not in payload:
                raise InvalidInputError(f"workflow {name!r} runs through "
                                        "jobs.start_workflow(), not as a call")
            return await replay(body, str(payload["id"]), payload.get("input"),
                                payload["done"])

        handler(CHANNEL, name)(drive)
        return body

    return register
