"""Durable jobs on the page: ``bridge.jobs``.

The page writes the job store (``jobs.store``) itself, in IndexedDB, one transaction per
operation; the work runs in the pool's workers through ordinary ``@handler``s (the
``jobs.run`` op calls the job's handler with ``ctx.job`` set). While a tab has declared a
queue it claims that queue's jobs: a claim is one transaction that leases the jobs to
this tab, which renews the leases while they run and ends each job in the transaction
that stores its result. A job whose tab went away is taken again once its lease ends; a
job whose worker crashed is put back at once.

What each call guarantees is in docs/jobs.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workerbridge.core.errors import (
    CancelledError,
    InvalidInputError,
    InvalidTypeError,
    PackageError,
    RemoteError,
    StorageError,
    UnknownOperationError,
    UnsupportedError,
    WorkerBridgeError,
    WorkerCrashedError,
    error_from_code,
    known_codes,
)
from workerbridge.core.platform import IN_PYODIDE, in_worker
from workerbridge.core.shared import ByMessage, ProgressInfo
from workerbridge.jobs import store
from workerbridge.jobs.claims import QueueLimits
from workerbridge.jobs.flow import CHANNEL, retry_fields
from workerbridge.jobs.graph import Stage
from workerbridge.jobs.outbox import Outbox
from workerbridge.jobs.pipeline import Pipeline
from workerbridge.jobs.policy import (
    Backoff,
    RecoveryKey,
    Retry,
    Rule,
    recovery_table,
    type_names,
)
from workerbridge.jobs.schedule import CatchUp, check_catch_up, check_cron, first_run, zone
from workerbridge.jobs.store import JobSpec
from workerbridge.pool.workerpool import WorkerPool
from workerbridge.storage.txn import Program

log = logging.getLogger("workerbridge.jobs")

DEFAULT_DB = "workerbridge-jobs"
EVENTS = ("added", "active", "progress", "completed", "failed", "retrying", "stalled",
          "workflow_completed", "workflow_failed")
WAKE = ("added", "completed", "failed", "stalled")  # events after which a claim may find work
ENDED = ("completed", "failed", "workflow_completed", "workflow_failed")
GATHER = 0.005  # seconds a completing transaction waits for more results to end with it
FIRE_EVERY = 0.5  # seconds between looks for due schedule runs (at most this late)
PROGRESS_EVERY = 0.5  # seconds between stored progress reports of one job
Listener = Callable[[dict[str, Any]], Any]
MAX_STALLS = 5  # a job whose worker crashed this often fails instead of running again


class Job:
    """A handle on one stored job; valid in any tab and after a reload."""

    def __init__(self, jobs: Jobs, job_id: str) -> None:
        self._jobs = jobs
        self.id = job_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    async def status(self) -> dict[str, Any] | None:
        """The stored job without its payload and result (None once removed): state,
        attempt, attempts, error, history, timestamps."""
        record = await self._jobs._record(self.id)
        if record is None:
            return None
        return {k: v for k, v in record.items() if k not in ("payload", "result")}

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to end; its result, or its error raised (the workerbridge
        error it failed with, else ``RemoteError`` naming the handler's exception type);
        ``CancelledError`` if it was cancelled."""
        return await _until_ended(lambda: self._jobs._record(self.id), f"job {self.id[:60]!r}",
                                  timeout, lambda wait: self._jobs._ended(self.id, wait),
                                  self._jobs.poll)

    async def cancel(self) -> bool:
        """Cancel the job; a run in this tab is stopped through the usual cancel path (a
        run in another tab stops when that tab next renews its lease). False if it had
        already ended."""
        return await self._jobs._cancel(self.id)

    async def retry(self) -> bool:
        """Run a failed or cancelled job again, with its attempts afresh."""
        done = bool(await self._jobs._tx(store.retry(self.id, self._jobs.clock())))
        self._jobs._kick()
        return done

    async def remove(self) -> bool:
        """Delete the job (not while it runs: cancel it first)."""
        return bool(await self._jobs._tx(store.remove(self.id)))


