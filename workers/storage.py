"""The ``storage`` channel: IndexedDB collections, run in this worker.

Each database has one queue (``storage.serial.SerialQueue``): its calls run one transaction at a
time, in the order they arrived, so the writes of a page are serialised. Consecutive
``create`` calls share one transaction, and so do consecutive ``get`` calls: under load,
the creates that arrive while a transaction commits go together in the next one (group
commit), each caller still getting its own result. When such a group fails because of
one record (a duplicate key, a bad value, the quota), it is retried in halves, in order,
until the bad record is alone: it fails only its own caller.

Transactions run through ``idb.run``: nothing but IndexedDB requests happens inside one,
and a write is acknowledged only after its transaction committed (``durability:
"strict"``). ``register_hooks`` is where the audit log, field encryption and sync plug in;
their settings come from the page (``configure``) and are sent again to a worker that
restarted: a call made under settings this worker lacks is refused before it runs.

Its page half: ``workerbridge.storage.storage``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from workerbridge.core.errors import (
    InvalidInputError,
    StorageError,
    UnconfiguredError,
    WorkerBridgeError,
)
from workerbridge.core.futures import PromptFuture
from workerbridge.runtime.dispatch import Context, handler
from workerbridge.storage.idb import Database, from_js, open_database, run
from workerbridge.storage.query import Node, check_sort, unparse, validate_filter
from workerbridge.storage.schema import (
    BLOCKED_TIMEOUT,
    check_collection,
    check_count,
    check_database,
    check_fields,
    check_key,
    check_op,
    normalize_schema,
)
from workerbridge.storage.serial import SerialQueue, Sink, held
from workerbridge.storage.txn import (
    HookChain,
    Hooks,
    Program,
    StoreInfo,
    Tx,
    bulk_delete,
    bulk_update,
    count,
    create,
    delete,
    get,
    hooked,
    read,
    run_ops,
    update,
)

log = logging.getLogger("workerbridge.storage")

_factories: list[Callable[[str], Hooks]] = []


def register_hooks(factory: Callable[[str], Hooks]) -> None:
    """Plug a feature into every database of this worker: ``factory(database name)``
    makes its ``_txn.Hooks`` for each database (call it at import, before any is used)."""
    _factories.append(factory)


def _native(value: Any) -> Any:
    """A payload value as Python: binary data (an ArrayBuffer or typed array) as bytes."""
    if isinstance(value, dict):
        return {k: _native(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_native(v) for v in value]
    if value is None or isinstance(value, str | int | float | bytes):
        return value
    return from_js(value)


class _Database:
    """One database of this worker: its connection, schema and queue."""

    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        self.spec: dict[str, Any] | None = None  # known once define() ran in this worker
        self.db: Database | None = None
        self.queue = SerialQueue({"create": self._creates, "get": self._gets},
                                 uncounted=frozenset({"configure"}))
        self.hooks = HookChain([make(name) for make in _factories])
        self._refresh()
        self.settings: dict[str, Any] = {}
        self.generation = 0  # of the page's settings in use (the last configure run)
        self.received = 0  # of the last settings received (queued calls run under them)

    def configure(self, settings: dict[str, Any], generation: int) -> None:
        self.hooks.configure(settings)
        self.settings, self.generation = settings, generation
        self._refresh()

    def _refresh(self) -> None:
        self.live = self.hooks.running()  # the active hooks, None if none
        # ... and of those, the ones that encode or decode records (None if none)
        self.encoder = None if self.live is None else self.live.overriding("encode", "encode_all")
        self.decoder = None if self.live is None else self.live.overriding("decode", "decode_all")

    def fields(self, data: Any, what: str = "data") -> dict[str, Any]:
        """A caller's record or fields, checked (no field a feature reserves)."""
        record = check_fields(data, what, foreign=from_js)
        reserved = self.hooks.reserved
        if reserved and not reserved.isdisjoint(record):
            name = min(reserved.intersection(record))
            raise InvalidInputError(f"the field {name!r} is reserved (by storage itself)")
        return record

    def check_generation(self, generation: Any) -> None:
        if generation != self.received:
            raise UnconfiguredError("this worker lacks the storage settings the call was "
                                    "made under (it restarted); send them again")

    async def encode(self, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
        return fields if self.encoder is None else await self.encoder.encode(collection, fields)

    async def decode(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        return record if self.decoder is None else await self.decoder.decode(collection, record)

    async def encode_all(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """The fields of (collection, fields) pairs as stored, each collection's together."""
        if self.encoder is None:
            return [fields for _, fields in items]
        return await _by_collection(items, self.encoder.encode_all)

    async def decode_all(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """(collection, record) pairs' records as returned, each collection's together."""
        if self.decoder is None:
            return [record for _, record in items]
        return await _by_collection(items, self.decoder.decode_all)

    async def connection(self) -> Database:
        """The open connection; reopened if it was closed (another tab's upgrade closes
        it: reopening at our version then fails with a clear StorageBlockedError)."""
        if self.db is None or self.db.closed:
            self.db = None
            self.db = await open_database(self.name, self.version, self.spec,
                                          BLOCKED_TIMEOUT)
        return self.db

    async def transact(self, collections: list[str], write: bool,
                       build: Callable[[Tx], Program], doing: str) -> tuple[Any, int, Tx]:
        """Run ``build(tx)`` as one transaction; (its result, records scanned, the Tx)."""
        db = await self.connection()
        hooks = self.live
        tx = Tx(db.stores, hooks)
        program = build(tx)
        stores = list(dict.fromkeys(collections))
        if write and hooks is not None:
            extra = [s for s in hooks.scope(stores) if s not in stores]
            require_stores(db, extra, doing)
            stores += extra
            program = hooked(tx, program)
        value, scanned = await run(db, stores, "readwrite" if write else "readonly",
                                   program, doing)
        if write and hooks is not None and tx.changes:
            hooks.committed(self.name, tx.changes)
        return value, scanned, tx

    async def _creates(self, items: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        if self.encoder is not None:
            items = list(zip([c for c, _ in items], await self.encode_all(items), strict=True))
        records, _, _ = await self.transact([c for c, _ in items], True,
                                            lambda tx: create(tx, items), "create")
        return [None] * len(records)

    async def _gets(self, items: list[tuple[str, Any]]) -> list[Any]:
        found, _, _ = await self.transact([c for c, _ in items], False,
                                          lambda tx: get(tx, items), "get")
        if self.decoder is None:
            return list(found)
        out = list(found)
        present = [i for i, r in enumerate(out) if r is not None]
        decoded = await self.decode_all([(items[i][0], out[i]) for i in present])
        for i, record in zip(present, decoded, strict=True):
            out[i] = record
        return out

    def stores_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"stores": {**self.hooks.internal_stores, **spec["stores"]}}


def require_stores(db: Database, stores: list[str], doing: str) -> None:
    """Refuse, before anything runs, a call that needs a feature's store the database was
    made without (define() adds it at the next version; opening at the same one cannot)."""
    for store in stores:
        if store not in db.stores:
            raise StorageError(f"{doing}: database {db.name[:60]!r} was made without the "
                               f"{store!r} store an enabled feature keeps; define() it "
                               "again with a higher version to add it")


async def _by_collection(
        items: list[tuple[str, dict[str, Any]]],
        run_all: Callable[[str, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]],
) -> list[dict[str, Any]]:
    """``run_all(collection, records)`` once per collection of ``items``; the results in
    the order of ``items``."""
    groups: dict[str, list[int]] = {}
    for i, (collection, _) in enumerate(items):
        groups.setdefault(collection, []).append(i)
    out: list[dict[str, Any]] = [{}] * len(items)
    for collection, at in groups.items():
        done = await run_all(collection, [items[i][1] for i in at])
        for i, record in zip(at, done, strict=True):
            out[i] = record
    return out


_databases: dict[str, _Database] = {}
Start = Callable[[dict[str, Any], Sink], None]
_STARTS: dict[str, Start] = {}


def operation(name: str) -> Callable[[Start], Start]:
    """Register how a ``storage`` operation starts: it checks its payload and queues its
    job, whose outcome goes to a sink (so a batch queues all its calls before any runs).
    Features built on the core register theirs the same way."""

    def register(start: Start) -> Start:
        _STARTS[name] = start

        async def serve(ctx: Context, payload: dict[str, Any]) -> Any:
            future: asyncio.Future[Any] = PromptFuture()
            start(payload, lambda result, error: _settle(future, result, error))
            return await future

        serve.__name__ = name
        handler("storage", name)(serve)
        return start

    return register


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def database(payload: dict[str, Any], *, configured: bool = True) -> _Database:
    """The database a call names ("db", "v"); with ``configured``, refused when this
    worker lacks the settings the call was made under (its "cfg" generation)."""
    name, version = check_database(payload.get("db"), payload.get("v"))
    found = _databases.get(name)
    if found is None:
        found = _databases[name] = _Database(name, version)
    if configured:
        found.check_generation(payload.get("cfg", 0))
    return found


def _differences(spec: dict[str, Any], stores: dict[str, StoreInfo]) -> str:
    """The first way the database differs from the declared schema ("" if none)."""
    for name, want in spec["stores"].items():
        info = stores.get(name)
        if info is None and name.startswith("_"):
            continue  # a feature's store, added at the next upgrade; the feature says so
        if info is None:
            return f"no collection {name[:40]!r}"
        if info.key != want["key"]:
            return f"{name[:40]!r} has another key field"
        have = {(i.name, i.fields, i.unique, i.multi_entry) for i in info.indexes}
        declared = {(n, tuple(w["path"]) if isinstance(w["path"], list) else (w["path"],),
                     w["unique"], w["multi"]) for n, w in want["indexes"].items()}
        if have != declared:
            return f"the indexes of {name[:40]!r} differ"
    return ""


@operation("define")
def define(payload: dict[str, Any], sink: Sink) -> None:
    """Open (creating or upgrading) a database with the declared collections."""
    name, version = check_database(payload.get("db"), payload.get("v"))
    spec = normalize_schema(payload.get("collections"))
    timeout = float(payload.get("blocked_timeout", BLOCKED_TIMEOUT))
    entry = _databases.get(name) or _databases.setdefault(name, _Database(name, version))

    async def job() -> dict[str, Any]:
        full = entry.stores_spec(spec)
        before = (entry.version, entry.spec)
        if entry.db is not None:
            entry.db.close()  # ours would block our own upgrade
            entry.db = None
        try:
            db = await open_database(name, version, full, timeout)
        except BaseException:
            entry.version, entry.spec = before
            raise
        differs = _differences(full, db.stores)
        if differs:
            db.close()
            entry.version, entry.spec = before
            raise StorageError(f"database {name[:60]!r} is at version {db.version} with "
                               f"another schema ({differs}); raise the version to upgrade it")
        entry.version, entry.spec, entry.db = version, full, db
        return {"database": name, "version": db.version,
                "collections": sorted(n for n in db.stores if not n.startswith("_"))}

    entry.queue.put("other", job, sink)


@operation("configure")
def configure(payload: dict[str, Any], sink: Sink) -> None:
    """Take the page's settings for a database (every feature's, by name), in call order."""
    entry = database(payload, configured=False)
    settings = payload.get("settings")
    generation = payload.get("cfg")
    if not isinstance(settings, dict) or isinstance(generation, bool) \
            or not isinstance(generation, int):
        raise InvalidInputError("configure needs settings (a dict) and cfg (an int)")

    entry.received = generation

    async def job() -> None:
        entry.configure(settings, generation)

    entry.queue.put("configure", job, sink)


@operation("create")
def create_one(payload: dict[str, Any], sink: Sink) -> None:
    entry = database(payload)
    coll = check_collection(payload.get("collection"))
    entry.queue.put("create", (coll, entry.fields(payload.get("data"))), sink)


@operation("get")
def get_one(payload: dict[str, Any], sink: Sink) -> None:
    entry = database(payload)
    coll = check_collection(payload.get("collection"))
    entry.queue.put("get", (coll, check_key(_native(payload.get("id")))), sink)


def _query_args(payload: dict[str, Any]) -> tuple[_Database, str, Node]:
    entry = database(payload)
    coll = check_collection(payload.get("collection"))
    return entry, coll, validate_filter(_native(payload.get("filter")))


@operation("read")
def read_many(payload: dict[str, Any], sink: Sink) -> None:
    entry, coll, node = _query_args(payload)
    sort = check_sort(payload.get("sort"))
    limit = check_count(payload.get("limit"), "limit", True)
    offset = check_count(payload.get("offset") or 0, "offset", False) or 0

    async def job() -> list[Any]:
        records, _, _ = await entry.transact(
            [coll], False, lambda tx: read(tx, coll, node, sort, limit, offset), "read")
        return await entry.decode_all([(coll, r) for r in records])

    entry.queue.put("other", job, sink)


@operation("explain")
def explain(payload: dict[str, Any], sink: Sink) -> None:
    entry, coll, node = _query_args(payload)

    async def job() -> dict[str, Any]:
        records, scanned, tx = await entry.transact([coll], False,
                                                    lambda tx: read(tx, coll, node), "read")
        p = tx.plan
        assert p is not None
        return {"index": p.index, "ranges": None if p.ranges is None else len(p.ranges),
                "residual": None if p.residual is None else unparse(p.residual),
                "scanned": scanned, "matched": len(records)}

    entry.queue.put("other", job, sink)


@operation("count")
def count_many(payload: dict[str, Any], sink: Sink) -> None:
    entry, coll, node = _query_args(payload)

    async def job() -> int:
        n, _, _ = await entry.transact([coll], False, lambda tx: count(tx, coll, node),
                                       "count")
        return int(n)

    entry.queue.put("other", job, sink)


@operation("update")
def update_many(payload: dict[str, Any], sink: Sink) -> None:
    entry, coll, node = _query_args(payload)
    patch = entry.fields(payload.get("data"))

    async def job() -> int:
        fields = await entry.encode(coll, patch)
        n, _, _ = await entry.transact([coll], True,
                                       lambda tx: update(tx, coll, node, fields), "update")
        return int(n)

    entry.queue.put("other", job, sink)


@operation("delete")
def delete_many(payload: dict[str, Any], sink: Sink) -> None:
    entry, coll, node = _query_args(payload)

    async def job() -> int:
        n, _, _ = await entry.transact([coll], True, lambda tx: delete(tx, coll, node),
                                       "delete")
        return int(n)

    entry.queue.put("other", job, sink)


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(f"{what} must be a list")
    return value


@operation("bulk_create")
def bulk_create(payload: dict[str, Any], sink: Sink) -> None:
    entry = database(payload)
    coll = check_collection(payload.get("collection"))
    records = [entry.fields(r) for r in _list(payload.get("records"), "records")]

    async def job() -> int:
        items = [(coll, r) for r in await entry.encode_all([(coll, r) for r in records])]
        done, _, _ = await entry.transact([coll], True, lambda tx: create(tx, items),
                                          "bulk_create")
        return len(done)

    entry.queue.put("other", job, sink)


@operation("bulk_update")
def bulk_update_many(payload: dict[str, Any], sink: Sink) -> None:
    entry = database(payload)
    coll = check_collection(payload.get("collection"))
    changes = [entry.fields(r) for r in _list(payload.get("records"), "records")]

    async def job() -> int:
        encoded = await entry.encode_all([(coll, c) for c in changes])
        n, _, _ = await entry.transact([coll], True,
                                       lambda tx: bulk_update(tx, coll, encoded), "bulk_update")
        return int(n)

    entry.queue.put("other", job, sink)


@operation("bulk_delete")
def bulk_delete_many(payload: dict[str, Any], sink: Sink) -> None:
    entry = database(payload)
    coll = check_collection(payload.get("collection"))
    keys = [check_key(_native(k)) for k in _list(payload.get("ids"), "ids")]

    async def job() -> int:
        n, _, _ = await entry.transact([coll], True, lambda tx: bulk_delete(tx, coll, keys),
                                       "bulk_delete")
        return int(n)

    entry.queue.put("other", job, sink)


@operation("transaction")
def transaction(payload: dict[str, Any], sink: Sink) -> None:
    entry = database(payload)
    raw = [_native(op) for op in _list(payload.get("ops"), "ops")]

    async def job() -> list[Any]:
        db = await entry.connection()
        keys = {n: info.key for n, info in db.stores.items() if not n.startswith("_")}
        ops = [check_op(op, keys) for op in raw]
        writes = [op for op in ops if "data" in op]
        encoded = await entry.encode_all([(op["collection"], entry.fields(op["data"]))
                                        for op in writes])
        for op, data in zip(writes, encoded, strict=True):
            op["data"] = data
        results, _, _ = await entry.transact([op["collection"] for op in ops], True,
                                             lambda tx: run_ops(tx, ops), "transaction")
        # Every record read, decoded together: (result index, position in a read or -1).
        where: list[tuple[int, int]] = []
        found: list[tuple[str, dict[str, Any]]] = []
        for i, (op, result) in enumerate(zip(ops, results, strict=True)):
            if op["op"] == "get" and result is not None:
                where.append((i, -1))
                found.append((op["collection"], result))
            elif op["op"] == "read":
                where += [(i, j) for j in range(len(result))]
                found += [(op["collection"], r) for r in result]
        out = list(results)
        for (i, j), record in zip(where, await entry.decode_all(found), strict=True):
            if j < 0:
                out[i] = record
            else:
                out[i][j] = record
        return out

    entry.queue.put("other", job, sink)


def _outcome_of(exc: BaseException) -> list[Any]:
    """A failed operation of a batch, as the runtime would send it alone."""
    if isinstance(exc, WorkerBridgeError):
        return [0, exc.code, str(exc), type(exc).__name__]
    log.error("a storage operation raised", exc_info=exc)
    kind = type(exc).__name__
    return [0, "remote", f"the handler raised {kind}", kind]


@handler("storage", "batch")
async def batch(ctx: Context, payload: dict[str, Any]) -> list[list[Any]]:
    """Several calls of one page in one message: [[op, payload], ...] -> one outcome
    each, [1, result] or [0, code, message, type], in order. All are queued before any
    runs, so consecutive creates (or gets) share a transaction; the handler wakes once,
    when the last outcome is in."""
    calls = _list(payload.get("ops"), "ops")
    if not calls:
        return []
    done: asyncio.Future[list[list[Any]]] = asyncio.get_running_loop().create_future()
    out: list[list[Any]] = [[]] * len(calls)
    remaining = len(calls)

    def sink_for(i: int) -> Sink:
        def sink(result: Any, error: BaseException | None) -> None:
            nonlocal remaining
            out[i] = [1, result] if error is None else _outcome_of(error)
            remaining -= 1
            if remaining == 0 and not done.done():
                done.set_result(out)

        return sink

    with held():
        for i, call in enumerate(calls):
            sink = sink_for(i)
            try:
                op, body = call
                start = _STARTS.get(op) if op != "batch" else None
                if start is None:
                    raise InvalidInputError("unknown storage operation")
                start(body, sink)
            except Exception as exc:
                sink(None, exc)
    return await done


@handler("storage", "stats")
async def stats(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Per database: transactions run and calls waiting (group commit shows here)."""
    return {name: {"transactions": d.queue.transactions, "queued": len(d.queue)}
            for name, d in _databases.items()}
