"""Storage operations as transaction programs, and the queue that runs them (pure).

A *program* is a generator that yields a batch of IndexedDB requests, receives their
results, and may yield again before it returns its result. ``_idb.run`` drives one program
as one IndexedDB transaction, calling it back synchronously inside the transaction; here
it is plain Python, so the logic is tested on the host against an in-memory store.

Requests are JSON-able lists (records may also hold bytes)::

    ["add", store, record]     ["put", store, record]      ["get", store, key]
    ["del", store, key]        ["delr", store, range]      ["clear", store]
    ["count", store, index | None, range | None]
    ["all", store, index | None, range | None, limit | None]

``range`` is ``KeyRange.to_wire()``; ``index`` None means the primary key. Results come
back in request order: the key written, the record or None, None, a count, a list.

``Hooks`` are the seams later features plug into (audit log, field encryption, sync).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import (
    ConstraintError,
    InvalidInputError,
    InvalidTypeError,
    StorageQuotaError,
    UnknownCollectionError,
)
from ._query import (
    EVERYTHING,
    MAX_SAFE_INTEGER,
    IndexSpec,
    Node,
    Plan,
    SortSpec,
    check_indexed,
    check_sort,
    clean_value,
    key_of,
    matches,
    plan,
    sort_key,
    sort_records,
    validate_filter,
)

log = logging.getLogger("workerbridge.storage")

Request = list[Any]
Batch = list[Request]
Program = Generator[Batch, list[Any], Any]


class Final(list[Request]):
    """A program's last batch. When a program's *first* batch is final, the runner
    needs no callback: the program finishes after the commit, outside the transaction
    (reads filter and sort there)."""
Op = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A collection as the database has it: its key field and indexes."""

    name: str
    key: str
    indexes: tuple[IndexSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One record written: what the audit log and other tabs hear about."""

    collection: str
    op: Op
    key: Any
    record: dict[str, Any] | None  # None for a delete


class Hooks:
    """Seams for features built on the core; every default does nothing.

    Install a subclass in the worker with ``workerbridge.workers.storage.install_hooks``.
    All methods but ``encode``/``decode`` run synchronously inside a transaction and must
    not await anything.
    """

    #: Internal stores ("_name") every upgrade creates and never drops:
    #: name -> {"key": field, "indexes": {name: {"path", "unique", "multi"}}}.
    internal_stores: dict[str, dict[str, Any]] = {}  # noqa: RUF012 - read-only default

    def scope(self, collections: Sequence[str]) -> Sequence[str]:
        """Stores every read-write transaction over ``collections`` also takes."""
        return ()

    def begin(self) -> Batch:
        """Requests run first in every read-write transaction (e.g. a chain's head)."""
        return []

    def started(self, results: list[Any]) -> None:
        """The results of ``begin``'s requests."""

    def on_write(self, change: Change) -> Batch:
        """Requests issued right after ``change``'s own, in its transaction."""
        return []

    def merge(self, collection: str, stored: dict[str, Any],
              patch: dict[str, Any]) -> dict[str, Any]:
        """The record an update stores, from the stored one and the caller's fields."""
        return {**stored, **patch}

    def committed(self, database: str, changes: list[Change]) -> None:
        """Called after a read-write transaction committed (never for an aborted one)."""

    def check_filter(self, collection: str, node: Node) -> None:
        """Refuse a filter this collection cannot serve (e.g. on an encrypted field)."""

    async def encode(self, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Fields as stored (before the transaction starts: may await, e.g. encrypt)."""
        return fields

    async def decode(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        """A record as returned (after the transaction: may await, e.g. decrypt)."""
        return record


# --- checks shared by the page and the worker ------------------------------------------------


def check_collection(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidTypeError(f"a collection name must be a str, not {type(name).__name__}")
    if not name or name.startswith("_"):
        raise InvalidInputError("a collection name must be non-empty and not start with '_' "
                                "(reserved for internal stores)")
    return name


def check_key(value: Any, what: str = "id") -> Any:
    """A record key: a str or a finite number (IndexedDB keys; booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInputError(f"{what} must be a str or a number, not "
                                f"{type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number")
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        raise InvalidInputError(f"{what} is an integer beyond 2**53")
    return value


def check_fields(data: Any, what: str = "data",
                 foreign: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A record or a partial record as storable data (see ``clean_value``); field names
    must not start with "$". ``foreign`` converts JS values (in a worker)."""
    if not isinstance(data, dict):
        if foreign is not None and data is not None:
            data = foreign(data)
        if not isinstance(data, dict):
            raise InvalidTypeError(f"{what} must be a dict, not {type(data).__name__}")
    clean: dict[str, Any] = clean_value(data, what, fields=True, foreign=foreign)
    return clean


def prepare_record(data: Any, key: str, *, checked: bool = False) -> dict[str, Any]:
    """A record ready to create: checked (unless ``checked``), with its key (a new UUID4
    string if absent)."""
    record = data if checked else check_fields(data)
    if key in record:
        check_key(record[key], key)
        return record
    return {key: str(uuid.uuid4()), **record}


# --- programs -------------------------------------------------------------------------------


@dataclass(slots=True)
class Tx:
    """What programs share within one transaction: the schema, the hooks, the changes."""

    schema: dict[str, StoreInfo]
    hooks: Hooks | None = None
    changes: list[Change] = field(default_factory=list)
    plan: Plan | None = None  # the last query plan (for explain)

    def store(self, collection: str) -> StoreInfo:
        info = self.schema.get(collection)
        if info is None or collection.startswith("_"):
            raise UnknownCollectionError(f"no collection {collection[:60]!r} in the database")
        return info

    def write(self, op: Op, collection: str, key: Any, record: dict[str, Any] | None,
              request: Request) -> Batch:
        change = Change(collection, op, key, record)
        self.changes.append(change)
        if self.hooks is None:
            return [request]
        return [request, *self.hooks.on_write(change)]

    def merge(self, collection: str, stored: dict[str, Any],
              patch: dict[str, Any]) -> dict[str, Any]:
        if self.hooks is None:
            return {**stored, **patch}
        return self.hooks.merge(collection, stored, patch)

    def plan_for(self, info: StoreInfo, node: Node) -> Plan:
        if self.hooks is not None:
            self.hooks.check_filter(info.name, node)
        self.plan = plan(node, info.key, info.indexes)
        return self.plan


def _scan(collection: str, p: Plan, limit: int | None = None) -> Batch:
    if p.ranges is None:
        return [["all", collection, None, None, limit]]
    return [["all", collection, p.index, r.to_wire(), limit] for r in p.ranges]


def _candidates(info: StoreInfo, p: Plan, results: list[Any]) -> list[dict[str, Any]]:
    records = [r for batch in results for r in batch]
    if p.repeats:
        distinct = {key_of(r.get(info.key)): r for r in records}
        records = list(distinct.values())
    if p.residual is not None:
        records = [r for r in records if matches(p.residual, r)]
    return records


def create(tx: Tx, items: list[tuple[str, Any]]) -> Program:
    """Add records, for (collection, record) pairs; a record without its key gets a UUID4.
    An existing key fails the whole transaction. The records as stored."""
    records = []
    batch: Batch = []
    for collection, data in items:
        info = tx.store(collection)
        record = prepare_record(data, info.key, checked=True)
        check_indexed(record, info.indexes)
        records.append(record)
        batch += tx.write("create", collection, record[info.key], record,
                          ["add", collection, record])
    yield Final(batch)
    return records


def get(tx: Tx, items: list[tuple[str, Any]]) -> Program:
    """Records by key (None where missing), for (collection, key) pairs."""
    for collection, _ in items:
        tx.store(collection)
    return (yield Final(["get", c, k] for c, k in items))


def read(tx: Tx, collection: str, node: Node = EVERYTHING, sort: SortSpec = (),
         limit: int | None = None, offset: int = 0) -> Program:
    """Matching records: sorted by ``sort``, else in key order; then offset and limit."""
    info = tx.store(collection)
    p = tx.plan_for(info, node)
    if p.ranges == ():
        return []
    # The store's own order is key order: with nothing left to filter or sort, IndexedDB
    # can stop after offset + limit records.
    whole = p.residual is None and not sort and p.index is None \
        and (p.ranges is None or len(p.ranges) == 1)
    hint = offset + limit if whole and limit is not None else None
    records = _candidates(info, p, (yield Final(_scan(collection, p, hint))))
    if p.index is not None:  # index order: back to key order, which ties keep below
        records.sort(key=lambda r: sort_key(r.get(info.key)))
    if sort:
        sort_records(records, sort)
    return records[offset:None if limit is None else offset + limit]


def count(tx: Tx, collection: str, node: Node = EVERYTHING) -> Program:
    info = tx.store(collection)
    p = tx.plan_for(info, node)
    if p.ranges == ():
        return 0
    if p.residual is None and not p.repeats:
        if p.ranges is None:
            return (yield Final([["count", collection, None, None]]))[0]
        counts = yield Final(["count", collection, p.index, r.to_wire()] for r in p.ranges)
        return sum(counts)
    return len(_candidates(info, p, (yield Final(_scan(collection, p)))))


def update(tx: Tx, collection: str, node: Node, patch: dict[str, Any]) -> Program:
    """Merge ``patch`` into every matching record; the number updated."""
    info = tx.store(collection)
    if info.key in patch:
        raise InvalidInputError(f"an update cannot change a record's key ({info.key!r})")
    p = tx.plan_for(info, node)
    if p.ranges == ():
        return 0
    matched = _candidates(info, p, (yield _scan(collection, p)))
    batch: Batch = []
    for stored in matched:
        record = tx.merge(collection, stored, patch)
        check_indexed(record, info.indexes)
        batch += tx.write("update", collection, stored[info.key], record,
                          ["put", collection, record])
    if batch:
        yield batch
    return len(matched)


def delete(tx: Tx, collection: str, node: Node) -> Program:
    """Delete every matching record; the number deleted."""
    info = tx.store(collection)
    p = tx.plan_for(info, node)
    if p.ranges == ():
        return 0
    if tx.hooks is None and p.residual is None and p.index is None:
        # By key range, without reading the records (nobody needs to see them).
        if p.ranges is None:
            return (yield Final([["count", collection, None, None], ["clear", collection]]))[0]
        batch: Batch = []
        for r in p.ranges:
            batch += [["count", collection, None, r.to_wire()], ["delr", collection, r.to_wire()]]
        return sum((yield Final(batch))[0::2])
    matched = _candidates(info, p, (yield _scan(collection, p)))
    batch = []
    for stored in matched:
        key = stored[info.key]
        batch += tx.write("delete", collection, key, None, ["del", collection, key])
    if batch:
        yield batch
    return len(matched)


def bulk_update(tx: Tx, collection: str, changes: list[dict[str, Any]]) -> Program:
    """Merge each change into the record with its key; missing keys are skipped. The
    number of records updated."""
    info = tx.store(collection)
    stored_list = yield [["get", collection, c[info.key]] for c in changes]
    latest: dict[Any, dict[str, Any]] = {}
    for change, stored in zip(changes, stored_list, strict=True):
        k = key_of(change[info.key])
        base = latest.get(k, stored)
        if base is None:
            continue
        patch = {f: v for f, v in change.items() if f != info.key}
        record = tx.merge(collection, base, patch)
        check_indexed(record, info.indexes)
        latest[k] = record
    batch: Batch = []
    for record in latest.values():
        batch += tx.write("update", collection, record[info.key], record,
                          ["put", collection, record])
    if batch:
        yield batch
    return len(latest)


def bulk_delete(tx: Tx, collection: str, keys: list[Any]) -> Program:
    """Delete the records with these keys; the number that existed."""
    tx.store(collection)
    distinct = list({key_of(k): k for k in keys}.values())
    if tx.hooks is None:
        batch: Batch = []
        for k in distinct:
            batch += [["count", collection, None, {"lo": k, "lo_open": False, "hi": k,
                                                    "hi_open": False}], ["del", collection, k]]
        return sum((yield Final(batch))[0::2]) if batch else 0
    found = yield [["get", collection, k] for k in distinct]
    batch = []
    for k, stored in zip(distinct, found, strict=True):
        if stored is not None:
            batch += tx.write("delete", collection, k, None, ["del", collection, k])
    if batch:
        yield batch
    return sum(1 for stored in found if stored is not None)


def run_ops(tx: Tx, ops: list[dict[str, Any]]) -> Program:
    """``transaction()``'s operations (checked by ``check_op``), one after the other in
    one transaction; one result each."""
    results: list[Any] = []
    for op in ops:
        kind, coll = op["op"], op["collection"]
        program: Program
        if kind == "create":
            program = create(tx, [(coll, op["data"])])
        elif kind == "get":
            program = get(tx, [(coll, op["id"])])
        elif kind == "read":
            program = read(tx, coll, validate_filter(op.get("filter")),
                           check_sort(op.get("sort")), op.get("limit"), op.get("offset") or 0)
        elif kind == "count":
            program = count(tx, coll, validate_filter(op.get("filter")))
        elif kind == "update":
            program = update(tx, coll, validate_filter(op.get("filter")), op["data"])
        else:
            program = delete(tx, coll, validate_filter(op.get("filter")))
        result = yield from inner(program)
        results.append(result[0] if kind in ("create", "get") else result)
    return results


def inner(program: Program) -> Program:
    """``program`` as a part of a larger one: its last batch is not the transaction's."""
    try:
        batch = next(program)
        while True:
            batch = program.send((yield list(batch)))
    except StopIteration as stop:
        return stop.value


def hooked(tx: Tx, program: Program) -> Program:
    """``program`` after the hooks' ``begin`` requests (read-write transactions)."""
    if tx.hooks is not None:
        first = tx.hooks.begin()
        if first:
            tx.hooks.started((yield first))
    return (yield from inner(program))


# --- the queue --------------------------------------------------------------------------------

GroupRunner = Callable[[list[Any]], Awaitable[list[Any]]]
Sink = Callable[[Any, BaseException | None], None]  # (result, error): called exactly once
# Errors that belong to one record of a group: retried one by one so only it fails.
PER_RECORD = (ConstraintError, InvalidInputError, StorageQuotaError)


@dataclass(eq=False, slots=True)
class _Job:
    kind: str
    args: Any
    sink: Sink
    wanted: Callable[[], bool] | None = None  # False once its caller gave up


class SerialQueue:
    """Runs jobs one transaction at a time, in arrival order.

    Consecutive jobs of a groupable kind (``groups``: kind -> runner taking every job's
    args and returning one result each) run together, in one transaction: while a
    transaction commits, the creates (or gets) that arrive meanwhile pile up and then
    go together (group commit). If a group fails with an error that may belong to one
    record (a duplicate key, a bad value, the quota), it is retried in halves, in order,
    until the failing jobs are alone: one bad record fails only its own caller. Any other
    job's args is an async callable run on its own.

    Outcomes go to a sink callback rather than a future each: in Pyodide every future
    that wakes a task costs a trip through the browser's scheduler.
    """

    def __init__(self, groups: dict[str, GroupRunner], max_group: int = 2000) -> None:
        self._groups = groups
        self._max_group = max_group
        self._jobs: deque[_Job] = deque()
        self._drainer: asyncio.Future[None] | None = None
        self.transactions = 0

    def put(self, kind: str, args: Any, sink: Sink,
            wanted: Callable[[], bool] | None = None) -> None:
        """Queue a job; ``sink`` gets its outcome."""
        self._jobs.append(_Job(kind, args, sink, wanted))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())

    def submit(self, kind: str, args: Any) -> asyncio.Future[Any]:
        """Queue a job; its outcome as a future (cancel it to drop a job not yet run)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.put(kind, args, lambda result, error: _settle(future, result, error),
                 lambda: not future.done())
        return future

    def __len__(self) -> int:
        return len(self._jobs)

    async def _drain(self) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            if job.wanted is not None and not job.wanted():
                continue
            group = [job]
            if job.kind in self._groups:
                while self._jobs and len(group) < self._max_group \
                        and self._jobs[0].kind == job.kind:
                    group.append(self._jobs.popleft())
            await self._run(group)

    async def _run(self, group: list[_Job]) -> None:
        kind = group[0].kind
        self.transactions += 1
        try:
            if kind in self._groups:
                results = await self._groups[kind]([j.args for j in group])
            else:
                results = [await group[0].args()]
        except Exception as exc:
            if len(group) > 1 and isinstance(exc, PER_RECORD):
                # Halve until the bad records are alone: one bad record among n costs
                # about 2 log2(n) more transactions, and the order is kept.
                half = len(group) // 2
                await self._run(group[:half])
                await self._run(group[half:])
                return
            for job in group:
                _deliver(job.sink, None, exc)
            return
        for job, result in zip(group, results, strict=True):
            _deliver(job.sink, result, None)


def _deliver(sink: Sink, result: Any, error: BaseException | None) -> None:
    try:
        sink(result, error)
    except Exception:  # a sink must not stop the queue
        log.exception("a storage result could not be delivered")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