async def _until_ended(load: Callable[[], Awaitable[dict[str, Any] | None]], what: str,
                       timeout: float | None, wait: Callable[[float], Awaitable[Any]],
                       poll: float) -> Any:
    """Read a job or workflow until it ends: its result, or its error raised."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = await load()
        if record is None:
            raise InvalidInputError(f"no {what} (removed?)")
        if record["state"] == "completed":
            return record["result"]
        if record["state"] == "failed":
            raise error_of(record.get("error") or {})
        if record["state"] == "cancelled":
            raise CancelledError(f"{what} was cancelled")
        pause = poll
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what} did not end within {timeout} s")
            pause = min(pause, left)
        await wait(pause)


def error_of(error: Mapping[str, Any]) -> WorkerBridgeError:
    """The exception a failed job raises from ``result()``."""
    types = list(error.get("types") or [])
    message = str(error.get("message") or "the job failed")
    from workerbridge.core import errors as module

    for name in types:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, WorkerBridgeError) \
                and cls.code in known_codes() and cls is not RemoteError:
            return error_from_code(cls.code, message)
    return RemoteError(message, types[0] if types else "Exception")


async def need_cron() -> None:
    """Make cronsim and the time zone database importable: on the page they are loaded,
    once, from the bundle (which always carries them)."""
    try:
        import cronsim  # noqa: F401

        zone("Europe/Paris")
        return
    except (ImportError, InvalidInputError):
        pass
    from workerbridge.core.platform import IN_PYODIDE

    if not IN_PYODIDE:
        raise UnsupportedError("schedules need cronsim and tzdata (pip install cronsim tzdata)")
    from workerbridge.runtime.packages import load_from_bundle

    errors = await load_from_bundle(["cronsim", "tzdata"])
    if errors:
        raise PackageError(f"schedules need cronsim and tzdata from the bundle: {errors[0]}")


def _retention(option: int | Mapping[str, float] | None) -> tuple[int | None, float | None]:
    """``remove_on_complete`` / ``remove_on_fail`` as (keep, max_age)."""
    if option is None:
        return None, None
    if isinstance(option, int) and not isinstance(option, bool):
        if option < 0:
            raise InvalidInputError("a count of jobs to keep is ≥ 0")
        return option, None
    if isinstance(option, Mapping) and option and set(option) <= {"count", "age"}:
        count, age = option.get("count"), option.get("age")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise InvalidInputError("count must be an int ≥ 0")
        if age is not None and (isinstance(age, bool) or not isinstance(age, int | float)
                                or not math.isfinite(age) or age < 0):
            raise InvalidInputError("age must be seconds ≥ 0")
        return count, None if age is None else float(age)
    raise InvalidTypeError("remove_on_complete / remove_on_fail take a count, or "
                           "{'count': n, 'age': seconds}")


def _for_workflow(name: str, callback: Listener) -> Listener:
    def filtered(event: dict[str, Any]) -> Any:
        return callback(event) if event.get("workflow") == name else None

    return filtered


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > store.MAX_ID:
        raise InvalidInputError("a schedule name is a non-empty string")


def _described(record: dict[str, Any]) -> dict[str, Any]:
    def iso(ts: float | None) -> str | None:
        return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()

    return {"name": record["name"], "kind": record["kind"], "cron": record["cron"],
            "tz": record["tz"], "catch_up": record["catch_up"], "queue": record["queue"],
            "handler": record["handler"], "next_run": iso(record["next_run"]),
            "last_run": iso(record["last_run"]), "fired": record["fired"],
            "dropped": record["dropped"]}


@dataclass(frozen=True, slots=True)
class Step:
    """A step of a declarative workflow: ``handler`` ("channel.op") gets the previous
    step's result (the first step, the workflow's input); ``retry``: its retry policy."""

    name: str
    handler: str
    retry: Retry | None = None
    timeout: float | None = None

    def spec(self) -> store.StepSpec:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInputError("a step's name is a non-empty string")
        attempts, backoff = retry_fields(self.retry)
        return store.StepSpec(self.name, self.handler, attempts, backoff, self.timeout)


class Workflow:
    """A handle on one stored workflow; valid in any tab and after a reload."""

    def __init__(self, jobs: Jobs, wf_id: str) -> None:
        self._jobs = jobs
        self.id = wf_id

    def __repr__(self) -> str:
        return f"Workflow({self.id!r})"

    async def status(self) -> dict[str, Any] | None:
        """Its state ("running", "completed", "failed", "cancelled") and each step's
        (``pending``, ``done``, ``failed``, ``cancelled``; the running step's job state
        as ``job``)."""
        wf = await self._jobs._tx(store.get_workflow(self.id), "readonly")
        if wf is None:
            return None
        steps = []
        for i, step in enumerate(wf["steps"]):
            entry = {"name": step["name"], "state": step["state"],
                     "kind": step.get("kind", "step")}
            if i == wf["current"] and wf["state"] == "running":
                job = await self._jobs._record(f"workflow:{self.id}:{i}")
                entry["job"] = None if job is None else job["state"]
                entry["attempt"] = None if job is None else job["attempt"]
            steps.append(entry)
        return {"id": wf["id"], "name": wf["name"], "state": wf["state"], "steps": steps}

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to end: its last step's result, or the failed step's
        error raised (``CancelledError`` if a step was cancelled)."""
        return await _until_ended(
            lambda: self._jobs._tx(store.get_workflow(self.id), "readonly"),
            f"workflow {self.id[:60]!r}", timeout,
            lambda wait: self._jobs._ended(self.id, wait), self._jobs.poll)


