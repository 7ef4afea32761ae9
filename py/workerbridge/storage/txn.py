"""Storage operations as transaction programs, and the queue that runs them (pure).

A *program* is a generator that yields a batch of IndexedDB requests, receives their
results, and may yield again before it returns its result. ``idb.run`` drives one program
as one IndexedDB transaction, calling it back synchronously inside the transaction; here
it is plain Python, so the logic is tested on the host against an in-memory store.

Requests are JSON-able lists (records may also hold bytes)::

    ["add", store, record]     ["put", store, record]      ["get", store, key]
    ["del", store, key]        ["delr", store, range]      ["clear", store]
    ["count", store, index | None, range | None]
    ["all", store, index | None, range | None, limit | None]
    ["last", store, index | None, range | None]      the record with the highest key, or None

``range`` is ``KeyRange.to_wire()``; ``index`` None means the primary key. Results come
back in request order: None for a write, the record or None, a count, a list.

``Hooks`` are the seams later features plug into (audit log, field encryption, sync).
``_serial.SerialQueue`` runs the programs of one database one after another.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from workerbridge.core.errors import InvalidInputError, UnknownCollectionError
from workerbridge.storage.plan import IndexSpec, Plan, check_indexed, plan
from workerbridge.storage.query import (
    EVERYTHING,
    Node,
    SortSpec,
    check_sort,
    key_of,
    matches,
    sort_key,
    sort_records,
    validate_filter,
)
from workerbridge.storage.schema import prepare_record

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
    All methods but ``encode``/``decode`` and their ``_all`` forms run synchronously
    inside a transaction and must not await anything.
    """

    #: Internal stores ("_name") every upgrade creates and never drops:
    #: name -> {"key": field, "indexes": {name: {"path", "unique", "multi"}}}.
    internal_stores: dict[str, dict[str, Any]] = {}  # noqa: RUF012 - read-only default
    #: Record fields only this feature may write (callers' data holding one is refused).
    reserved: frozenset[str] = frozenset()

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

    async def encode_all(self, collection: str,
                         records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``encode`` of many records or patches at once, in order; override to do the
        work of the lot together (each await costs a trip through the event loop)."""
        return [await self.encode(collection, r) for r in records]

    async def decode_all(self, collection: str,
                         records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``decode`` of many records at once, in order; raises the first record's error
        (a group of calls is then retried in parts, so it fails only its own caller)."""
        return [await self.decode(collection, r) for r in records]

    def configure(self, settings: dict[str, Any]) -> None:
        """The page's settings for this database (every feature's, by name); called
        before any call that relies on them, and again after the worker restarted."""

    @property
    def active(self) -> bool:
        """False while this feature has nothing to do (its transactions skip it)."""
        return True


class HookChain(Hooks):
    """Several features' hooks as one: requests and stores add up, ``merge`` and
    ``encode``/``encode_all`` run in order, ``decode``/``decode_all`` in reverse order
    (the last encoding is undone first)."""

    def __init__(self, hooks: Sequence[Hooks]) -> None:
        self.hooks = tuple(hooks)
        self.internal_stores = {name: spec for h in self.hooks
                                for name, spec in h.internal_stores.items()}
        self.reserved = frozenset().union(*(h.reserved for h in self.hooks))
        self._begun: list[int] = []

    def scope(self, collections: Sequence[str]) -> Sequence[str]:
        return list(dict.fromkeys(s for h in self.hooks for s in h.scope(collections)))

    def begin(self) -> Batch:
        batches = [h.begin() for h in self.hooks]
        self._begun = [len(b) for b in batches]
        return [r for b in batches for r in b]

    def started(self, results: list[Any]) -> None:
        at = 0
        for h, n in zip(self.hooks, self._begun, strict=True):
            if n:
                h.started(results[at:at + n])
            at += n

    def on_write(self, change: Change) -> Batch:
        return [r for h in self.hooks for r in h.on_write(change)]

    def merge(self, collection: str, stored: dict[str, Any],
              patch: dict[str, Any]) -> dict[str, Any]:
        if not self.hooks:
            return {**stored, **patch}
        for h in self.hooks:
            stored = h.merge(collection, stored, patch)
            # Later hooks see the patch as earlier ones settled it (e.g. bound to the record).
            patch = {f: stored[f] for f in patch if f in stored}
        return stored

    def committed(self, database: str, changes: list[Change]) -> None:
        for h in self.hooks:
            try:
                h.committed(database, changes)
            except Exception:  # the data is committed: one hook's failure must not hide it
                log.exception("a committed() hook raised")

    def check_filter(self, collection: str, node: Node) -> None:
        for h in self.hooks:
            h.check_filter(collection, node)

    async def encode(self, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
        for h in self.hooks:
            fields = await h.encode(collection, fields)
        return fields

    async def decode(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        for h in reversed(self.hooks):
            record = await h.decode(collection, record)
        return record

    async def encode_all(self, collection: str,
                         records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for h in self.hooks:
            records = await h.encode_all(collection, records)
        return records

    async def decode_all(self, collection: str,
                         records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for h in reversed(self.hooks):
            records = await h.decode_all(collection, records)
        return records

    def configure(self, settings: dict[str, Any]) -> None:
        for h in self.hooks:
            h.configure(settings)

    def running(self) -> HookChain | None:
        """The chain of the active hooks, or None when no hook is active."""
        live = [h for h in self.hooks if h.active]
        return HookChain(live) if live else None

    def overriding(self, *methods: str) -> HookChain | None:
        """The chain of the hooks that define one of ``methods`` (say "encode": the others
        would only pass each record through), or None."""
        doing = [h for h in self.hooks
                 if any(getattr(type(h), m) is not getattr(Hooks, m) for m in methods)]
        return HookChain(doing) if doing else None


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
