"""``bridge.jobs`` on a remote bridge: the fleet's durable queue behind the same calls.

``add`` / ``get`` / ``Job.result`` / ``Job.cancel`` / ``schedule`` / ``schedule_once`` /
``unschedule`` / ``schedules`` / ``list`` / ``recovery`` work as on the browser's queue,
mapped onto taskiq: a job is a persistent message in RabbitMQ, its delay taskiq's delay
queue, its retries taskiq's retry middleware deciding by the same policy, a cron schedule
taskiq's scheduler. What has no engine equivalent yet (workflows, pipelines, outboxes,
per-queue concurrency, groups, priorities, events) raises ``UnsupportedError``.
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from workerbridge.core.errors import (
    CancelledError,
    InvalidInputError,
    InvalidTypeError,
    UnsupportedError,
)
from workerbridge.jobs.policy import Backoff, Fail, RecoveryKey, Rule, recovery_table

if TYPE_CHECKING:
    from workerbridge.bridge import WorkerBridge

WAIT_SLICE = 20.0  # seconds one wait request may hold at the gateway


def _unsupported(what: str) -> NoReturn:
    raise UnsupportedError(f"{what} has no fleet equivalent yet: run it on a local bridge "
                           "(docs/fleet.md)")


class RemoteJob:
    """A handle on one job of the fleet; valid from any page, and after a reload."""

    def __init__(self, jobs: RemoteJobs, job_id: str) -> None:
        self._jobs = jobs
        self.id = job_id

    def __repr__(self) -> str:
        return f"RemoteJob({self.id!r})"

    async def status(self) -> dict[str, Any] | None:
        """The job without its payload and result (None if there is none)."""
        return await self._jobs._call("jobs.get", {"id": self.id})  # type: ignore[no-any-return]

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to end: its result, or its error raised (as on the browser's
        queue); ``CancelledError`` if it was cancelled, ``TimeoutError`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_SLICE if deadline is None else min(WAIT_SLICE,
                                                          max(0.0, deadline - time.monotonic()))
            record = await self._jobs._call("jobs.wait", {"id": self.id, "timeout": left},
                                            timeout=left + 30)
            if record is None:
                raise InvalidInputError(f"no job {self.id[:60]!r}")
            state = record["state"]
            if state == "completed":
                return record["result"]
            if state == "failed":
                from workerbridge.jobs.engine import error_of

                raise error_of(record.get("error") or {})
            if state == "cancelled":
                raise CancelledError(f"job {self.id[:60]!r} was cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id[:60]!r} did not end within {timeout} s")

    async def cancel(self) -> bool:
        """Cancel the job: a waiting one never runs, a running one stops at its next
        ``await`` or ``checkpoint()``. False if it had already ended."""
        return bool(await self._jobs._call("jobs.cancel", {"id": self.id}))

    async def retry(self) -> bool:
        _unsupported("Job.retry() of an ended job")

    async def remove(self) -> bool:
        _unsupported("Job.remove()")


class RemoteJobs:
    """The fleet's jobs, from a page or a CPython client."""

    def __init__(self, bridge: WorkerBridge) -> None:
        self._bridge = bridge
        self._recovery: dict[str | None, dict[str, Rule]] = {}

    async def _call(self, op: str, payload: Any, timeout: float | None = None) -> Any:
        return await self._bridge.request("fleet", op, payload, timeout=timeout)

    # --- adding ------------------------------------------------------------------------------

    async def queue(self, name: str, *, concurrency: int | None = None,
                    group_concurrency: int | None = None,
                    rate_limit: tuple[int, float] | None = None,
                    remove_on_complete: Any = None, remove_on_fail: Any = None) -> None:
        """Queues need no declaring on the fleet: every worker serves every queue. Limits
        have no equivalent yet."""
        if not isinstance(name, str) or not name:
            raise InvalidInputError("a queue name is a non-empty string")
        if any(v is not None for v in (concurrency, group_concurrency, rate_limit,
                                       remove_on_complete, remove_on_fail)):
            _unsupported("a queue's concurrency, rate limit or retention")

    def recovery(self, rules: Mapping[RecoveryKey, Rule], queue: str | None = None) -> None:
        """What to do by error type, as on the browser's queue; sent with each job added."""
        self._recovery[queue] = recovery_table(rules)

    def _rules(self, queue: str) -> dict[str, Any] | None:
        merged = {**self._recovery.get(None, {}), **self._recovery.get(queue, {})}
        if not merged:
            return None
        out: dict[str, Any] = {}
        for name, rule in merged.items():
            if isinstance(rule, Fail):
                out[name] = {"fail": True}
            else:
                delay = rule.delay
                out[name] = {"attempts": rule.attempts,
                             "delay": asdict(delay) if isinstance(delay, Backoff) else delay}
        return out

    async def add(self, queue: str, handler: str, payload: Any = None, *,
                  job_id: str | None = None, priority: int = 0, delay: float = 0.0,
                  attempts: int = 1, backoff: Backoff | None = None,
                  timeout: float | None = None, group: str | None = None) -> RemoteJob:
        """Send a job to the fleet; returns once RabbitMQ holds it (a persistent message,
        confirmed). ``job_id``: adding an existing id returns that job."""
        if backoff is not None and not isinstance(backoff, Backoff):
            raise InvalidTypeError("backoff must be a Backoff(...)")
        options = {"queue": queue, "handler": handler, "payload": payload, "job_id": job_id,
                   "priority": priority, "delay": delay, "attempts": attempts,
                   "backoff": asdict(backoff) if backoff is not None else None,
                   "timeout": timeout, "group": group,
                   "recovery": self._rules(queue) if isinstance(queue, str) else None}
        added = await self._call("jobs.add", {k: v for k, v in options.items()
                                              if v is not None})
        return RemoteJob(self, added["id"])

    async def add_bulk(self, jobs: Sequence[Mapping[str, Any]]) -> list[RemoteJob]:
        """Many jobs, one after another (each confirmed)."""
        out = []
        for options in jobs:
            if not isinstance(options, Mapping):
                raise InvalidTypeError("add_bulk wants a list of dicts of add()'s arguments")
            opts = dict(options)
            out.append(await self.add(opts.pop("queue", ""), opts.pop("handler", ""),
                                      opts.pop("payload", None), **opts))
        return out

    def handle(self, job_id: str) -> RemoteJob:
        return RemoteJob(self, job_id)

    async def get(self, job_id: str) -> RemoteJob | None:
        found = await self._call("jobs.get", {"id": job_id})
        return RemoteJob(self, job_id) if found is not None else None

    async def list(self, queue: str | None = None, state: str | None = None,
                   limit: int | None = None) -> builtins.list[dict[str, Any]]:
        return await self._call("jobs.list",  # type: ignore[no-any-return]
                                {"queue": queue, "state": state, "limit": limit})

    # --- schedules ---------------------------------------------------------------------------

    async def schedule(self, name: str, *, cron: str, handler: str, queue: str,
                       payload: Any = None, tz: str = "UTC", catch_up: str = "skip",
                       attempts: int = 1, timeout: float | None = None,
                       **unsupported: Any) -> dict[str, Any]:
        """A job at every run of ``cron`` (5 fields) in ``tz``, by taskiq's scheduler in the
        gateway. Missed runs are skipped (taskiq does not catch up)."""
        if unsupported:
            _unsupported(f"schedule option {sorted(unsupported)[0]!r}")
        return await self._call("jobs.schedule", {  # type: ignore[no-any-return]
            "name": name, "cron": cron, "handler": handler, "queue": queue,
            "payload": payload, "tz": tz, "catch_up": catch_up, "attempts": attempts,
            "timeout": timeout})

    async def schedule_once(self, name: str, *, at: datetime | float, handler: str,
                            queue: str, payload: Any = None, attempts: int = 1,
                            timeout: float | None = None, **unsupported: Any
                            ) -> dict[str, Any]:
        """One job at ``at`` (an aware datetime, or seconds from now)."""
        if unsupported:
            _unsupported(f"schedule option {sorted(unsupported)[0]!r}")
        if isinstance(at, datetime):
            if at.tzinfo is None:
                raise InvalidInputError("at must be an aware datetime (with a time zone)")
            when = at.timestamp()
        elif isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at) \
                and at >= 0:
            when = time.time() + float(at)
        else:
            raise InvalidInputError(f"at must be a datetime or seconds ≥ 0, not {at!r}")
        return await self._call("jobs.schedule", {  # type: ignore[no-any-return]
            "name": name, "at": when, "handler": handler, "queue": queue,
            "payload": payload, "attempts": attempts, "timeout": timeout})

    async def unschedule(self, name: str) -> bool:
        return bool(await self._call("jobs.unschedule", {"name": name}))

    async def schedules(self) -> builtins.list[dict[str, Any]]:
        return await self._call("jobs.schedules", {})  # type: ignore[no-any-return]

    # --- what has no equivalent yet ------------------------------------------------------------

    def workflow(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("a workflow")

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("a workflow")

    async def pipeline(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("a pipeline")

    async def outbox(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("an outbox")

    def on(self, *args: Any, **kwargs: Any) -> None:
        _unsupported("job events (on)")

    async def metrics(self) -> dict[str, Any]:
        health = await self._call("health", {})
        return {"jobs": health.get("jobs", {}), "workers": len(health.get("workers", []))}

    async def close(self, timeout: float = 10.0) -> None:
        pass


__all__ = ["RemoteJob", "RemoteJobs"]
