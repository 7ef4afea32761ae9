"""The job store: jobs as IndexedDB records, and the transaction programs that move them.

Each function here is a transaction program (``storage.txn``): it yields batches of
IndexedDB requests and decides from their results, so one call is one atomic
transaction, whichever tab runs it. Read-write transactions on one store run one at a
time across tabs, which is what makes a claim safe: the program that reads the waiting
jobs is the one that writes their leases.

A job's life: ``waiting`` (due at ``due_at``) -> ``active`` (claimed: ``owner`` holds a
lease until ``lease_until``) -> ``completed`` (its result stored in the transaction that
ends it) or, after a failed attempt, ``waiting`` again (a retry, due after its backoff)
or ``failed`` (by its attempts or its recovery table). ``cancelled`` ends a job at the
caller's request. A lease that ends with no answer (its tab closed, crashed or froze)
puts the job back to ``waiting`` at the next claim, and so does a crashed worker: the run
stays in ``attempt`` and the history (the job may have run twice; that is the only way a
duplicate run happens) but not against ``attempts``, which count failed runs.

Pure: the host tests drive these programs against an in-memory model of IndexedDB.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.jobs.claims import Candidate, QueueLimits, Running, choose, lease_expired
from workerbridge.jobs.policy import Backoff, Decision, Rule, decide
from workerbridge.storage.plan import KeyRange
from workerbridge.storage.txn import Final, Program, inner

JOBS = "jobs"
META = "meta"
SCHEDULES = "schedules"
WORKFLOWS = "workflows"
OUTBOX = "outbox"
STORES = [JOBS, META, SCHEDULES, WORKFLOWS, OUTBOX]
# The IndexedDB version of SCHEMA_SPEC (2: schedules, 3: workflows, 4: the claim index,
# 5: outboxes).
DB_VERSION = 5
LAYOUT = 4  # the records' layout: META "layout" names it once ``migrate`` has run
# The database's stores: jobs by id, with an index on their state and the claim index:
# (queue, state, rank, seq), where rank is -priority, so that a queue's waiting jobs
# come in claim order (higher priority first, then first in first out) and a claim reads
# only the first few of the queues it runs; counters and schedules by name.
CLAIM_INDEX = "claim"
SCHEMA_SPEC: dict[str, Any] = {
    JOBS: {"key": "id", "indexes": {"state": "state",
                                    CLAIM_INDEX: ["queue", "state", "rank", "seq"]}},
    META: {"key": "name"}, SCHEDULES: {"key": "name"}, WORKFLOWS: {"key": "id"},
    # an outbox's events by id, and in the order they were added: (outbox, seq)
    OUTBOX: {"key": "id", "indexes": {"order": ["outbox", "seq"]}}}
PAGE = 64  # waiting jobs a claim reads per queue at a time
STATES = ("waiting", "active", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
HANDLER = re.compile(r"[A-Za-z_][\w-]*\.[A-Za-z_][\w-]*")
TRANSPORT = re.compile(r"outbox:[A-Za-z_][\w-]*")  # a pipeline's transport stage
MAX_ID = 200
MAX_DEPTH = 64


def check_value(value: Any, what: str, depth: int = 0) -> None:
    """A job's payload or result: JSON values and bytes only (InvalidTypeError)."""
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"{what} nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str | bytes):
        return
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidTypeError(f"{what} holds {value!r}, which JSON cannot carry")
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_value(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidTypeError(f"{what} has a {type(key).__name__} key; JSON objects "
                                       "have string keys")
            check_value(item, what, depth + 1)
        return
    raise InvalidTypeError(f"{what} holds a {type(value).__name__}: a job carries JSON values "
                           "and bytes only")


def _same(a: Any, b: Any) -> bool:
    """Equal as stored (a tuple is stored as a list)."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return bool(plain(a) == plain(b))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What ``jobs.add`` was given, checked."""

    queue: str
    handler: str  # "channel.op"
    payload: Any = None
    id: str | None = None
    priority: int = 0
    delay: float = 0.0
    attempts: int = 1
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None
    group: str | None = None
    workflow: dict[str, Any] | None = None  # {"id", "step", "index"} for a workflow's step
    pipeline: dict[str, Any] | None = None  # {"name", "stage"} for a pipeline stage's event
    # The payload was checked already (a stage's event: part of a checked result).
    checked: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue or len(self.queue) > MAX_ID:
            raise InvalidInputError("a queue name is a non-empty string")
        if not isinstance(self.handler, str) or not (
                HANDLER.fullmatch(self.handler)
                or (self.pipeline is not None and TRANSPORT.fullmatch(self.handler))):
            raise InvalidInputError(f"handler must be 'channel.op', not {self.handler!r}")
        if self.id is not None and (not isinstance(self.id, str) or not self.id
                                    or len(self.id) > MAX_ID):
            raise InvalidInputError("job_id must be a non-empty string of at most "
                                    f"{MAX_ID} characters")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise InvalidTypeError(f"priority must be an int, not {self.priority!r}")
        if isinstance(self.delay, bool) or not isinstance(self.delay, int | float) \
                or not math.isfinite(self.delay) or self.delay < 0:
            raise InvalidInputError(f"delay must be a number of seconds ≥ 0, not "
                                    f"{self.delay!r}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) \
                or self.attempts < 1:
            raise InvalidInputError(f"attempts must be an int ≥ 1, not {self.attempts!r}")
        if not isinstance(self.backoff, Backoff):
            raise InvalidTypeError("backoff must be a Backoff(...)")
        if self.timeout is not None and (isinstance(self.timeout, bool)
                                         or not isinstance(self.timeout, int | float)
                                         or not math.isfinite(self.timeout)
                                         or self.timeout <= 0):
            raise InvalidInputError(f"timeout must be seconds > 0 or None, not "
                                    f"{self.timeout!r}")
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise InvalidInputError("group must be a non-empty string or None")
        if not self.checked:
            check_value(self.payload, "the payload")


def _only(state: str) -> KeyRange:
    return KeyRange.only(state)


def new_record(spec: JobSpec, seq: int, now: float, make_id: Callable[[], str]) -> dict[str, Any]:
    return {
        "id": spec.id or make_id(), "queue": spec.queue, "handler": spec.handler,
        "payload": spec.payload, "priority": spec.priority, "rank": -spec.priority,
        "seq": seq,
        "due_at": now + spec.delay, "state": "waiting", "attempts": spec.attempts,
        "attempt": 0, "backoff": {"base": spec.backoff.base, "factor": spec.backoff.factor,
                                  "max": spec.backoff.max, "jitter": spec.backoff.jitter},
        "timeout": spec.timeout, "group": spec.group, "owner": None, "lease_until": None,
        "added_at": now, "finished_at": None, "result": None, "error": None,
        "history": [], "stalls": 0, "workflow": spec.workflow, "pipeline": spec.pipeline,
    }


def add(specs: Sequence[JobSpec], now: float,
        make_id: Callable[[], str] | None = None) -> Program:
    """Store new jobs in one transaction; returns their records. A ``job_id`` that exists
    returns the stored job (deduplication), unless it was added with another handler or
    payload: then InvalidInputError, and nothing of the batch is written."""
    if make_id is None:
        import uuid

        make_id = lambda: str(uuid.uuid4())  # noqa: E731
    known = [s.id for s in specs if s.id is not None]
    found = yield [["get", JOBS, i] for i in known] + [["get", META, "seq"]]
    stored = {i: rec for i, rec in zip(known, found[:-1], strict=True) if rec is not None}
    seq = found[-1]["value"] if found[-1] else 0
    out: list[dict[str, Any]] = []
    batch: list[list[Any]] = []
    for spec in specs:
        existing = stored.get(spec.id) if spec.id is not None else None
        if existing is not None:
            if existing["handler"] != spec.handler or not _same(existing["payload"], spec.payload):
                raise InvalidInputError(f"job_id {spec.id!r} exists with another handler or "
                                        "payload; nothing was added")
            out.append(existing)
            continue
        seq += 1
        record = new_record(spec, seq, now, make_id)
        batch.append(["add", JOBS, record])
        out.append(record)
        if spec.id is not None:
            stored[spec.id] = record
    if batch:
        batch.append(["put", META, {"name": "seq", "value": seq}])
    yield Final(batch)
    return out


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim's outcome: the jobs it took (leased to its owner) and those whose lease
    had ended, put back to waiting."""

    jobs: tuple[dict[str, Any], ...]
    stalled: tuple[str, ...]


def _lane(queue: str, state: str, after: dict[str, Any] | None = None) -> KeyRange:
    """A queue's jobs in one state, in the claim index's order (after ``after``)."""
    if after is None:
        return KeyRange([queue, state], [queue, state, []])
    return KeyRange([queue, state, after["rank"], after["seq"]], [queue, state, []],
                    lower_open=True)


def _starts_key(queue: str) -> str:
    return f"starts:{queue}"


def claim(now: float, owner: str, lease: float, limits: Mapping[str, QueueLimits],
          capacity: int | None = None, page: int = PAGE,
          gone: Collection[str] = ()) -> Program:
    """Take the jobs to run now (``claims.choose``), leasing each to ``owner`` until
    ``now + lease``, in one transaction.

    It reads, through the claim index, only the queues in ``limits``: each one's running
    jobs (for its concurrency, and to put back those whose lease ended) and its first
    ``page`` waiting jobs in claim order, and reads on, a page at a time, only for a queue
    whose page held too few it could start (delayed jobs, busy groups) while there is
    still room. A rate-limited queue's recent starts are kept in META, so the limit holds
    across tabs. ``gone``: owners (tabs) that said they went away or froze: their running
    jobs are put back at once, the cut-short run not counted as a stall."""
    queues = sorted(limits)
    rated = [q for q in queues if limits[q].rate_limit is not None]
    found = yield ([["all", JOBS, CLAIM_INDEX, _lane(q, "active").to_wire(), None]
                    for q in queues]
                   + [["all", JOBS, CLAIM_INDEX, _lane(q, "waiting").to_wire(), page]
                      for q in queues]
                   + [["get", META, _starts_key(q)] for q in rated])
    actives, pages = found[:len(queues)], found[len(queues):2 * len(queues)]
    starts = {q: [t for t in (row or {}).get("times", [])
                  if now - limits[q].rate_limit[1] < t <= now]  # type: ignore[index]
              for q, row in zip(rated, found[2 * len(queues):], strict=True)}
    batch: list[list[Any]] = []
    running: list[Running] = []
    stalled: list[str] = []
    waiting: list[dict[str, Any]] = []
    held: Counter[str] = Counter()  # jobs of each queue this owner runs now
    for job in (j for jobs in actives for j in jobs):
        if job["owner"] in gone:  # its tab went away or froze, and said so
            job = _stalled(job, now, "Released", counted=False)
            stalled.append(job["id"])
            waiting.append(job)
            batch.append(["put", JOBS, job])
        elif lease_expired(job["lease_until"], now):
            job = _stalled(job, now)
            stalled.append(job["id"])
            waiting.append(job)
            batch.append(["put", JOBS, job])
        else:
            running.append(Running(job["queue"], job["group"]))
            if job["owner"] == owner:
                held[job["queue"]] += 1
    last: dict[str, dict[str, Any]] = {}
    for q, rows in zip(queues, pages, strict=True):
        waiting += rows
        if len(rows) == page:
            last[q] = rows[-1]
    while True:
        chosen = choose((Candidate(j["id"], j["queue"], j["priority"], j["seq"], j["due_at"],
                                   j["group"]) for j in waiting),
                        now, limits, running, capacity, starts, held)
        if capacity is not None and len(chosen) >= capacity:
            break
        taking = Counter(r.queue for r in running)
        by_id = {j["id"]: j for j in waiting}
        taking.update(by_id[i]["queue"] for i in chosen)
        more = [q for q in last if taking[q] < limits[q].concurrency]
        if not more:
            break
        rows_list = yield [["all", JOBS, CLAIM_INDEX, _lane(q, "waiting", last[q]).to_wire(),
                            page] for q in more]
        last = {}
        for q, rows in zip(more, rows_list, strict=True):
            waiting += rows
            if len(rows) == page:
                last[q] = rows[-1]
    by_id = {j["id"]: j for j in waiting}
    taken = []
    for ident in chosen:
        job = by_id[ident]
        attempt = job["attempt"] + 1
        job = {**job, "state": "active", "owner": owner, "lease_until": now + lease,
               "attempt": attempt,
               "history": [*job["history"], {"attempt": attempt, "start": now, "end": None,
                                             "owner": owner, "error_type": None,
                                             "worker": None}]}
        batch.append(["put", JOBS, job])
        taken.append(job)
        if job["queue"] in starts:
            starts[job["queue"]].append(now)
    for q in rated:
        batch.append(["put", META, {"name": _starts_key(q), "times": starts[q]}])
    yield Final(batch)
    return Claimed(tuple(taken), tuple(stalled))


def migrate() -> Program:
    """Bring a database written by an older version to ``LAYOUT`` in one transaction
    (each job gets its ``rank``, which the claim index needs); a no-op once done."""
    (layout,) = yield [["get", META, "layout"]]
    if layout is not None and layout["value"] >= LAYOUT:
        yield Final([])
        return False
    (rows,) = yield [["all", JOBS, None, None, None]]
    yield Final([["put", JOBS, {**r, "rank": -r["priority"]}] for r in rows if "rank" not in r]
                + [["put", META, {"name": "layout", "value": LAYOUT}]])
    return True


def _stalled(job: dict[str, Any], now: float, reason: str = "Stalled",
             counted: bool = True) -> dict[str, Any]:
    """A running job back to waiting: its run ended with no answer (``counted`` toward
    ``max_stalls``), or its tab let it go (``Released``: not counted)."""
    history = [*job["history"]]
    if history and history[-1]["end"] is None:
        history[-1] = {**history[-1], "end": now, "error_type": reason}
    return {**job, "state": "waiting", "owner": None, "lease_until": None, "due_at": now,
            "stalls": job["stalls"] + (1 if counted else 0), "history": history}


def _finish_history(job: dict[str, Any], now: float, error_type: str | None,
                    worker: int | None) -> list[dict[str, Any]]:
    history = [*job["history"]]
    if history and history[-1]["end"] is None:
        history[-1] = {**history[-1], "end": now, "error_type": error_type, "worker": worker}
    return history


@dataclass(frozen=True, slots=True)
class Ended:
    """How a job's end went: whether this call ended it, and, for a workflow's step, the
    workflow's id, name and state after it."""

    ended: bool
    workflow: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return self.ended


def complete(job_id: str, result: Any, now: float, worker: int | None = None) -> Program:
    """Store a job's result and end it, in one transaction; for a workflow's step, mark
    the step done with its result and add the next step's job (or end the workflow) in
    that same transaction, so a finished step never runs again. False when the job had
    already ended (another run finished it first, or it was cancelled or removed)."""
    check_value(result, "the result")
    (job,) = yield [["get", JOBS, job_id]]
    if job is None or job["state"] in TERMINAL:
        yield Final([])
        return Ended(False)
    done = {**job, "state": "completed", "result": result, "finished_at": now,
            "owner": None, "lease_until": None,
            "history": _finish_history(job, now, None, worker)}
    pipe = job.get("pipeline")
    if pipe is not None:
        yield from _pass_on(job, pipe, result, now)
        yield Final([["put", JOBS, done]])
        return Ended(True)
    flow = job.get("workflow")
    if flow is None:
        yield Final([["put", JOBS, done]])
        return Ended(True)
    (wf,) = yield [["get", WORKFLOWS, flow["id"]]]
    if wf is None or wf["state"] != "running":
        yield Final([["put", JOBS, done]])
        return Ended(True)
    if wf.get("kind") == "code":
        wf = yield from _go_on(wf, flow, result, now)
        yield Final([["put", JOBS, {**done, "result": None if flow.get("drive") else result}],
                     ["put", WORKFLOWS, wf]])
        return Ended(True, _flow_summary(wf))
    index = flow["index"]
    steps = [*wf["steps"]]
    steps[index] = {**steps[index], "state": "done", "result": result, "finished_at": now}
    if index + 1 < len(steps):
        wf = {**wf, "steps": steps, "current": index + 1}
        yield from inner(add([step_job(wf, index + 1, result)], now))
    else:
        wf = {**wf, "steps": steps, "state": "completed", "result": result,
              "finished_at": now}
    yield Final([["put", JOBS, done], ["put", WORKFLOWS, wf]])
    return Ended(True, _flow_summary(wf))


def complete_many(done: Sequence[tuple[str, Any]], now: float,
                  worker: int | None = None, checked: bool = False) -> Program:
    """``complete`` for several jobs in one transaction (the page gathers the results that
    arrive while its previous transaction commits); an ``Ended`` for each. ``checked``:
    the caller checked the results already."""
    if not checked:
        for _, result in done:
            check_value(result, "the result")
    found = yield [["get", JOBS, ident] for ident, _ in done]
    # Pipeline stages' jobs: their definitions read once, their next jobs added at once.
    names = sorted({j["pipeline"]["name"] for j in found
                    if j is not None and j.get("pipeline") is not None})
    defs = dict(zip(names, (yield [["get", META, pipeline_key(n)] for n in names]),
                    strict=True)) if names else {}
    batch: list[list[Any]] = []
    out: list[Ended] = []
    following: list[JobSpec] = []
    for (ident, result), job in zip(done, found, strict=True):
        if job is None or job["state"] in TERMINAL:
            out.append(Ended(False))
        elif job.get("workflow") is None:
            batch.append(["put", JOBS, {**job, "state": "completed", "result": result,
                                        "finished_at": now, "owner": None,
                                        "lease_until": None,
                                        "history": _finish_history(job, now, None, worker)}])
            if job.get("pipeline") is not None:
                following += _next_jobs(job, result, defs.get(job["pipeline"]["name"]))
            out.append(Ended(True))
        else:
            out.append((yield from inner(complete(ident, result, now, worker))))
    yield from _add_following(following, now)
    yield Final(batch)
    return out


def complete_then_claim(done: Sequence[tuple[str, Any]], now: float,
                        claim_next: Callable[[], Program] | None,
                        checked: bool = False) -> Program:
    """``complete_many``, then, in the same transaction, ``claim_next()`` (a ``claim``
    for the slots those jobs free): one transaction a round instead of two. Returns
    (the Ended list, the Claimed or None)."""
    ended = yield from inner(complete_many(done, now, checked=checked))
    if claim_next is None:
        yield Final([])
        return ended, None
    return ended, (yield from claim_next())


def _flow_summary(wf: dict[str, Any]) -> dict[str, Any]:
    return {"id": wf["id"], "name": wf["name"], "state": wf["state"]}


def _end_flow(job: dict[str, Any], state: str, now: float,
              error: dict[str, Any] | None) -> Program:
    """A failed or cancelled step ends its workflow (a part of a larger program)."""
    flow = job.get("workflow")
    if flow is None:
        return None
    (wf,) = yield [["get", WORKFLOWS, flow["id"]]]
    if wf is None or wf["state"] != "running":
        return None
    steps = [*wf["steps"]]
    if not flow.get("drive"):  # a step ended it (not a run of a code workflow's body)
        steps[flow["index"]] = {**steps[flow["index"]], "state": state, "finished_at": now}
    return {**wf, "steps": steps, "state": state, "error": error, "finished_at": now}


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt's outcome: what was decided, and the job as stored."""

    decision: Decision
    job: dict[str, Any] | None
    workflow: dict[str, Any] | None = None  # the workflow it ended, as for Ended


def fail(job_id: str, error_types: Sequence[str], message: str, now: float,
         tables: Iterable[Mapping[str, Rule]] = (), worker: int | None = None,
         rand: Callable[[], float] = random.random) -> Program:
    """Record a failed attempt and retry the job (due after its backoff) or fail it, by
    its attempts and the recovery tables (``policy.decide``), in one transaction."""
    (job,) = yield [["get", JOBS, job_id]]
    if job is None or job["state"] in TERMINAL:
        yield Final([])
        return Failure(Decision("fail", reason="the job had already ended"), None)
    backoff = Backoff(**job["backoff"])
    # Runs that ended without an answer (stalls) do not count against the attempts.
    decision = decide(max(job["attempt"] - job["stalls"], 1), job["attempts"], error_types,
                      backoff, *tables, rand=rand)
    kind = error_types[0] if error_types else "Error"
    error = {"type": kind, "types": list(error_types), "message": message[:500]}
    history = _finish_history(job, now, kind, worker)
    if decision.action == "retry":
        job = {**job, "state": "waiting", "due_at": now + decision.delay, "owner": None,
               "lease_until": None, "error": error, "history": history}
        yield Final([["put", JOBS, job]])
        return Failure(decision, job)
    job = {**job, "state": "failed", "finished_at": now, "owner": None,
           "lease_until": None, "error": error, "history": history}
    wf = yield from _end_flow(job, "failed", now, error)
    yield Final([["put", JOBS, job]] + ([["put", WORKFLOWS, wf]] if wf else []))
    return Failure(decision, job, _flow_summary(wf) if wf else None)


def requeue(job_id: str, now: float, reason: str, max_stalls: int) -> Program:
    """Put a running job back to waiting at once (its worker crashed). The run counts in
    its ``attempt`` and history (a duplicate run shows there) but not against its
    ``attempts``; after ``max_stalls`` such runs it fails.
    Returns the new state, or None if the job had already ended."""
    (job,) = yield [["get", JOBS, job_id]]
    if job is None or job["state"] in TERMINAL:
        yield Final([])
        return None
    job = _stalled(job, now, reason)
    wf = None
    if job["stalls"] > max_stalls:
        job = {**job, "state": "failed", "finished_at": now,
               "error": {"type": reason, "types": [reason], "message":
                         f"its run ended {job['stalls']} times without an answer ({reason})"}}
        wf = yield from _end_flow(job, "failed", now, job["error"])
    yield Final([["put", JOBS, job]] + ([["put", WORKFLOWS, wf]] if wf else []))
    return str(job["state"])


def renew(owner: str, job_ids: Sequence[str], now: float, lease: float) -> Program:
    """Extend ``owner``'s leases; returns the ids it no longer holds (cancelled, removed,
    or taken by another tab after its lease ended): their runs should stop."""
    found = yield [["get", JOBS, i] for i in job_ids]
    batch, lost = [], []
    for ident, job in zip(job_ids, found, strict=True):
        if job is None or job["state"] != "active" or job["owner"] != owner:
            lost.append(ident)
        else:
            batch.append(["put", JOBS, {**job, "lease_until": now + lease}])
    yield Final(batch)
    return lost


def release(owner: str, job_ids: Sequence[str], now: float) -> Program:
    """Put ``owner``'s running jobs back to waiting, their attempt not counted (a graceful
    close, or the tab going away); returns the ids put back."""
    found = yield [["get", JOBS, i] for i in job_ids]
    batch, back = [], []
    for ident, job in zip(job_ids, found, strict=True):
        if job is None or job["state"] != "active" or job["owner"] != owner:
            continue
        history = [*job["history"]]
        if history and history[-1]["end"] is None:
            history.pop()
        batch.append(["put", JOBS, {**job, "state": "waiting", "owner": None,
                                    "lease_until": None, "due_at": now,
                                    "attempt": job["attempt"] - 1, "history": history}])
        back.append(ident)
    yield Final(batch)
    return back


def cancel(job_id: str, now: float) -> Program:
    """End a waiting or running job as cancelled; its previous state, or None."""
    (job,) = yield [["get", JOBS, job_id]]
    if job is None or job["state"] in TERMINAL:
        yield Final([])
        return None if job is None else job["state"]
    wf = yield from _end_flow(job, "cancelled", now, None)
    yield Final([["put", JOBS, {**job, "state": "cancelled", "finished_at": now,
                                "owner": None, "lease_until": None,
                                "history": _finish_history(job, now, "Cancelled", None)}]]
                + ([["put", WORKFLOWS, wf]] if wf else []))
    return str(job["state"])


def retry(job_id: str, now: float) -> Program:
    """Run a failed or cancelled job again, with its attempts afresh; False otherwise."""
    (job,) = yield [["get", JOBS, job_id]]
    if job is None or job["state"] not in ("failed", "cancelled"):
        yield Final([])
        return False
    yield Final([["put", JOBS, {**job, "state": "waiting", "due_at": now, "attempt": 0,
                                "finished_at": None, "error": None}]])
    return True


def remove(job_id: str) -> Program:
    """Delete a job that is not running; False if it runs (cancel it first) or is gone."""
    (job,) = yield [["get", JOBS, job_id]]
    if job is None or job["state"] == "active":
        yield Final([])
        return False
    yield Final([["del", JOBS, job_id]])
    return True


def get(job_ids: Sequence[str]) -> Program:
    return (yield Final([["get", JOBS, i] for i in job_ids]))


def listing(queue: str | None = None, state: str | None = None,
            limit: int | None = None) -> Program:
    """Jobs by state (all states when None) and queue, in claim order."""
    if state is not None and state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    request = ["all", JOBS, "state", _only(state).to_wire(), None] if state is not None \
        else ["all", JOBS, None, None, None]
    (jobs,) = yield Final([request])
    jobs = [j for j in jobs if queue is None or j["queue"] == queue]
    jobs.sort(key=lambda j: (-j["priority"], j["seq"]))
    return jobs[:limit] if limit is not None else jobs



# --- schedules ------------------------------------------------------------------------------


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def schedule_record(name: str, kind: str, spec: JobSpec, next_run: float, now: float, *,
                    cron: str | None = None, tz: str = "UTC", catch_up: str = "skip",
                    max_catch_up: int = 100) -> dict[str, Any]:
    """A schedule as stored: what it fires (a job like ``spec``) and when next."""
    return {
        "name": name, "kind": kind, "cron": cron, "tz": tz, "catch_up": catch_up,
        "max_catch_up": max_catch_up, "next_run": next_run, "created_at": now,
        "queue": spec.queue, "handler": spec.handler, "payload": spec.payload,
        "job": {"priority": spec.priority, "attempts": spec.attempts,
                "backoff": {"base": spec.backoff.base, "factor": spec.backoff.factor,
                            "max": spec.backoff.max, "jitter": spec.backoff.jitter},
                "timeout": spec.timeout, "group": spec.group},
        "fired": 0, "dropped": 0, "last_run": None,
    }


def put_schedule(record: dict[str, Any]) -> Program:
    """Declare a schedule, or update one: a schedule that exists with the same timing
    keeps its ``next_run`` (declaring it again on every page load moves nothing)."""
    (found,) = yield [["get", SCHEDULES, record["name"]]]
    if found is not None and all(found[k] == record[k] for k in
                                 ("kind", "cron", "tz")) and found["next_run"] is not None:
        record = {**record, "next_run": found["next_run"], "fired": found["fired"],
                  "dropped": found["dropped"], "last_run": found["last_run"],
                  "created_at": found["created_at"]}
    yield Final([["put", SCHEDULES, record]])
    return record


def drop_schedule(name: str) -> Program:
    (found,) = yield [["get", SCHEDULES, name]]
    yield Final([["del", SCHEDULES, name]] if found is not None else [])
    return found is not None


def schedules() -> Program:
    (rows,) = yield Final([["all", SCHEDULES, None, None, None]])
    return rows


def fire(now: float, make_id: Callable[[], str] | None = None) -> Program:
    """Take every schedule's due runs in one transaction: add their jobs and move each
    ``next_run`` on, so one tab fires each run. A run's job id names the schedule and
    the run (``schedule:NAME:TIME``): a run is never added twice. Returns
    [(schedule, [run times, ISO])] for what was fired."""
    from workerbridge.jobs.schedule import due, once_due

    (rows,) = yield [["all", SCHEDULES, None, None, None]]
    specs: list[JobSpec] = []
    updates: list[list[Any]] = []
    fired: list[tuple[str, list[str]]] = []
    moment = _utc(now)
    for row in rows:
        if row["next_run"] is None or row["next_run"] > now:
            continue
        if row["kind"] == "cron":
            fires = due(row["cron"], row["tz"], _utc(row["next_run"]), moment,
                        row["catch_up"], row["max_catch_up"])
            runs, next_run, dropped = list(fires.runs), fires.next_run.timestamp(), \
                fires.dropped
        else:
            at = _utc(row["next_run"])
            runs = [at] if once_due(at, moment, row["catch_up"]) else []
            next_run, dropped = None, 1 - len(runs)
        job = row["job"]
        for run in runs:
            specs.append(JobSpec(row["queue"], row["handler"], row["payload"],
                                 f"schedule:{row['name']}:{run.isoformat()}",
                                 job["priority"], 0.0, job["attempts"],
                                 Backoff(**job["backoff"]), job["timeout"], job["group"]))
        updates.append(["put", SCHEDULES, {
            **row, "next_run": next_run, "fired": row["fired"] + len(runs),
            "dropped": row["dropped"] + dropped,
            "last_run": runs[-1].timestamp() if runs else row["last_run"]}])
        fired.append((row["name"], [r.isoformat() for r in runs]))
    if not updates:
        yield Final([])
        return []
    if specs:
        yield from inner(add(specs, now, make_id))
    yield Final(updates)
    return fired


# --- progress, retention, metrics ------------------------------------------------------------


def set_progress(job_id: str, done: float, total: float | None) -> Program:
    """Store a running job's progress (the page throttles how often)."""
    (job,) = yield [["get", JOBS, job_id]]
    if job is None or job["state"] != "active":
        yield Final([])
        return False
    yield Final([["put", JOBS, {**job, "progress": {"done": done, "total": total}}]])
    return True


def prune(queue: str, state: str, keep: int | None, max_age: float | None,
          now: float) -> Program:
    """Delete a queue's ended jobs in ``state`` beyond the newest ``keep``, or that ended
    more than ``max_age`` seconds ago; returns how many."""
    if state not in TERMINAL:
        raise InvalidInputError(f"only ended jobs are pruned, not {state!r} ones")
    (rows,) = yield [["all", JOBS, "state", _only(state).to_wire(), None]]
    rows = sorted((r for r in rows if r["queue"] == queue),
                  key=lambda r: (r["finished_at"] or 0, r["seq"]), reverse=True)
    doomed = []
    for i, row in enumerate(rows):
        if (keep is not None and i >= keep) or \
                (max_age is not None and (row["finished_at"] or now) < now - max_age):
            doomed.append(["del", JOBS, row["id"]])
    yield Final(doomed)
    return len(doomed)


def metrics_of(jobs: Iterable[dict[str, Any]], now: float,
               window: float = 60.0) -> dict[str, dict[str, Any]]:
    """Per queue: jobs by state (waiting split into due and ``delayed``), how many were
    retried, run times of the completed runs (mean and p95, seconds), and completions
    in the last ``window`` seconds (per minute)."""
    out: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {}
    for job in jobs:
        q = out.setdefault(job["queue"], {
            "waiting": 0, "delayed": 0, "active": 0, "completed": 0, "failed": 0,
            "cancelled": 0, "retried": 0, "completed_last_minute": 0})
        state = job["state"]
        if state == "waiting" and job["due_at"] > now:
            state = "delayed"
        q[state] += 1
        history = job.get("history") or []
        if len(history) > 1:
            q["retried"] += 1
        if job["state"] == "completed":
            last = history[-1] if history else None
            if last is not None and last.get("end") is not None:
                times.setdefault(job["queue"], []).append(last["end"] - last["start"])
            if job.get("finished_at") is not None and job["finished_at"] >= now - window:
                q["completed_last_minute"] += 1
    for name, q in out.items():
        runs = sorted(times.get(name, []))
        q["run_time_mean"] = sum(runs) / len(runs) if runs else None
        q["run_time_p95"] = runs[min(len(runs) - 1, math.ceil(0.95 * len(runs)) - 1)] \
            if runs else None
        q["throughput_per_minute"] = q.pop("completed_last_minute") * 60.0 / window
    return out


# --- workflows -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a declarative workflow: its handler and its retry policy."""

    name: str
    handler: str
    attempts: int = 1
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None


def workflow_record(wf_id: str, name: str, queue: str, steps: Sequence[StepSpec] | None,
                    data: Any, now: float) -> dict[str, Any]:
    """A workflow as stored: its steps (with what each needs to run, so any tab can go
    on with it), their states and results, and its own state. ``steps`` None: a code
    workflow (``@workflow``), whose steps are added as its body reaches them."""
    check_value(data, "the workflow's input")
    return {
        "id": wf_id, "name": name, "queue": queue, "state": "running", "input": data,
        "kind": "code" if steps is None else "steps",
        "result": None, "error": None, "created_at": now, "finished_at": None,
        "current": 0,
        "steps": [] if steps is None else [
            {"name": s.name, "handler": s.handler, "attempts": s.attempts,
             "backoff": {"base": s.backoff.base, "factor": s.backoff.factor,
                         "max": s.backoff.max, "jitter": s.backoff.jitter},
             "timeout": s.timeout, "state": "pending", "result": None,
             "finished_at": None} for s in steps],
    }


def step_job(wf: dict[str, Any], index: int, payload: Any) -> JobSpec:
    """The job that runs step ``index`` of a workflow on ``payload``."""
    step = wf["steps"][index]
    return JobSpec(wf["queue"], step["handler"], payload, f"workflow:{wf['id']}:{index}", 0,
                   0.0, step["attempts"], Backoff(**step["backoff"]), step["timeout"], None,
                   {"id": wf["id"], "step": step["name"], "index": index})


def drive_job(wf: dict[str, Any], delay: float = 0.0) -> JobSpec:
    """The job that runs a code workflow's body again (``flow.replay``) on the results
    of its checkpoints so far; one per checkpoint, so a run is never added twice."""
    done = [{"kind": c["kind"], "name": c["name"], "result": c["result"]}
            for c in wf["steps"]]
    n = len(done)
    return JobSpec(wf["queue"], f"workflow.{wf['name']}",
                   {"id": wf["id"], "input": wf["input"], "done": done},
                   f"workflow:{wf['id']}:run:{n}", 0, delay, 1, Backoff(), None, None,
                   {"id": wf["id"], "step": None, "index": n, "drive": True})


def _go_on(wf: dict[str, Any], flow: dict[str, Any], result: Any, now: float) -> Program:
    """A code workflow after one of its jobs ended with ``result`` (part of ``complete``):
    a step's result is its checkpoint, and the body runs again; a run of the body ended
    the workflow, or stopped at a step (added as a job) or a sleep (the next run is
    delayed by it)."""
    steps = [*wf["steps"]]
    if not flow.get("drive"):
        steps[flow["index"]] = {**steps[flow["index"]], "state": "done", "result": result,
                                "finished_at": now}
        wf = {**wf, "steps": steps, "current": len(steps)}
        yield from inner(add([drive_job(wf)], now))
        return wf
    kind = result.get("kind") if isinstance(result, dict) else None
    if kind == "done":
        return {**wf, "state": "completed", "result": result.get("result"),
                "finished_at": now}
    if kind == "sleep":
        steps.append({"kind": "sleep", "name": result["name"], "state": "done",
                      "result": None, "wake_at": now + result["seconds"], "finished_at": now})
        wf = {**wf, "steps": steps, "current": len(steps)}
        yield from inner(add([drive_job(wf, result["seconds"])], now))
        return wf
    if kind != "step":
        raise InvalidInputError("a workflow's run ended with no step, sleep or result")
    steps.append({"kind": "step", "name": result["name"], "handler": result["handler"],
                  "attempts": result["attempts"], "backoff": result["backoff"],
                  "timeout": result["timeout"], "state": "pending", "result": None,
                  "finished_at": None})
    wf = {**wf, "steps": steps, "current": len(steps) - 1}
    yield from inner(add([step_job(wf, len(steps) - 1, result["payload"])], now))
    return wf


def start_workflow(record: dict[str, Any], now: float,
                   make_id: Callable[[], str] | None = None) -> Program:
    """Store a workflow and its first job (its first step's, or a code workflow's first
    run) in one transaction; a workflow id that exists returns that workflow,
    unchanged."""
    (found,) = yield [["get", WORKFLOWS, record["id"]]]
    if found is not None:
        yield Final([])
        return found
    first = drive_job(record) if record.get("kind") == "code" \
        else step_job(record, 0, record["input"])
    yield from inner(add([first], now, make_id))
    yield Final([["put", WORKFLOWS, record]])
    return record


def get_workflow(wf_id: str) -> Program:
    (found,) = yield Final([["get", WORKFLOWS, wf_id]])
    return found


# --- pipelines -------------------------------------------------------------------------------


def pipeline_key(name: str) -> str:
    return f"pipeline:{name}"


def stage_queue(name: str, stage: str) -> str:
    """The queue of one stage of a pipeline."""
    return f"pipeline:{name}:{stage}"


def pipeline_record(name: str, graph: Any) -> dict[str, Any]:
    """A pipeline's definition as stored in META (a ``graph.Graph``): what the
    transaction that ends a stage's job reads to pass its result on."""
    stages = {}
    for stage in graph.stages:
        attempts, backoff = stage.attempts_backoff()
        stages[stage.name] = {"handler": stage.handler, "split": stage.split,
                              "attempts": attempts, "timeout": stage.timeout,
                              "backoff": {"base": backoff.base, "factor": backoff.factor,
                                          "max": backoff.max, "jitter": backoff.jitter}}
    return {"name": pipeline_key(name), "pipeline": name, **graph.describe(),
            "specs": stages}


def put_pipeline(record: dict[str, Any]) -> Program:
    """Store a pipeline's definition; one with the same stages and edges keeps its
    version (declaring it again on every load changes nothing)."""
    (found,) = yield [["get", META, record["name"]]]
    if found is not None:
        same = all(found.get(k) == record[k] for k in ("stages", "edges", "specs", "entry"))
        record = {**record, "version": found["version"] if same
                  else max(found["version"] + 1, record["version"])}
    yield Final([["put", META, record]])
    return record


@functools.lru_cache(maxsize=256)
def _backoff(base: float, factor: float, most: float, jitter: bool) -> Backoff:
    return Backoff(base, factor, most, jitter)  # a stage's, checked once, not per event


def stage_job(definition: dict[str, Any], stage: str, event: Any,
              job_id: str | None, checked: bool = False) -> JobSpec:
    spec = definition["specs"][stage]
    b = spec["backoff"]
    return JobSpec(stage_queue(definition["pipeline"], stage), spec["handler"], event, job_id,
                   0, 0.0, spec["attempts"],
                   _backoff(b["base"], b["factor"], b["max"], b["jitter"]), spec["timeout"],
                   None, None, {"name": definition["pipeline"], "stage": stage,
                                "version": definition["version"]}, checked)


def publish(name: str, events: Sequence[tuple[Any, str | None]], now: float,
            make_id: Callable[[], str] | None = None) -> Program:
    """Add events to a pipeline's first stage, in one transaction: (event, key), where a
    key names the event (publishing it again is a no-op)."""
    (definition,) = yield [["get", META, pipeline_key(name)]]
    if definition is None:
        raise InvalidInputError(f"no pipeline {name[:60]!r} is defined")
    specs = [stage_job(definition, definition["entry"], event,
                       None if key is None else f"pl:{name}:{key}") for event, key in events]
    return (yield from add(specs, now, make_id))


def _pass_on(job: dict[str, Any], pipe: dict[str, Any], result: Any, now: float) -> Program:
    """A stage's result to the stages after it, in the transaction that ends its job
    (part of ``complete``)."""
    (definition,) = yield [["get", META, pipeline_key(pipe["name"])]]
    specs = _next_jobs(job, result, definition)
    yield from _add_following(specs, now)
    return len(specs)


def _add_following(specs: Sequence[JobSpec], now: float) -> Program:
    """A stage's next jobs, as a part of a larger program; a transport stage's events
    (handler ``outbox:NAME``) go to that outbox instead, with the job id they would have
    had as their id."""
    jobs = [s for s in specs if not TRANSPORT.fullmatch(s.handler)]
    sends = [(s.handler.partition(":")[2], str(s.id), event_key(s.payload), s.payload)
             for s in specs if TRANSPORT.fullmatch(s.handler)]
    if jobs:
        yield from inner(add(jobs, now))
    if sends:
        yield from inner(outbox_add(sends, now))


def _next_jobs(job: dict[str, Any], result: Any,
               definition: dict[str, Any] | None) -> list[JobSpec]:
    """The jobs a stage's result makes: None drops the event; a split stage's list is
    several; one job per event and next stage, its id made from this job's (so that a
    stage run again adds nothing twice)."""
    pipe = job["pipeline"]
    if definition is None or result is None:
        return []
    targets = definition["edges"].get(pipe["stage"], [])
    split = definition["specs"].get(pipe["stage"], {}).get("split", False)
    events = result if split and isinstance(result, list) else [result]
    specs = []
    for target in targets:
        for n, event in enumerate(events):
            if event is None:
                continue
            ident = hashlib.sha256(f"{job['id']}>{target}:{n}".encode()).hexdigest()[:32]
            # The result was checked (``complete``): its events need no second look.
            specs.append(stage_job(definition, target, event, f"pl:{pipe['name']}:{ident}",
                                   checked=True))
    return specs


# --- outboxes ----------------------------------------------------------------------------
# An outbox's events wait in OUTBOX, in the order they were added, until the server
# acknowledges them by id. One tab at a time delivers an outbox: it holds the outbox's
# lease (META "outbox:NAME"), taken and renewed by the transactions that read and remove
# its events, so events go out in order even with several tabs open.


def event_key(event: Any) -> str | None:
    """An event's ordering key, when it names one: its ``key``, else its channel's record
    (``app/model/id``)."""
    if isinstance(event, Mapping):
        key = event.get("key")
        if isinstance(key, str):
            return key[:200]
        channel = event.get("channel")
        if isinstance(channel, Mapping):
            return "/".join(str(channel.get(k, "*")) for k in ("app", "model", "id"))[:200]
    return None


def outbox_lease_key(name: str) -> str:
    return f"outbox:{name}"


def outbox_range(name: str) -> KeyRange:
    return KeyRange([name], [name, []])  # [name, seq] for every seq


def outbox_record(name: str, event_id: str, key: str | None, data: Any, now: float,
                  seq: int) -> dict[str, Any]:
    return {"id": event_id, "outbox": name, "seq": seq, "key": key, "data": data,
            "added_at": now}


OutboxEvent = tuple[str, str, str | None, Any]  # (outbox, event id, key, data)


def outbox_add(events: Sequence[OutboxEvent], now: float) -> Program:
    """Append events to their outboxes, in one transaction; an id already stored is not
    added again. Returns how many were new."""
    found = yield [["get", OUTBOX, e[1]] for e in events] + [["get", META, "outbox-seq"]]
    seq = found[-1]["value"] if found[-1] else 0
    seen = {r["id"] for r in found[:-1] if r is not None}
    batch: list[list[Any]] = []
    for name, event_id, key, data in events:
        if event_id in seen:
            continue
        seen.add(event_id)
        seq += 1
        batch.append(["put", OUTBOX, outbox_record(name, event_id, key, data, now, seq)])
    if batch:
        batch.append(["put", META, {"name": "outbox-seq", "value": seq}])
    yield Final(batch)
    return len(batch) - 1 if batch else 0


def _lease_free(lease: Any, owner: str, now: float, gone: Collection[str]) -> bool:
    return lease is None or lease["owner"] == owner or lease["until"] <= now \
        or lease["owner"] in gone


def _lease(name: str, owner: str, until: float) -> list[Any]:
    return ["put", META, {"name": outbox_lease_key(name), "owner": owner, "until": until}]


def outbox_take(name: str, owner: str, lease: float, now: float, limit: int,
                gone: Collection[str] = ()) -> Program:
    """The first ``limit`` events of an outbox, in order, for ``owner`` to send, its lease
    taken or renewed; None when another tab holds the lease."""
    (held,) = yield [["get", META, outbox_lease_key(name)]]
    if not _lease_free(held, owner, now, gone):
        return None
    events, _ = yield [["all", OUTBOX, "order", outbox_range(name).to_wire(), limit],
                       _lease(name, owner, now + lease)]
    return events


def outbox_remove(name: str, owner: str, ids: Sequence[str], lease: float,
                  now: float) -> Program:
    """Remove acknowledged events and renew the lease; False (and nothing removed) when
    the lease went to another tab meanwhile (it sends them again: the server dedups)."""
    (held,) = yield [["get", META, outbox_lease_key(name)]]
    if held is not None and held["owner"] != owner and held["until"] > now:
        return False
    yield [*(["del", OUTBOX, i] for i in ids), _lease(name, owner, now + lease)]
    return True


def outbox_release(name: str, owner: str) -> Program:
    """Give up an outbox's lease (a closing tab), if this owner holds it."""
    (held,) = yield [["get", META, outbox_lease_key(name)]]
    if held is not None and held["owner"] == owner:
        yield [["del", META, outbox_lease_key(name)]]
    return None


def outbox_count(name: str) -> Program:
    (n,) = yield Final([["count", OUTBOX, "order", outbox_range(name).to_wire()]])
    return int(n)