class Jobs:
    """The job queues of one IndexedDB database, and this tab's share of running them."""

    def __init__(self, pool: WorkerPool, *, db: str = DEFAULT_DB, lease: float = 5.0,
                 poll: float = 0.2, capacity: int | None = None,
                 clock: Callable[[], float] = time.time, max_stalls: int = MAX_STALLS) -> None:
        """``lease``: seconds a claim holds a job without renewal (renewed every third
        of it); ``poll``: seconds between claims when nothing wakes the loop;
        ``capacity``: jobs this tab runs at once (default: the pool's size);
        ``max_stalls``: runs of one job that may end without an answer (a crashed
        worker) before it fails."""
        if not isinstance(db, str) or not db:
            raise InvalidInputError("db must be a database name")
        for name, value in (("lease", lease), ("poll", poll)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value <= 0:
                raise InvalidInputError(f"{name} must be seconds > 0, not {value!r}")
        self.pool = pool
        self.db_name = db
        self.lease = float(lease)
        self.poll = float(poll)
        self.capacity = capacity
        self.clock = clock
        self.max_stalls = max_stalls
        self.owner = secrets.token_hex(8)
        self._queues: dict[str, QueueLimits] = {}
        self._recovery: dict[str | None, dict[str, Rule]] = {}
        self._db: Any = None
        self._running: dict[str, asyncio.Future[Any]] = {}
        self._wake = asyncio.Event()
        self._done: dict[str, asyncio.Event] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fire_task: asyncio.Task[None] | None = None
        self.fired: list[tuple[str, str]] = []  # (schedule, run) this tab fired
        self._listeners: dict[str, list[Listener]] = {}
        self._channel: Any = None
        self._channel_proxy: Any = None
        self._retention: dict[tuple[str, str], tuple[int | None, float | None]] = {}
        self._progress_at: dict[str, float] = {}
        self._workflows: dict[str, tuple[str, list[store.StepSpec] | None]] = {}
        self._migrated = False
        self._pruning: set[tuple[str, str]] = set()
        self._lifecycle: Any = None
        # Results waiting for the next completing transaction, and the task running it.
        self._completions: list[tuple[dict[str, Any], Any]] = []
        self._completer: asyncio.Task[None] | None = None
        self._gathered: asyncio.Event | None = None  # while a completion waits for more
        self._outboxes: dict[str, Outbox] = {}
        self._pools: dict[str, WorkerPool] = {}  # queues that run in a pool of their own
        self._outgoing: list[dict[str, Any]] = []  # events for the other tabs, this turn

    # --- the store -------------------------------------------------------------------------

    async def _open(self) -> Any:
        if self._db is None or self._db.closed:
            from workerbridge.storage.idb import open_database
            from workerbridge.storage.schema import BLOCKED_TIMEOUT, normalize_schema

            db = await open_database(self.db_name, store.DB_VERSION,
                                     normalize_schema(store.SCHEMA_SPEC), BLOCKED_TIMEOUT)
            if not self._migrated:
                from workerbridge.storage.idb import run

                await run(db, store.STORES, "readwrite", store.migrate(), "the job store")
                self._migrated = True
            self._db = db
        return self._db

    async def _tx(self, program: Program, mode: str = "readwrite",
                  stores: Sequence[str] = store.STORES) -> Any:
        from workerbridge.storage.idb import run

        result, _ = await run(await self._open(), stores, mode, program, "the job store")
        return result

    async def _record(self, job_id: str) -> dict[str, Any] | None:
        (record,) = await self._tx(store.get([job_id]), "readonly")
        return record  # type: ignore[no-any-return]

    # --- declaring ---------------------------------------------------------------------------

    async def queue(self, name: str, *, concurrency: int = 1, group_concurrency: int = 1,
                    rate_limit: tuple[int, float] | None = None,
                    remove_on_complete: int | Mapping[str, float] | None = None,
                    remove_on_fail: int | Mapping[str, float] | None = None) -> None:
        """Declare (or update) a queue; this tab then runs its jobs. ``concurrency``: jobs
        of it running at once across every tab; ``group_concurrency``: per ``group`` key;
        ``rate_limit``: (jobs, seconds) started at most. ``remove_on_complete`` /
        ``remove_on_fail``: keep that many ended jobs (the newest), or ``{"count": n,
        "age": seconds}`` for either bound or both."""
        if not isinstance(name, str) or not name:
            raise InvalidInputError("a queue name is a non-empty string")
        limits = QueueLimits(concurrency, group_concurrency, rate_limit)
        for state, option in (("completed", remove_on_complete), ("failed", remove_on_fail)):
            self._retention[(name, state)] = _retention(option)
        self._queues[name] = limits
        self._ensure_running()
        self._kick()

    def recovery(self, rules: Mapping[RecoveryKey, Rule], queue: str | None = None) -> None:
        """What to do by error type: ``{KeyError: Retry(3, delay=1), "ValueError": Fail()}``,
        for one queue or (None) all; matched on the error's class and its bases."""
        self._recovery[queue] = recovery_table(rules)

    # --- adding ------------------------------------------------------------------------------

    def _spec(self, queue: str, handler: str, payload: Any, job_id: str | None,
              priority: int, delay: float, attempts: int, backoff: Backoff | None,
              timeout: float | None, group: str | None) -> JobSpec:
        return JobSpec(queue, handler, payload, job_id, priority, delay, attempts,
                       backoff if backoff is not None else Backoff(), timeout, group)

    def _check_handlers(self, specs: Sequence[JobSpec]) -> None:
        """UnknownOperationError for a handler the workers did not register (the workers'
        registry is read once per call, not once per job)."""
        ops = self._known_ops()
        for spec in specs:
            if ops is not None and spec.handler not in ops:
                raise UnknownOperationError(f"no handler {spec.handler[:80]!r} is registered "
                                            "in the workers (load its module with "
                                            "modules=[...])")

    def _known_ops(self) -> set[str] | None:
        infos = self.pool.ready_info()
        ops = infos[0].get("ops") if infos else None
        return set(ops) if isinstance(ops, list) else None

    async def add(self, queue: str, handler: str, payload: Any = None, *,
                  job_id: str | None = None, priority: int = 0, delay: float = 0.0,
                  attempts: int = 1, backoff: Backoff | None = None,
                  timeout: float | None = None, group: str | None = None) -> Job:
        """Store a job; returns once it is durable. ``handler``: "channel.op" of a
        registered handler; ``job_id``: adding an existing id returns that job."""
        await self.pool.start()
        spec = self._spec(queue, handler, payload, job_id, priority, delay, attempts,
                          backoff, timeout, group)
        self._check_handlers([spec])
        now = self.clock()
        records = await self._tx(store.add([spec], now))
        self._added(records, now)
        return Job(self, records[0]["id"])

    async def add_bulk(self, jobs: Sequence[Mapping[str, Any]]) -> list[Job]:
        """Store many jobs in one transaction: each a dict of ``add``'s arguments
        (``queue``, ``handler``, ``payload``, ``job_id``, ...)."""
        await self.pool.start()
        specs = []
        for options in jobs:
            if not isinstance(options, Mapping):
                raise InvalidTypeError("add_bulk wants a list of dicts of add()'s arguments")
            unknown = set(options) - {"queue", "handler", "payload", "job_id", "priority",
                                      "delay", "attempts", "backoff", "timeout", "group"}
            if unknown:
                raise InvalidInputError(f"add_bulk: unknown option {sorted(unknown)[0]!r}")
            specs.append(self._spec(options.get("queue", ""), options.get("handler", ""),
                                    options.get("payload"), options.get("job_id"),
                                    options.get("priority", 0), options.get("delay", 0.0),
                                    options.get("attempts", 1), options.get("backoff"),
                                    options.get("timeout"), options.get("group")))
        self._check_handlers(specs)
        now = self.clock()
        records = await self._tx(store.add(specs, now))
        self._added(records, now)
        return [Job(self, r["id"]) for r in records]

    # --- workflows ---------------------------------------------------------------------------

    def workflow(self, name: str, steps: Sequence[Step] | None = None, *,
                 concurrency: int = 4, on_success: Listener | None = None,
                 on_error: Listener | None = None) -> None:
        """Declare a workflow; this tab then runs the jobs of any workflow of that name
        (queue ``workflow:NAME``). ``on_success`` / ``on_error`` get the
        "workflow_completed" / "workflow_failed" event of each of them.

        With ``steps``: they run one after another, each on the previous one's result,
        each stored done with its result in the transaction that ends it. Without: the
        code workflow ``@workflow(name)`` of a worker module (``workerbridge.workflow``),
        whose ``w.step`` calls are stored the same way."""
        if not isinstance(name, str) or not name:
            raise InvalidInputError("a workflow name is a non-empty string")
        specs = None
        if steps is not None:
            if not isinstance(steps, Sequence) or not steps or \
                    not all(isinstance(s, Step) for s in steps):
                raise InvalidTypeError("steps must be a non-empty list of Step(...)")
            specs = [s.spec() for s in steps]
            if len({s.name for s in specs}) != len(specs):
                raise InvalidInputError("the steps of a workflow need distinct names")
        queue = f"workflow:{name}"
        self._workflows[name] = (queue, specs)
        self._queues[queue] = QueueLimits(concurrency)
        for event, callback in (("workflow_completed", on_success),
                                ("workflow_failed", on_error)):
            if callback is not None:
                self.on(event, _for_workflow(name, callback))
        self._ensure_running()
        self._kick()

    async def start_workflow(self, name: str, data: Any = None, *,
                             workflow_id: str | None = None) -> Workflow:
        """Start a declared workflow on ``data``; returns once it is stored. Starting an
        existing ``workflow_id`` again returns that workflow (also after a reload)."""
        if name not in self._workflows:
            raise InvalidInputError(f"no workflow {name[:60]!r} was declared in this tab "
                                    "(jobs.workflow(...))")
        queue, specs = self._workflows[name]
        await self.pool.start()
        ops = self._known_ops()
        if specs is None and ops is not None and f"{CHANNEL}.{name}" not in ops:
            raise UnknownOperationError(f"no @workflow({name[:60]!r}) in the workers "
                                        "(load its module with modules=[...])")
        for step in specs or ():
            if ops is not None and step.handler not in ops:
                raise UnknownOperationError(f"step {step.name[:60]!r}: no handler "
                                            f"{step.handler[:80]!r} in the workers")
        if workflow_id is not None and (not isinstance(workflow_id, str) or not workflow_id
                                        or len(workflow_id) > store.MAX_ID):
            raise InvalidInputError("workflow_id must be a non-empty string")
        wf_id = workflow_id or secrets.token_hex(12)
        now = self.clock()
        record = await self._tx(store.start_workflow(
            store.workflow_record(wf_id, name, queue, specs, data, now), now))
        self._kick()
        return Workflow(self, record["id"])

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        found = await self._tx(store.get_workflow(workflow_id), "readonly")
        return Workflow(self, workflow_id) if found is not None else None

    def _flow_ended(self, flow: dict[str, Any] | None) -> None:
        if flow is not None and flow["state"] in ("completed", "failed", "cancelled"):
            self._emit("workflow_completed" if flow["state"] == "completed"
                       else "workflow_failed", id=flow["id"], workflow=flow["name"],
                       state=flow["state"])

    # --- pipelines ---------------------------------------------------------------------------

    async def outbox(self, name: str, url: str, *, batch: int = 100,
                     headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                     backoff: Backoff | None = None) -> Outbox:
        """A durable outbox to a server (``url``: http(s) or ws(s)); this tab sends its
        events, ``batch`` at a time, in order, while it holds the outbox's lease, and
        removes each only once the server acknowledged its id (docs/pipelines.md).
        A pipeline's stage ``Stage(name, "outbox:NAME")`` appends to it."""
        from workerbridge.jobs.outbox import define

        if name in self._outboxes:
            raise InvalidInputError(f"this tab runs an outbox {name[:60]!r} already")
        box = define(self, name, url, batch=batch, headers=headers, timeout=timeout,
                     backoff=backoff)
        await self.pool.start()
        await self._open()
        self._outboxes[name] = box
        self._watch_lifecycle()
        box.start()
        return box

    async def pipeline(self, name: str, stages: Sequence[Stage],
                       branches: Mapping[str, Sequence[str]] | None = None) -> Pipeline:
        """Define (or load) a pipeline and run its stages in this tab: each stage's
        result goes to the next stage, or to every stage ``branches`` names for it
        (docs/pipelines.md)."""
        from workerbridge.jobs.pipeline import define

        return await define(self, name, stages, branches)

    # --- schedules ---------------------------------------------------------------------------

    async def schedule(self, name: str, *, cron: str, handler: str, queue: str,
                       payload: Any = None, tz: str = "UTC", catch_up: CatchUp = "skip",
                       max_catch_up: int = 100, priority: int = 0, attempts: int = 1,
                       backoff: Backoff | None = None, timeout: float | None = None,
                       group: str | None = None) -> dict[str, Any]:
        """Add a job to ``queue`` at every run of ``cron`` (5 fields, or 6 with seconds
        first) in time zone ``tz``; ``catch_up``: what to do with runs missed while no tab
        was open ("skip", "once", "all", at most ``max_catch_up``). Declaring it again
        with the same timing keeps its next run."""
        await need_cron()
        _check_name(name)
        check_cron(cron)
        zone(tz)
        check_catch_up(catch_up, max_catch_up)
        await self.pool.start()
        spec = self._spec(queue, handler, payload, None, priority, 0.0, attempts, backoff,
                          timeout, group)
        self._check_handlers([spec])
        now = self.clock()
        next_run = first_run(cron, tz, datetime.fromtimestamp(now, UTC)).timestamp()
        record = await self._tx(store.put_schedule(store.schedule_record(
            name, "cron", spec, next_run, now, cron=cron, tz=tz, catch_up=catch_up,
            max_catch_up=max_catch_up)))
        self._ensure_running()
        return _described(record)

    async def schedule_once(self, name: str, *, at: datetime | float, handler: str,
                            queue: str, payload: Any = None, catch_up: CatchUp = "once",
                            priority: int = 0, attempts: int = 1,
                            backoff: Backoff | None = None, timeout: float | None = None,
                            group: str | None = None) -> dict[str, Any]:
        """Add one job at ``at`` (an aware datetime, or seconds from now). Missed while no
        tab was open, it still runs ("once"), or is dropped ("skip")."""
        _check_name(name)
        check_catch_up(catch_up, 1)
        now = self.clock()
        if isinstance(at, datetime):
            if at.tzinfo is None:
                raise InvalidInputError("at must be an aware datetime (with a time zone)")
            when = at.timestamp()
        elif isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at) \
                and at >= 0:
            when = now + float(at)
        else:
            raise InvalidInputError(f"at must be a datetime or seconds ≥ 0, not {at!r}")
        await self.pool.start()
        spec = self._spec(queue, handler, payload, None, priority, 0.0, attempts, backoff,
                          timeout, group)
        self._check_handlers([spec])
        record = await self._tx(store.put_schedule(store.schedule_record(
            name, "once", spec, when, now, catch_up=catch_up)))
        self._ensure_running()
        return _described(record)

    async def unschedule(self, name: str) -> bool:
        """Remove a schedule; jobs it already added stay."""
        return bool(await self._tx(store.drop_schedule(name)))

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule: name, timing, next run (ISO, UTC), runs fired and dropped."""
        return [_described(r) for r in await self._tx(store.schedules(), "readonly")]

    async def _fire_loop(self) -> None:
        """Fire the schedules' due runs, in one transaction per pass (store.fire), at
        most FIRE_EVERY seconds late. A read-only look at the schedules alone comes
        first: it does not wait for, or hold up, the jobs' transactions, and without a
        due run nothing more is done (nor cronsim loaded)."""
        while not self._closing:
            try:
                rows = await self._tx(store.schedules(), "readonly", [store.SCHEDULES])
                now = self.clock()
                fired = []
                if any(r["next_run"] is not None and r["next_run"] <= now for r in rows):
                    await need_cron()
                    fired = await self._tx(store.fire(now))
            except WorkerBridgeError as exc:
                log.warning("firing schedules failed: %s", exc)
                fired = []
            for name, runs in fired:
                self.fired.extend((name, run) for run in runs)
                for run in runs:
                    self._emit("added", id=f"schedule:{name}:{run}", schedule=name)
            if any(runs for _, runs in fired):
                self._kick()
            await asyncio.sleep(max(self.poll, FIRE_EVERY))

    def handle(self, job_id: str) -> Job:
        """A handle on a job by its id, without reading it."""
        return Job(self, job_id)

    async def get(self, job_id: str) -> Job | None:
        """A handle on a stored job (None if there is none)."""
        return Job(self, job_id) if await self._record(job_id) is not None else None

    async def list(self, queue: str | None = None, state: str | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
        """Stored jobs (without payloads and results), in claim order."""
        jobs = await self._tx(store.listing(queue, state, limit), "readonly")
        return [{k: v for k, v in j.items() if k not in ("payload", "result")} for j in jobs]

    # --- running -----------------------------------------------------------------------------

    def _kick(self) -> None:
        self._wake.set()

    def _ensure_running(self) -> None:
        if self._loop_task is None and not self._closing:
            self._loop_task = asyncio.ensure_future(self._loop())
            self._renew_task = asyncio.ensure_future(self._renew_loop())
            self._fire_task = asyncio.ensure_future(self._fire_loop())
            # Another tab's "added" (or a job ending there, which frees a slot of a
            # queue's concurrency) wakes the claim loop at once, not at its next poll.
            self._open_channel()
            self._watch_lifecycle()

    def _watch_lifecycle(self) -> None:
        """Let this tab's running jobs go when it goes away or freezes (``pagehide``,
        ``freeze``): a localStorage key says so, written synchronously inside the event
        (such a page may never run a later task or callback, and an IndexedDB
        transaction begun there may wait behind one that never ends). The next claim in
        any tab, or at the next load, reads it and puts those jobs back at once instead
        of when their leases end. In a worker (an mpy page's host) there is no such event:
        its jobs come back when their leases end."""
        if not IN_PYODIDE or in_worker() or self._lifecycle is not None:
            return
        import js
        from pyodide.ffi import create_proxy

        self._lifecycle = create_proxy(lambda event: self._let_go(str(event.type)))
        js.window.addEventListener("pagehide", self._lifecycle)
        js.document.addEventListener("freeze", self._lifecycle)

    @property
    def _gone_prefix(self) -> str:
        return f"workerbridge-jobs:{self.db_name}:gone:"

    def _let_go(self, why: str) -> None:
        ids = list(self._running)
        if not ids and not self._outboxes:  # (an outbox's lease goes with the name)
            return
        import js

        with contextlib.suppress(Exception):  # storage disabled: the leases will end
            js.localStorage.setItem(self._gone_prefix + self.owner,
                                    str(self.clock() + self.lease))
        # Those runs are over here (a frozen tab may come back: it claims afresh, under a
        # new name, and its old runs' answers find their jobs taken).
        self.owner = secrets.token_hex(8)
        for ident in ids:
            future = self._running.get(ident)
            if future is not None:
                future.cancel()
        log.info("%s: %d running jobs let go", why, len(ids))

    def _gone(self) -> frozenset[str]:
        """The tabs that let their jobs go and whose leases have not all ended yet (the
        keys of those that have are removed)."""
        if not IN_PYODIDE:
            return frozenset()
        import js

        out = set()
        try:
            storage = js.localStorage
            keys = [storage.key(i) for i in range(storage.length)]
            now = self.clock()
            for key in keys:
                if key is None or not key.startswith(self._gone_prefix):
                    continue
                try:
                    until = float(storage.getItem(key) or 0)
                except ValueError:
                    until = 0.0
                if until <= now:
                    storage.removeItem(key)
                else:
                    out.add(key[len(self._gone_prefix):])
        except Exception:  # storage disabled: leases alone decide
            return frozenset()
        return frozenset(out)

    def _capacity(self) -> int:
        base = self.capacity if self.capacity is not None else max(1, self.pool.size)
        return base + sum(2 * p.size for p in self._pools.values())

    def _free(self) -> int:
        return self._capacity() - len(self._running)

    async def _loop(self) -> None:
        woken = True
        while not self._closing:
            self._wake.clear()
            taken = 0
            free = self._free()
            # While more than three quarters of the slots are busy, a wake-up (a job
            # ending here) waits for more to free up, up to ``poll``: fewer, fuller
            # claims, as each one is a transaction every tab's claims queue behind.
            if self._queues and free > 0 and (not woken or 4 * free >= self._capacity()):
                try:
                    claimed = await self._tx(self._claim_program(self.clock(), free)())
                except WorkerBridgeError as exc:
                    log.warning("claiming jobs failed: %s", exc)
                    claimed = None
                if claimed is not None:
                    taken = len(claimed.jobs)
                    self._took(claimed)
            if taken and self._free() > 0:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll)
                woken = True
            except TimeoutError:
                woken = False

    def _claim_program(self, now: float, free: int) -> Callable[[], Program]:
        """A claim of up to ``free`` jobs of this tab's queues, to run now or as the end
        of a completing transaction."""
        queues, owner, gone = dict(self._queues), self.owner, self._gone()
        return lambda: store.claim(now, owner, self.lease, queues, free,
                                   page=free + 8, gone=gone)

    def _took(self, claimed: store.Claimed) -> None:
        for ident in claimed.stalled:
            self._emit("stalled", id=ident, reason="its lease ended")
        for job in claimed.jobs:
            self._emit("active", id=job["id"], queue=job["queue"], attempt=job["attempt"])
            self._start(job)

    def _start(self, job: dict[str, Any]) -> None:
        request = {"handler": job["handler"], "payload": job["payload"],
                   "job": {"id": job["id"], "queue": job["queue"], "attempt": job["attempt"],
                           "step": (job.get("workflow") or {}).get("step")}}
        # retries=0: a crash puts the job back in the store, not in the pool's queue.
        ident = job["id"]

        def progress(info: ProgressInfo) -> None:
            self._progress(ident, info)

        pool = self._pools.get(job["queue"], self.pool)
        future = pool.submit("jobs", "run", request, timeout=job["timeout"], retries=0,
                                  on_progress=ByMessage(progress))
        self._running[ident] = future
        future.add_done_callback(lambda done: self._answered(job, done))

    def _answered(self, job: dict[str, Any], future: asyncio.Future[Any]) -> None:
        """A run's answer, at once (the pool's futures call back without a trip through
        the browser's scheduler, which a task per job would cost): a result joins the
        next completing transaction; anything else is settled by ``_settle``."""
        if not future.cancelled() and future.exception() is None:
            out = future.result()
            if isinstance(out, dict) and "ok" in out:
                try:
                    store.check_value(out["ok"], "the result")
                except WorkerBridgeError:
                    pass
                else:
                    self._completions.append((job, out["ok"]))
                    if self._gathered is not None and \
                            len(self._completions) >= len(self._running):
                        self._gathered.set()
                    if self._completer is None or self._completer.done():
                        self._completer = asyncio.ensure_future(self._complete_pending())
                    return
        self._spawn(self._settle(job, future))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ended_here(self, ident: str) -> None:
        """This tab is done with a run: its slot is free."""
        self._running.pop(ident, None)
        self._progress_at.pop(ident, None)
        self._wake_waiters(ident)
        self._kick()

    async def _settle(self, job: dict[str, Any], future: asyncio.Future[Any]) -> None:
        """A run that did not end with a result: cancelled, crashed, failed."""
        ident = job["id"]
        try:
            try:
                out = await future
            except asyncio.CancelledError:
                return  # cancelled, lost its lease, or put back by close()
            except WorkerCrashedError:
                state = await self._tx(store.requeue(ident, self.clock(), "WorkerCrashedError",
                                                     self.max_stalls))
                if state == "waiting":
                    self._emit("stalled", id=ident, queue=job["queue"],
                               reason="WorkerCrashedError")
                elif state == "failed":
                    self._emit("failed", id=ident, queue=job["queue"],
                               error_type="WorkerCrashedError", notify=False)
                    self._prune_soon(job["queue"], "failed")
                return
            except WorkerBridgeError as exc:
                await self._failed(job, type_names(exc), str(exc))
                return
            if isinstance(out, dict) and "ok" in out:  # a result a job cannot carry
                try:
                    store.check_value(out["ok"], "the result")
                except WorkerBridgeError as exc:
                    await self._failed(job, type_names(exc), str(exc))
                    return
            error = out.get("error", {}) if isinstance(out, dict) else {}
            await self._failed(job, list(error.get("types", ["Exception"])),
                               str(error.get("message", "")))
        except WorkerBridgeError as exc:  # the store itself failed: the lease will lapse
            log.error("job %s: its outcome could not be stored (%s); it will run again",
                      ident[:60], exc)
        finally:
            self._ended_here(ident)

    async def _complete_pending(self) -> None:
        """End the jobs whose results arrived, together: the results that arrive while a
        completing transaction commits go in the next one (``store.complete_then_claim``,
        which also claims the slots they free)."""
        while self._completions:
            # Other runs of this tab are about to answer (short jobs finish together):
            # wait a moment for them, up to GATHER seconds, so that they end in this
            # transaction and not in the next.
            if len(self._completions) < len(self._running):
                self._gathered = asyncio.Event()  # set by the last of them to answer
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._gathered.wait(), GATHER)
                self._gathered = None
            batch, self._completions = self._completions, []
            now = self.clock()
            free = self._capacity() - len(self._running) + len(batch)
            claim_next = None if self._closing or not self._queues or free <= 0 else \
                self._claim_program(now, free)
            try:
                # ``_answered`` checked each result.
                ended, claimed = await self._tx(store.complete_then_claim(
                    [(job["id"], result) for job, result in batch], now, claim_next,
                    checked=True))
            except WorkerBridgeError as exc:
                await self._complete_alone(batch, exc)
                continue
            for (job, _), outcome in zip(batch, ended, strict=True):
                if outcome:
                    self._emit("completed", id=job["id"], queue=job["queue"])
                    self._flow_ended(outcome.workflow)
                    self._prune_soon(job["queue"], "completed")
                self._ended_here(job["id"])
            if claimed is not None:
                self._took(claimed)

    async def _complete_alone(self, batch: Sequence[tuple[dict[str, Any], Any]],
                              exc: WorkerBridgeError) -> None:
        """After a completing transaction failed: a storage failure leaves the jobs to
        their leases; otherwise one job's result could not end it (a code workflow's run
        asked for something it cannot do), so each job is ended alone, and that one
        fails by its policy."""
        for job, result in batch:
            try:
                if isinstance(exc, StorageError):
                    raise exc
                try:
                    (outcome,) = await self._tx(store.complete_many([(job["id"], result)],
                                                                    self.clock()))
                except WorkerBridgeError as alone:
                    if isinstance(alone, StorageError):
                        raise
                    await self._failed(job, type_names(alone), str(alone))
                else:
                    if outcome:
                        self._emit("completed", id=job["id"], queue=job["queue"])
                        self._flow_ended(outcome.workflow)
            except WorkerBridgeError as failure:
                log.error("job %s: its outcome could not be stored (%s); it will run again",
                          job["id"][:60], failure)
            finally:
                self._ended_here(job["id"])

    async def _failed(self, job: dict[str, Any], types: Sequence[str], message: str) -> None:
        tables = [t for t in (self._recovery.get(job["queue"]), self._recovery.get(None))
                  if t]
        failure = await self._tx(store.fail(job["id"], types, message, self.clock(), tables))
        if failure.job is None:
            return
        kind = types[0] if types else "Exception"
        if failure.decision.action == "retry":
            self._emit("retrying", id=job["id"], queue=job["queue"], error_type=kind,
                       delay=failure.decision.delay)
        else:
            self._emit("failed", id=job["id"], queue=job["queue"], error_type=kind,
                       notify=failure.decision.notify)
            self._flow_ended(failure.workflow)
            self._prune_soon(job["queue"], "failed")

    async def _renew_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.lease / 3)
            ids = list(self._running)
            if not ids:
                continue
            try:
                lost = await self._tx(store.renew(self.owner, ids, self.clock(), self.lease))
            except WorkerBridgeError as exc:
                log.warning("renewing job leases failed: %s", exc)
                continue
            for ident in lost:
                future = self._running.get(ident)
                if future is not None:
                    future.cancel()

    async def _ended(self, job_id: str, wait: float) -> None:
        """Wait up to ``wait`` seconds, less if the job (or workflow) of that id ends
        meanwhile, in this tab or, heard through the BroadcastChannel, in another."""
        self._open_channel()
        event = self._done.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), wait)
        if self._done.get(job_id) is event:
            del self._done[job_id]

    def _wake_waiters(self, ident: Any) -> None:
        event = self._done.get(ident) if isinstance(ident, str) else None
        if event is not None:
            event.set()

    async def _cancel(self, job_id: str) -> bool:
        before = await self._tx(store.cancel(job_id, self.clock()))
        future = self._running.get(job_id)
        if future is not None:
            future.cancel()
        return before in ("waiting", "active")

    # --- events -------------------------------------------------------------------------------

    def on(self, event: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback(event_dict)`` on ``event`` ("added", "active", "progress",
        "completed", "failed", "retrying", "stalled") in this tab or any other tab of the
        origin using this database, after the change committed. Returns a function that
        stops it. The dict holds ``event``, ``id`` and, as they apply, ``queue``,
        ``attempt``, ``error_type``, ``delay``, ``done``, ``total``."""
        if event not in EVENTS:
            raise InvalidInputError(f"unknown event {event!r}; one of {', '.join(EVENTS)}")
        if not callable(callback):
            raise InvalidTypeError("the callback must be callable")
        self._listeners.setdefault(event, []).append(callback)
        self._open_channel()

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._listeners[event].remove(callback)

        return off

    def _open_channel(self) -> Any:
        if self._channel is None and IN_PYODIDE and not self._closing:
            import js
            from pyodide.ffi import create_proxy

            self._channel = js.BroadcastChannel.new(f"workerbridge-jobs:{self.db_name}")
            self._channel_proxy = create_proxy(
                lambda event: self._deliver_all(json.loads(str(event.data))))
            self._channel.addEventListener("message", self._channel_proxy)
        return self._channel

    def _emit(self, event: str, **fields: Any) -> None:
        """Deliver an event in this tab at once, and to the other tabs with the rest of
        this turn's events, in one message (a message per event cost a JS call each)."""
        message = {"event": event, **fields}
        self._deliver(message)
        if self._open_channel() is None:
            return
        self._outgoing.append(message)
        if len(self._outgoing) == 1:
            asyncio.get_running_loop().call_soon(self._broadcast)

    def _broadcast(self) -> None:
        messages, self._outgoing = self._outgoing, []
        if messages and self._channel is not None:
            self._channel.postMessage(json.dumps(messages))

    def _deliver_all(self, messages: Any) -> None:
        for message in messages if isinstance(messages, list) else [messages]:
            self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if kind in WAKE:
            self._kick()
        if kind in ENDED:
            self._wake_waiters(message.get("id"))
        for callback in list(self._listeners.get(str(message.get("event")), ())):
            try:
                outcome = callback(message)
                if asyncio.iscoroutine(outcome):
                    self._spawn(outcome)
            except Exception:
                log.exception("a jobs.on(%r) callback raised", message.get("event"))

    def _added(self, records: Sequence[dict[str, Any]], now: float) -> None:
        for record in records:
            if record["added_at"] == now:  # new, not an existing job_id
                self._emit("added", id=record["id"], queue=record["queue"])
        self._kick()

    def _progress(self, ident: str, info: ProgressInfo) -> None:
        if info.final:
            # The pool's closing report of a finished call: the job's end, stored next,
            # says as much (storing it too cost a transaction per job).
            return
        self._emit("progress", id=ident, done=info.done, total=info.total)
        now = time.monotonic()
        if now - self._progress_at.get(ident, 0.0) < PROGRESS_EVERY:
            return
        self._progress_at[ident] = now
        self._spawn(self._tx(store.set_progress(ident, info.done, info.total)))

    # --- retention, metrics, health ------------------------------------------------------------

    def _prune_soon(self, queue: str, state: str) -> None:
        keep, age = self._retention.get((queue, state), (None, None))
        if (keep is None and age is None) or (queue, state) in self._pruning:
            return  # no retention, or a prune is on its way (one for many ended jobs)
        self._pruning.add((queue, state))

        async def prune() -> None:
            try:
                with contextlib.suppress(WorkerBridgeError):
                    await self._tx(store.prune(queue, state, keep, age, self.clock()))
            finally:
                self._pruning.discard((queue, state))

        self._spawn(prune())

    async def metrics(self) -> dict[str, Any]:
        """Per queue: jobs waiting, delayed, active, completed, failed, cancelled; how
        many were retried; run time mean and p95 (seconds) and completions per minute;
        and the pool's utilisation (busy workers / ready workers)."""
        rows = await self._tx(store.listing(), "readonly")
        stats = self.pool.stats()
        return {"queues": store.metrics_of(rows, self.clock()),
                "workers": stats.size, "busy": stats.busy,
                "utilisation": stats.busy / stats.size if stats.size else 0.0,
                "running_here": len(self._running)}

    async def health(self, *, max_waiting: int = 1000,
                     max_failure_rate: float = 0.5) -> dict[str, Any]:
        """"healthy", "degraded" or "unhealthy", with the reasons: no ready worker
        (unhealthy); a queue with more than ``max_waiting`` due jobs, or whose ended jobs
        failed more often than ``max_failure_rate`` (degraded)."""
        metrics = await self.metrics()
        reasons: list[str] = []
        status = "healthy"
        if metrics["workers"] == 0:
            status = "unhealthy"
            reasons.append("no worker is ready")
        for name, q in sorted(metrics["queues"].items()):
            if q["waiting"] > max_waiting:
                reasons.append(f"queue {name[:60]!r}: {q['waiting']} jobs waiting")
            ended = q["completed"] + q["failed"]
            if ended >= 10 and q["failed"] / ended > max_failure_rate:
                reasons.append(f"queue {name[:60]!r}: {q['failed'] / ended:.0%} of its ended "
                               "jobs failed")
        if reasons and status == "healthy":
            status = "degraded"
        return {"status": status, "reasons": reasons}

    async def close(self, timeout: float = 10.0) -> None:
        """Stop claiming; let running jobs finish for up to ``timeout`` seconds, then put
        back what still runs, its attempt not counted. Nothing is lost."""
        self._closing = True
        self._kick()
        for box in list(self._outboxes.values()):
            await box.close(0)
        self._outboxes.clear()
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = list(self._running)
        if left:
            for ident in left:
                future = self._running.get(ident)
                if future is not None:
                    future.cancel()
            with contextlib.suppress(WorkerBridgeError):
                await self._tx(store.release(self.owner, left, self.clock()))
        for task in (self._loop_task, self._renew_task, self._fire_task):
            if task is not None:
                task.cancel()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:  # the scaled stages' own pools, once their runs are over
            await pool.terminate()
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._channel is not None:
            self._broadcast()
            self._channel.close()
            self._channel = None
        if self._channel_proxy is not None:
            self._channel_proxy.destroy()
            self._channel_proxy = None
        if self._lifecycle is not None:
            import js

            js.window.removeEventListener("pagehide", self._lifecycle)
            js.document.removeEventListener("freeze", self._lifecycle)
            self._lifecycle.destroy()
            self._lifecycle = None
