"""The page-side API of the ``storage`` channel, and the schema checks it shares with the
worker.

Every call is checked here first (bad input raises at once, nothing is sent) and then
runs in ONE worker per bridge: the bridge's own when it has one worker, else a one-worker
pool of its own. That worker runs the calls of this page one transaction at a time, in
the order they were made, so a page's writes are serialised; see ``workers/storage.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import (
    InvalidInputError,
    InvalidTypeError,
    RemoteError,
    UnknownCollectionError,
    UnsupportedError,
    WorkerBridgeError,
    error_from_code,
)
from ._futures import PromptFuture
from ._namespaces import _Namespace
from ._platform import IN_PYODIDE, in_worker, js_global
from ._query import MAX_SAFE_INTEGER, check_sort, validate_filter
from ._txn import check_collection, check_fields, check_key, prepare_record

if TYPE_CHECKING:
    from .pool import WorkerPool

log = logging.getLogger("workerbridge.storage")

CHANNEL = "storage"
EVENTS = ("operation-completed", "operation-failed", "conflict-resolved")
MAX_BATCH = 256  # calls per message at most
BATCHED = ("create", "get")  # short calls that may share a message (and a transaction)
OPS = ("create", "update", "delete", "get", "read", "count")
DEFAULT_KEY = "id"
BLOCKED_TIMEOUT = 5.0  # seconds an upgrade waits for other tabs before giving up


# --- checks shared with the worker -------------------------------------------------------------


def _path(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{what} must be a non-empty field name")
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        raise InvalidInputError(f"{what} must be dot-separated identifiers (an IndexedDB "
                                "key path)")
    if "length" in parts[1:]:
        raise InvalidInputError(f"{what}: IndexedDB reads '.length' of strings and lists, "
                                "so a key path cannot go through it")
    return name


def _index(name: str, spec: Any, coll: str) -> dict[str, Any]:
    what = f"index {name[:40]!r} of {coll[:40]!r}"
    unique = multi = False
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"fields", "unique", "multi_entry"}
        if unknown:
            raise InvalidInputError(f"{what}: unknown option {sorted(unknown)[0][:40]!r}")
        unique, multi = spec.get("unique", False), spec.get("multi_entry", False)
        if not isinstance(unique, bool) or not isinstance(multi, bool):
            raise InvalidTypeError(f"{what}: unique and multi_entry must be bool")
        spec = spec.get("fields", name)
    if isinstance(spec, str):
        fields = [_path(spec, what)]
    elif isinstance(spec, list | tuple) and len(spec) >= 2:
        fields = [_path(f, what) for f in spec]
    else:
        raise InvalidInputError(f"{what}: fields must be a field name or a list of two or "
                                "more (a compound index)")
    if multi and len(fields) > 1:
        raise InvalidInputError(f"{what}: a compound index cannot be multi-entry")
    return {"path": fields[0] if len(fields) == 1 else fields, "unique": unique,
            "multi": multi}


def normalize_schema(collections: Any) -> dict[str, Any]:
    """``{name: {"key": "id", "indexes": {...}}}`` in the form the worker's upgrade takes:
    ``{"stores": {name: {"key": field, "indexes": {name: {"path", "unique", "multi"}}}}}``.

    An index is a field name, a list of fields (compound), or ``{"fields": ...,
    "unique": bool, "multi_entry": bool}``; ``"indexes"`` may also be a list of fields
    and field lists, named after their fields ("a", "a+b").
    """
    if not isinstance(collections, Mapping) or not collections:
        raise InvalidTypeError("collections must be a non-empty dict: name -> options")
    stores = {}
    for coll, options in collections.items():
        check_collection(coll)
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise InvalidTypeError(f"options of {coll[:40]!r} must be a dict")
        unknown = set(options) - {"key", "indexes"}
        if unknown:
            raise InvalidInputError(f"{coll[:40]!r}: unknown option {sorted(unknown)[0][:40]!r}")
        key = options.get("key", DEFAULT_KEY)
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInputError(f"{coll[:40]!r}: key must be a field name (an identifier)")
        declared = options.get("indexes", {})
        if isinstance(declared, list | tuple):
            declared = {f if isinstance(f, str) else "+".join(map(str, f)): f for f in declared}
        if not isinstance(declared, Mapping):
            raise InvalidTypeError(f"indexes of {coll[:40]!r} must be a dict or a list")
        indexes = {}
        for name, spec in declared.items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"{coll[:40]!r}: index names must be non-empty str")
            indexes[name] = _index(name, spec, coll)
        stores[coll] = {"key": key, "indexes": indexes}
    return {"stores": stores}


def check_database(name: Any, version: Any) -> tuple[str, int]:
    if not isinstance(name, str) or not name:
        raise InvalidInputError("database must be a non-empty str")
    if isinstance(version, bool) or not isinstance(version, int) \
            or not 1 <= version <= MAX_SAFE_INTEGER:
        raise InvalidInputError("version must be a positive integer")
    return name, version


def check_count(value: Any, what: str, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{what} must be a non-negative integer")
    return value


def check_op(op: Any, keys: Mapping[str, str]) -> dict[str, Any]:
    """One operation of ``transaction()``, checked; a create gets its key filled in.
    ``keys``: collection -> key field."""
    if not isinstance(op, Mapping):
        raise InvalidTypeError("each transaction operation must be a dict")
    kind = op.get("op")
    if kind not in OPS:
        raise InvalidInputError(f"op must be one of {', '.join(OPS)}")
    coll = check_collection(op.get("collection"))
    if coll not in keys:
        raise UnknownCollectionError(f"no collection {coll[:60]!r} in the schema")
    out: dict[str, Any] = {"op": kind, "collection": coll}
    if kind == "create":
        out["data"] = prepare_record(op.get("data"), keys[coll])
    elif kind == "get":
        out["id"] = check_key(op.get("id"))
    else:
        validate_filter(op.get("filter"))
        out["filter"] = op.get("filter")
        if kind == "update":
            out["data"] = check_fields(op.get("data"))
        elif kind == "read":
            check_sort(op.get("sort"))
            out["sort"] = op.get("sort")
            out["limit"] = check_count(op.get("limit"), "limit", True)
            out["offset"] = check_count(op.get("offset", 0) or 0, "offset", False)
    return out


# --- page-side state ---------------------------------------------------------------------------


@dataclass(slots=True)
class _OpStats:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    latency: float = 0.0  # seconds, summed

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "succeeded": self.succeeded, "failed": self.failed,
                "success_rate": self.succeeded / self.total if self.total else 0.0,
                "average_latency_ms": self.latency / self.total * 1000 if self.total else 0.0}


Pending = tuple[str, dict[str, Any], asyncio.Future[Any], bool]  # op, payload, future, write


@dataclass(slots=True)
class _State:
    """What one bridge's storage remembers: the schema in use, listeners, metrics, and
    the calls made in this turn, not yet sent."""

    pool: WorkerPool | None = None
    database: str | None = None
    version: int = 0
    keys: dict[str, str] = field(default_factory=dict)  # collection -> key field
    listeners: dict[str, list[Callable[[dict[str, Any]], Any]]] = field(
        default_factory=lambda: {e: [] for e in EVENTS})
    stats: dict[str, _OpStats] = field(default_factory=dict)
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    pending: list[Pending] = field(default_factory=list)
    target: WorkerPool | None = None  # where pending calls go
    scheduled: bool = False

    def send(self, pool: WorkerPool, op: str, payload: dict[str, Any],
             write: bool) -> asyncio.Future[Any]:
        """Queue a call. Single creates and gets made until the loop's next turn leave
        together, in one message (a long run of them every ``MAX_BATCH`` calls, so the
        worker starts on the first while the page still makes the next)."""
        future: asyncio.Future[Any] = PromptFuture()
        if self.target is not pool:
            self.flush()
            self.target = pool
        self.pending.append((op, payload, future, write))
        if op not in BATCHED or len(self.pending) >= MAX_BATCH:
            # A longer call goes alone (its caller hears as soon as it is done), after
            # whatever was queued before it: the worker receives calls in order.
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)
        return future

    def _scheduled_flush(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        pending = [p for p in self.pending if not p[2].done()]
        self.pending = []
        if pending and self.target is not None:
            _dispatch(self.target, pending)


def _dispatch(pool: WorkerPool, calls: list[Pending]) -> None:
    # A write whose worker died may or may not have committed: never send it twice.
    retries = 0 if any(c[3] for c in calls) else None
    try:
        if len(calls) == 1:
            op, payload, future, _ = calls[0]
            job = pool.submit(CHANNEL, op, payload, retries=retries)
            job.add_done_callback(lambda j: _forward(j, future))
            future.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
        else:
            ops = [[op, payload] for op, payload, _, _ in calls]
            job = pool.submit(CHANNEL, "batch", {"ops": ops}, retries=retries)
            job.add_done_callback(lambda j: _distribute(j, calls))
    except Exception as exc:  # the pool refused: full queue, shut down, unsendable payload
        for call in calls:
            _settle(call[2], None, _copy(exc))


def _forward(job: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    if job.cancelled():
        future.cancel()
    elif job.exception() is not None:
        _settle(future, None, job.exception())
    else:
        _settle(future, job.result(), None)


def _distribute(job: asyncio.Future[Any], calls: list[Pending]) -> None:
    if job.cancelled() or job.exception() is not None:
        for call in calls:
            if job.cancelled():
                call[2].cancel()
            else:
                _settle(call[2], None, _copy(job.exception()))  # type: ignore[arg-type]
        return
    for call, outcome in zip(calls, job.result(), strict=True):
        if outcome[0]:
            _settle(call[2], outcome[1], None)
        else:
            _settle(call[2], None, error_from_code(outcome[1], outcome[2], outcome[3]))


def _copy(exc: BaseException) -> BaseException:
    """One exception per caller (raising a shared one would chain their tracebacks)."""
    if isinstance(exc, WorkerBridgeError) and type(exc) is not RemoteError:
        try:
            return type(exc)(str(exc))
        except Exception:
            return exc
    return exc


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_STATES: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


def _state(bridge: Any) -> _State:
    state = _STATES.get(bridge)
    if state is None:
        state = _STATES[bridge] = _State()
    return state


class StorageNamespace(_Namespace):
    """IndexedDB collections in a worker: CRUD, filters, atomic transactions."""

    channel = "storage"

    def __init__(self, bridge: Any) -> None:
        super().__init__(bridge)
        self._s = _state(bridge)

    def _pool(self) -> WorkerPool:
        """One worker runs every storage call of this bridge, in order."""
        state = self._s
        main = self._bridge.pool
        if main.size == 1:
            return main
        if state.pool is None or state.pool._closed:
            from .pool import WorkerPool

            state.pool = WorkerPool(
                main._factory, size=1, task_timeout=main.task_timeout,
                max_queue=main.max_queue, max_in_flight=main.max_in_flight,
                boot_timeout=main.boot_timeout, fallback_factory=main._fallback_factory)
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
        payload["db"], payload["v"] = state.database, state.version
        return await state.send(self._pool(), op, payload, write)

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
        total = _OpStats()
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
            state = self._s
            result = await state.send(
                self._pool(), "define", {"db": name, "v": version, "collections": collections,
                                         "blocked_timeout": float(blocked_timeout)}, True)
            state.database, state.version = name, version
            state.keys = {c: s["key"] for c, s in spec["stores"].items()}
            return dict(result)

    # --- single operations -----------------------------------------------------------------

    async def create(self, collection: str, data: dict[str, Any]) -> dict[str, Any]:
        """Store a new record; returns it with its key (a UUID4 string unless given).
        An existing key raises ConstraintError and writes nothing."""
        with self._measure("create", collection):
            coll, key = self._key(collection)
            record = prepare_record(data, key)
            await self._send("create", {"collection": coll, "data": record}, True)
            return record

    async def get(self, collection: str, id: Any) -> dict[str, Any] | None:
        """The record with key ``id``, or None."""
        with self._measure("get", collection):
            coll, _ = self._key(collection)
            result = await self._send("get", {"collection": coll, "id": check_key(id)}, False)
            return None if result is None else dict(result)

    async def read(self, collection: str, filter: Any = None, *,
                   sort: Any = None, limit: int | None = None,
                   offset: int | None = None) -> list[dict[str, Any]]:
        """Records matching ``filter``, sorted by ``sort`` (a field, (field, "desc"), or a
        list of those; key order without), then ``offset`` skipped and ``limit`` kept."""
        with self._measure("read", collection):
            coll, _ = self._key(collection)
            validate_filter(filter)
            check_sort(sort)
            payload = {"collection": coll, "filter": filter, "sort": sort,
                       "limit": check_count(limit, "limit", True),
                       "offset": check_count(offset or 0, "offset", False)}
            return list(await self._send("read", payload, False))

    async def update(self, collection: str, filter: Any, data: dict[str, Any]) -> int:
        """Merge ``data``'s fields into every record matching ``filter`` (one
        transaction); the number of records updated."""
        with self._measure("update", collection):
            coll, _ = self._key(collection)
            validate_filter(filter)
            patch = check_fields(data)
            return int(await self._send("update", {"collection": coll, "filter": filter,
                                                   "data": patch}, True))

    async def delete(self, collection: str, filter: Any) -> int:
        """Delete every record matching ``filter`` ({} deletes all); the number deleted."""
        with self._measure("delete", collection):
            coll, _ = self._key(collection)
            if filter is None:
                raise InvalidInputError("delete needs a filter; pass {} to delete every record")
            validate_filter(filter)
            return int(await self._send("delete", {"collection": coll, "filter": filter}, True))

    async def count(self, collection: str, filter: Any = None) -> int:
        """The number of records matching ``filter`` (all without one)."""
        with self._measure("count", collection):
            coll, _ = self._key(collection)
            validate_filter(filter)
            return int(await self._send("count", {"collection": coll, "filter": filter}, False))

    async def explain(self, collection: str, filter: Any = None) -> dict[str, Any]:
        """How ``read(collection, filter)`` runs: {"index" (None: the key), "ranges",
        "residual" (the filter left to check), "scanned" (records IndexedDB returned),
        "matched"}."""
        with self._measure("explain", collection):
            coll, _ = self._key(collection)
            validate_filter(filter)
            return dict(await self._send("explain", {"collection": coll, "filter": filter},
                                         False))

    # --- bulk and transactions -------------------------------------------------------------

    async def bulk_create(self, collection: str,
                          records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store all ``records`` in one transaction (all or none); returns them with keys."""
        with self._measure("bulk_create", collection):
            coll, key = self._key(collection)
            prepared = [prepare_record(r, key) for r in _items(records, "records")]
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
        payload: Mapping[str, Any] = operation.get("payload")  # type: ignore[assignment]
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


class _Measure:
    """``with``: time one call, count it in the metrics and tell the listeners."""

    __slots__ = ("_coll", "_ns", "_op", "_started")

    def __init__(self, ns: StorageNamespace, op: str, collection: Any) -> None:
        self._ns, self._op, self._coll = ns, op, collection
        self._started = time.perf_counter()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            return  # the caller gave up: neither a success nor a failure
        elapsed = time.perf_counter() - self._started
        state = self._ns._s
        stats = state.stats.get(self._op)
        if stats is None:
            stats = state.stats[self._op] = _OpStats()
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
