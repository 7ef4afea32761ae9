"""The page-side API of the ``storage`` channel.

Every call is checked here first (bad input raises at once, nothing is sent) and then
runs in ONE worker per bridge: the bridge's own when it has one worker, else a one-worker
pool of its own. That worker runs the calls of this page one transaction at a time, in
the order they were made, so a page's writes are serialised; see ``workers/storage.py``.

Its worker half: ``workers/storage.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from workerbridge.channels.base import Namespace
from workerbridge.core.errors import (
    InvalidInputError,
    InvalidTypeError,
    UnknownCollectionError,
    UnsupportedError,
)
from workerbridge.core.futures import PromptFuture
from workerbridge.core.platform import IN_PYODIDE, in_worker, js_global
from workerbridge.storage.calls import EVENTS, Call, OpStats, state_of
from workerbridge.storage.query import check_sort, validate_filter
from workerbridge.storage.schema import (
    BLOCKED_TIMEOUT,
    DEFAULT_KEY,
    check_collection,
    check_count,
    check_database,
    check_fields,
    check_key,
    check_op,
    normalize_schema,
    prepare_record,
)
from workerbridge.storage.storage_audit import AuditAPI
from workerbridge.storage.storage_fields import FieldsAPI
from workerbridge.storage.storage_sync import SyncAPI

if TYPE_CHECKING:
    from workerbridge.pool.workerpool import WorkerPool

log = logging.getLogger("workerbridge.storage")


class StorageCore(Namespace):
    """IndexedDB collections in a worker: CRUD, filters, atomic transactions."""

    channel = "storage"

    def __init__(self, bridge: Any) -> None:
        super().__init__(bridge)
        self._s = state_of(bridge)

    def _pool(self) -> WorkerPool:
        """One worker runs every storage call of this bridge, in order."""
        state = self._s
        main = self._bridge.pool
        if main.size == 1:
            return main
        if state.pool is None or state.pool.closed:
            state.pool = main.sibling(size=1)
        return state.pool

    def _key(self, collection: Any) -> tuple[str, str]:
        coll = check_collection(collection)
        state = self._s
        if state.database is None:
            raise UnknownCollectionError("no database is defined: call storage.define() first")
        key = state.keys.get(coll)
        if key is None:
            raise UnknownCollectionError(f"no collection {coll[:60]!r} in database "
                                         f"{state.database[:60]!r}")
        return coll, key

    async def _send(self, op: str, payload: dict[str, Any], write: bool) -> Any:
        state = self._s
        return await state.send(self._pool(), op, state.stamp(payload), write)

    async def _configure(self, feature: str, value: Any) -> None:
        """Set a feature's settings for the current database (see ``_calls``)."""
        state = self._s
        if state.database is None:
            raise UnknownCollectionError("no database is defined: call storage.define() first")
        await state.configure(self._pool(), feature, value)

    # --- seams: features check their own rules before a call leaves (no-ops here) ---------

    def _check_define(self, database: str, spec: dict[str, Any]) -> None:
        """Refuse a schema a feature cannot serve (``spec``: normalised)."""

    def _check_write(self, collection: str, data: Any) -> None:
        """Refuse fields a feature cannot store (a record, or an update's fields)."""

    def _check_query(self, collection: str, flt: Any, sort: Any = None) -> None:
        """Refuse a filter or sort a feature cannot serve."""

    # --- events and metrics ----------------------------------------------------------------

    def _measure(self, op: str, collection: Any) -> _Measure:
        return _Measure(self, op, collection)

    def on(self, event: str, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call ``callback(detail)`` on every ``event``: "operation-completed",
        "operation-failed" (detail has "error" and "message") or "conflict-resolved".
        A coroutine function is scheduled. Returns a function that unsubscribes."""
        if event not in EVENTS:
            raise InvalidInputError(f"event must be one of {', '.join(EVENTS)}")
        if not callable(callback):
            raise InvalidTypeError("callback must be callable")
        self._s.listeners[event].append(callback)
        return lambda: self.off(event, callback)

    def off(self, event: str, callback: Callable[[dict[str, Any]], Any]) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._s.listeners[event].remove(callback)

    def emit(self, event: str, detail: dict[str, Any]) -> None:
        """Tell ``event``'s listeners; a listener's exception is logged, never raised."""
        state = self._s
        for callback in list(state.listeners.get(event, ())):
            try:
                result = callback(dict(detail))
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    state.tasks.add(task)
                    task.add_done_callback(_listener_done(state.tasks))
            except Exception:
                log.exception("a storage %s listener raised", event)

    def get_operation_metrics(self) -> dict[str, Any]:
        """{total, succeeded, failed, success_rate (0..1), average_latency_ms,
        by_operation: {op: the same fields}} over this bridge's storage calls."""
        by_op = self._s.stats
        total = OpStats()
        for s in by_op.values():
            total.total += s.total
            total.succeeded += s.succeeded
            total.failed += s.failed
            total.latency += s.latency
        return {**total.as_dict(), "by_operation": {op: s.as_dict() for op, s in by_op.items()}}

    # --- schema ----------------------------------------------------------------------------

    async def define(self, database: str, version: int, collections: Mapping[str, Any], *,
                     blocked_timeout: float = BLOCKED_TIMEOUT) -> dict[str, Any]:
        """Open ``database`` at ``version`` with these collections (upgrading it if its
        version is lower) and make it the one this bridge's storage calls use.

        ``collections``: name -> {"key": "id", "indexes": {name: field | [fields] |
        {"fields", "unique", "multi_entry"}}}. Another tab holding an older version open
        makes the upgrade wait at most ``blocked_timeout`` seconds, then raise
        StorageBlockedError. Returns {"database", "version", "collections"}.
        """
        with self._measure("define", None):
            name, version = check_database(database, version)
            spec = normalize_schema(collections)
            if isinstance(blocked_timeout, bool) or not isinstance(blocked_timeout, int | float) \
                    or not 0 < blocked_timeout <= 600:
                raise InvalidInputError("blocked_timeout must be 0 to 600 seconds")
            self._check_define(name, spec)
            state = self._s
            result = await state.send(
                self._pool(), "define", {"db": name, "v": version, "collections": collections,
                                         "blocked_timeout": float(blocked_timeout)}, True)
            if state.database != name:
                state.settings.clear()  # settings belong to one database
            state.database, state.version = name, version
            state.keys = {c: s["key"] for c, s in spec["stores"].items()}
            state.indexed = {c: [tuple(w["path"]) if isinstance(w["path"], list)
                                 else (w["path"],) for w in s["indexes"].values()]
                             for c, s in spec["stores"].items()}
            return dict(result)

    # --- single operations -----------------------------------------------------------------

    # ``create`` and ``get`` return futures, not coroutines: ten thousand of them gathered
    # at once would otherwise each need a task, and in Pyodide every task's first step is
    # a trip through the browser's scheduler. Awaiting one is the same either way.

    def create(self, collection: str, data: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        """Store a new record; returns it with its key (a UUID4 string unless given).
        An existing key raises ConstraintError and writes nothing."""
        measure = self._measure("create", collection)
        try:
            coll, key = self._key(collection)
            self._check_write(coll, data)
            record = prepare_record(data, key)
        except Exception as exc:
            return measure.failed(exc)
        payload = self._s.stamp({"collection": coll, "data": record})
        return self._s.put(self._pool(), Call("create", payload, True, lambda _: record,
                                              measure.finish))

    def get(self, collection: str, id: Any) -> Awaitable[dict[str, Any] | None]:
        """The record with key ``id``, or None."""
        measure = self._measure("get", collection)
        try:
            coll, _ = self._key(collection)
            payload = self._s.stamp({"collection": coll, "id": check_key(id)})
        except Exception as exc:
            return measure.failed(exc)
        return self._s.put(self._pool(), Call("get", payload, False, _record, measure.finish))

    async def read(self, collection: str, filter: Any = None, *,
                   sort: Any = None, limit: int | None = None,
                   offset: int | None = None) -> list[dict[str, Any]]:
        """Records matching ``filter``, sorted by ``sort`` (a field, (field, "desc"), or a
        list of those; key order without), then ``offset`` skipped and ``limit`` kept."""
        with self._measure("read", collection):
            coll, _ = self._key(collection)
            validate_filter(filter)
            check_sort(sort)
            self._check_query(coll, filter, sort)
            payload = {"collection": coll, "filter": filter, "sort": sort,
                       "limit": check_count(limit, "limit", True),
                       "offset": check_count(offset or 0, "offset", False)}
            return list(await self._send("read", payload, False))

    async def update(self, collection: str, filter: Any, data: dict[str, Any]) -> int:
        """Merge ``data``'s fields into every record matching ``filter`` (one
        transaction); the number of records updated."""
        with self._measure("update", collection):
            coll, key = self._key(collection)
            validate_filter(filter)
            patch = check_fields(data)
            self._check_query(coll, filter)
            self._check_write(coll, patch)
            if key in patch:
                raise InvalidInputError(f"an update cannot change a record's key ({key!r})")
            return await self._send_update(coll, key, filter, patch)

    async def _send_update(self, coll: str, key: str, filter: Any,
                           patch: dict[str, Any]) -> int:
        """Send a checked update; the number of records updated (sync stamps it)."""
        return int(await self._send("update", {"collection": coll, "filter": filter,
                                               "data": patch}, True))

    async def delete(self, collection: str, filter: Any) -> int:
        """Delete every record matching ``filter`` ({} deletes all); the number deleted."""
        with self._measure("delete", collection):
            coll, _ = self._key(collection)
            if filter is None:
                raise InvalidInputError("delete needs a filter; pass {} to delete every record")
            validate_filter(filter)
            self._check_query(coll, filter)
            return int(await self._send("delete", {"collection": coll, "filter": filter}, True))

    async def count(self, collection: str, filter: Any = None) -> int:
        """The number of records matching ``filter`` (all without one)."""
        with self._measure("count", collection):
            coll, _ = self._key(collection)
            validate_filter(filter)
            self._check_query(coll, filter)
            return int(await self._send("count", {"collection": coll, "filter": filter}, False))

    async def explain(self, collection: str, filter: Any = None) -> dict[str, Any]:
        """How ``read(collection, filter)`` runs: {"index" (None: the key), "ranges",
        "residual" (the filter left to check), "scanned" (records IndexedDB returned),
        "matched"}."""
        with self._measure("explain", collection):
            coll, _ = self._key(collection)
            validate_filter(filter)
            self._check_query(coll, filter)
            return dict(await self._send("explain", {"collection": coll, "filter": filter},
                                         False))

    # --- bulk and transactions -------------------------------------------------------------

    async def bulk_create(self, collection: str,
                          records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store all ``records`` in one transaction (all or none); returns them with keys."""
        with self._measure("bulk_create", collection):
            coll, key = self._key(collection)
            items = _items(records, "records")
            for r in items:
                self._check_write(coll, r)
            prepared = [prepare_record(r, key) for r in items]
            await self._send("bulk_create", {"collection": coll, "records": prepared}, True)
            return prepared

    async def bulk_update(self, collection: str, records: Sequence[dict[str, Any]]) -> int:
        """Merge each dict's fields into the record with its key, in one transaction;
        keys not found are skipped. The number of records updated."""
        with self._measure("bulk_update", collection):
            coll, key = self._key(collection)
            changes = []
            for r in _items(records, "records"):
                change = check_fields(r, "each record")
                self._check_write(coll, change)
                if key not in change:
                    raise InvalidInputError(f"each record of bulk_update needs its key {key!r}")
                check_key(change[key], key)
                changes.append(change)
            return int(await self._send("bulk_update", {"collection": coll,
                                                        "records": changes}, True))

    async def bulk_delete(self, collection: str, ids: Sequence[Any]) -> int:
        """Delete the records with these keys, in one transaction; the number deleted."""
        with self._measure("bulk_delete", collection):
            coll, _ = self._key(collection)
            keys = [check_key(k) for k in _items(ids, "ids")]
            return int(await self._send("bulk_delete", {"collection": coll, "ids": keys}, True))

    async def transaction(self, ops: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Run ``ops`` in one IndexedDB transaction, all or nothing; one result each.

        Each op: {"op": "create"|"update"|"delete"|"get"|"read"|"count", "collection",
        and "data" / "filter" / "id" / "sort" / "limit" / "offset" as the single calls
        take them}. A failing op (e.g. a duplicate key) undoes every op before it.
        """
        with self._measure("transaction", None):
            state = self._s
            if state.database is None:
                raise UnknownCollectionError("no database is defined: call storage.define() "
                                             "first")
            checked = [check_op(op, state.keys) for op in _items(ops, "ops")]
            for op in checked:
                self._check_query(op["collection"], op.get("filter"), op.get("sort"))
                self._check_write(op["collection"], op.get("data"))
            if not checked:
                return []
            return list(await self._send("transaction", {"ops": checked}, True))

    async def execute_operation(self, operation: Mapping[str, Any]) -> Any:
        """``{"type": "crud", "operation": "create"|"read"|"update"|"delete",
        "payload": {"collection", "data" | "filter" | "id", ...}}``: the matching call.
        A read with an "id" is a get."""
        if not isinstance(operation, Mapping) or operation.get("type") != "crud":
            raise InvalidInputError('operation must be {"type": "crud", "operation": ..., '
                                    '"payload": {...}}')
        payload = operation.get("payload")
        if not isinstance(payload, Mapping):
            raise InvalidTypeError("operation['payload'] must be a dict")
        kind = operation.get("operation")
        coll: Any = payload.get("collection")
        data: Any = payload.get("data")
        if kind == "create":
            return await self.create(coll, data)
        if kind == "read":
            if "id" in payload:
                return await self.get(coll, payload["id"])
            return await self.read(coll, payload.get("filter"), sort=payload.get("sort"),
                                   limit=payload.get("limit"), offset=payload.get("offset"))
        if kind in ("update", "delete"):
            if "id" in payload:
                key = self._s.keys.get(coll, DEFAULT_KEY) if isinstance(coll, str) \
                    else DEFAULT_KEY
                flt = {key: payload["id"]}
            elif "filter" in payload:
                flt = payload["filter"]
            else:
                raise InvalidInputError("update and delete need a 'filter' or an 'id'")
            if kind == "update":
                return await self.update(coll, flt, data)
            return await self.delete(coll, flt)
        raise InvalidInputError("operation must be create, read, update or delete")

    # --- the page's own storage --------------------------------------------------------------

    async def persist(self) -> bool:
        """Ask the browser to keep this origin's storage under pressure
        (``navigator.storage.persist()``; only the page can, not a worker)."""
        return bool(await self._storage_manager().persist())

    async def persisted(self) -> bool:
        return bool(await self._storage_manager().persisted())

    async def estimate(self) -> dict[str, int]:
        """{"usage", "quota"} in bytes for this origin (``navigator.storage.estimate()``)."""
        out = await self._storage_manager().estimate()
        return {"usage": int(out.usage), "quota": int(out.quota)}

    @staticmethod
    def _storage_manager() -> Any:
        if not IN_PYODIDE or in_worker():
            raise UnsupportedError("navigator.storage.persist() runs on the page only")
        manager = getattr(js_global().navigator, "storage", None)
        if manager is None:
            raise UnsupportedError("this browser has no navigator.storage (StorageManager)")
        return manager


def _record(result: Any) -> dict[str, Any] | None:
    return None if result is None else dict(result)


class _Measure:
    """``with``: time one call, count it in the metrics and tell the listeners. (Or
    ``finish``, for a call that runs as a future.)"""

    __slots__ = ("_coll", "_ns", "_op", "_started")

    def __init__(self, ns: StorageCore, op: str, collection: Any) -> None:
        self._ns, self._op, self._coll = ns, op, collection
        self._started = time.perf_counter()

    def __enter__(self) -> None:
        return None

    def finish(self, exc: BaseException | None) -> None:
        """The call ended: with ``exc``, or None for success."""
        self.__exit__(None if exc is None else type(exc), exc, None)

    def failed(self, exc: BaseException) -> asyncio.Future[Any]:
        """A future of ``exc`` (raised where the call is awaited, as a coroutine would)."""
        self.finish(exc)
        out: asyncio.Future[Any] = PromptFuture()
        out.set_exception(exc)
        return out

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            return  # the caller gave up: neither a success nor a failure
        elapsed = time.perf_counter() - self._started
        state = self._ns._s
        stats = state.stats.get(self._op)
        if stats is None:
            stats = state.stats[self._op] = OpStats()
        stats.total += 1
        stats.latency += elapsed
        if exc is None:
            stats.succeeded += 1
            event = "operation-completed"
        else:
            stats.failed += 1
            event = "operation-failed"
        if not state.listeners[event]:
            return
        detail: dict[str, Any] = {
            "operation": self._op, "database": state.database,
            "collection": self._coll if isinstance(self._coll, str) else None,
            "duration_ms": elapsed * 1000}
        if exc is not None:
            detail["error"], detail["message"] = type(exc).__name__, str(exc)
        self._ns.emit(event, detail)


def _items(values: Any, what: str) -> list[Any]:
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
        raise InvalidTypeError(f"{what} must be a list")
    return list(values)


def _listener_done(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a storage listener raised", exc_info=task.exception())

    return done


class StorageNamespace(FieldsAPI, AuditAPI, SyncAPI, StorageCore):
    """IndexedDB collections in a worker: CRUD, filters, atomic transactions, field
    encryption, an audit log, and live queries shared between tabs."""
