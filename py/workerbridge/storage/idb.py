"""IndexedDB, driven from Python without ever losing a transaction (browser glue).

In Pyodide every ``await`` of a JS promise resumes Python in a later browser task, and an
IndexedDB transaction commits itself as soon as a task ends with no request pending: a
transaction that spans a Python ``await`` is already gone (TransactionInactiveError). So
each transaction here is run entirely by the JS below. Python hands it the first batch of
requests; whenever a batch has succeeded the runner calls Python back *synchronously*
(``step``) for the next batch, and issues it from inside IndexedDB's own success
callback, while the transaction is still active. Python takes part only through that
synchronous callback and never awaits inside a transaction.

The runner resolves only on the transaction's ``complete`` event (writes use
``durability: "strict"``: acknowledged once on disk) and rejects on ``abort`` with the
DOMException's name, which ``storage_error`` maps to the one exception hierarchy; an
aborted transaction wrote nothing.

Host-importable: ``js``/``pyodide`` are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import secrets
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workerbridge.core.errors import (
    ConstraintError,
    InvalidInputError,
    StorageBlockedError,
    StorageError,
    StorageQuotaError,
    WorkerBridgeError,
)
from workerbridge.core.futures import JsRejection, call_js
from workerbridge.storage import idb_js
from workerbridge.storage.plan import IndexSpec
from workerbridge.storage.txn import Final, Program, StoreInfo

# Every name a failed IndexedDB call can carry (the DOMException names the IndexedDB 3.0
# spec throws, plus our own "Blocked", "NotDefined", "KeyPathChanged", "StepFailed"),
# mapped to (exception class, message). Messages never quote the data.
DOM_ERRORS: dict[str, tuple[type[WorkerBridgeError], str]] = {
    "QuotaExceededError": (StorageQuotaError, "the origin's storage quota is exhausted"),
    "ConstraintError": (ConstraintError, "a record with that key, or with that value in a "
                                         "unique index, already exists"),
    "VersionError": (StorageBlockedError, "the database was upgraded to a newer version, "
                                          "by another tab; define() that schema (or reload)"),
    "Blocked": (StorageBlockedError, "the upgrade is blocked: another tab keeps an older "
                                     "version of the database open"),
    "DataCloneError": (InvalidInputError, "a value is not serialisable (IndexedDB cannot "
                                          "clone it)"),
    "DataError": (InvalidInputError, "a key or key range is not a valid IndexedDB key"),
    "InvalidAccessError": (InvalidInputError, "IndexedDB refused the schema (a multi-entry "
                                              "index needs a single field)"),
    "SyntaxError": (InvalidInputError, "a key path is not a valid IndexedDB key path"),
    "NotFoundError": (StorageError, "a collection or index is missing from the database"),
    "TransactionInactiveError": (StorageError, "the transaction ended before its requests "
                                               "were made"),
    "ReadOnlyError": (StorageError, "a write was attempted in a read-only transaction"),
    "InvalidStateError": (StorageError, "the database connection is closed"),
    "AbortError": (StorageError, "the transaction was aborted"),
    "TimeoutError": (StorageError, "IndexedDB timed out"),
    "UnknownError": (StorageError, "IndexedDB failed (disk or browser error)"),
    "NotReadableError": (StorageError, "IndexedDB could not read the stored data"),
    "SecurityError": (StorageError, "IndexedDB is not available to this page (opaque "
                                    "origin or storage disabled)"),
    "NotDefined": (StorageError, "the database does not exist here yet; call define()"),
    "KeyPathChanged": (StorageError, "a collection's key field changed; drop the "
                                     "collection in one version and re-create it in the next"),
    "StepFailed": (StorageError, "the transaction was aborted"),
}


def storage_error(name: str, doing: str = "") -> WorkerBridgeError:
    """The exception for a failed IndexedDB call, from the DOMException ``name``."""
    cls, message = DOM_ERRORS.get(name, (StorageError, f"IndexedDB failed ({name[:40]})"))
    prefix = f"{doing}: " if doing else ""
    suffix = "; nothing of the transaction was written" if cls is not StorageBlockedError \
        and doing else ""
    return cls(f"{prefix}{message}{suffix}")


# Stands for a bytes value in a batch's JSON text. Field names cannot start with "$" and
# the suffix is drawn per worker, so no stored value can pass for it.
BYTES_MARK = "$bytes:" + secrets.token_hex(8)

_JS = idb_js.SOURCE.replace("BYTES", json.dumps(BYTES_MARK))

_glue: Any = None


def _js() -> Any:
    global _glue
    if _glue is None:
        import js

        _glue = js.Function.new(_JS)()
    return _glue


def _error_name(exc: Any) -> str:
    return str(getattr(exc, "message", "") or "UnknownError")


# --- values across the boundary -------------------------------------------------------------


def to_js_batch(batch: list[Any]) -> Any:
    """A batch for the runner: one JSON string when it is JSON data (cheap), the same
    with its bytes beside it when it holds bytes, else JS objects (JS objects pass
    through)."""
    from workerbridge.core.jsconv import dumps

    try:
        return dumps(batch)
    except (TypeError, ValueError):
        pass
    import js
    from pyodide.ffi import to_js

    found: list[bytes | bytearray | memoryview] = []

    def mark(value: Any) -> Any:
        if isinstance(value, bytes | bytearray | memoryview):
            found.append(value)
            return {BYTES_MARK: len(found) - 1}
        raise TypeError

    try:
        text = json.JSONEncoder(separators=(",", ":"), allow_nan=False,
                                default=mark).encode(batch)
    except (TypeError, ValueError):  # JS objects, or NaN: converted one by one
        return to_js(batch, dict_converter=js.Object.fromEntries, create_pyproxies=False)
    # Converting dicts one by one cost ~40 us a record; this is one parse in JS.
    from workerbridge.core.jsconv import bytes_to_js

    sizes = array("I", [memoryview(b).nbytes for b in found])
    return _js().revive(text, bytes_to_js(b"".join(found)),
                        js.Uint32Array.new(bytes_to_js(memoryview(sizes))))


def from_js(value: Any) -> Any:
    """A runner's result as Python: JSON text parsed; JS objects converted, with
    ArrayBuffers and typed arrays as bytes."""
    if isinstance(value, str):
        return json.loads(value)
    return _py(value)


def _py(value: Any) -> Any:
    from pyodide.ffi import JsProxy

    if not isinstance(value, JsProxy):
        return value
    import js

    tag = str(js.Object.prototype.toString.call(value))
    if tag == "[object Array]":
        return [_py(v) for v in value]
    if tag == "[object Object]":
        return {str(k): _py(v) for k, v in js.Object.entries(value)}
    if tag == "[object ArrayBuffer]" or js.ArrayBuffer.isView(value):
        return bytes(value.to_bytes())
    return value


def _results(value: Any) -> Any:
    """A runner's results as Python (``from_js``), converted by one to_py() inside
    Pyodide: walking records that hold bytes from Python cost a few FFI calls per value
    (about 0.25 ms per record)."""
    from pyodide.ffi import JsProxy, jsnull

    if isinstance(value, str):
        return json.loads(value)
    if not isinstance(value, JsProxy):
        return value
    return _plain(value.to_py(), jsnull)


def _plain(value: Any, null: Any) -> Any:
    """to_py()'s memoryviews (ArrayBuffers and typed arrays) as bytes, its ``null``
    (jsnull) as None."""
    kind = type(value)
    if kind is dict:
        return {str(k): v if type(v) in _SCALARS else _plain(v, null)
                for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else _plain(v, null) for v in value]
    if kind is memoryview:
        return value.tobytes()
    return None if value is null else value


_SCALARS = frozenset({str, int, float, bool, type(None)})


# --- connections and transactions -------------------------------------------------------------


@dataclass(slots=True)
class Database:
    """One open IndexedDB connection and the schema it found."""

    name: str
    version: int
    handle: Any  # the JS {db, closed, reason}
    stores: dict[str, StoreInfo] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        return bool(self.handle.closed)

    @property
    def closed_reason(self) -> str:
        return str(self.handle.reason or "closed")

    def close(self) -> None:
        """Close once the transactions in flight are done (IndexedDB waits for them)."""
        self.handle.db.close()
        self.handle.closed = True


def schema_from(described: dict[str, Any]) -> dict[str, StoreInfo]:
    """The stores and indexes ``describe`` found, as the planner wants them."""
    out = {}
    for name, store in described["stores"].items():
        indexes = []
        for iname, index in store["indexes"].items():
            path = index["path"]
            fields = tuple(path) if isinstance(path, list) else (path,)
            indexes.append(IndexSpec(iname, fields, bool(index["unique"]),
                                     bool(index["multi"])))
        key = store["key"]
        out[name] = StoreInfo(name, key if isinstance(key, str) else "", tuple(indexes))
    return out


async def open_database(name: str, version: int, spec: dict[str, Any] | None,
                        blocked_timeout: float) -> Database:
    """Open (and if need be upgrade to ``spec``) database ``name`` at ``version``."""
    from pyodide.ffi import JsException

    spec_text = json.dumps(spec) if spec is not None else None
    try:
        out = await _js().open(name, version, spec_text, int(blocked_timeout * 1000))
    except JsException as exc:
        raise storage_error(_error_name(exc), f"opening database version {version}") from None
    described = json.loads(str(out.schema))
    return Database(name, int(described["version"]), out.conn, schema_from(described))


async def run(db: Database, stores: Sequence[str], mode: str, program: Program,
              doing: str = "") -> tuple[Any, int]:
    """Run ``program`` as one transaction over ``stores``; (its result, records scanned).

    A program whose first batch is ``Final`` is finished after the commit, outside the
    transaction (reads filter and sort there). Otherwise each further batch comes from a
    synchronous callback inside the transaction.
    """
    from pyodide.ffi import JsException, create_proxy, to_js

    try:
        first = next(program)
    except StopIteration as stop:  # nothing to ask IndexedDB
        return stop.value, 0
    single = isinstance(first, Final)
    box = _Outcome()
    step = None
    if not single:
        def advance(packed: Any) -> Any:
            try:
                batch = program.send(_results(packed))
            except StopIteration as stop:
                box.value = stop.value
                return None
            except BaseException as exc:
                box.error = exc
                raise
            return to_js_batch(batch)

        step = create_proxy(advance)
    if db.closed:
        raise _closed_error(db)
    try:
        out = await call_js(_js().run, db.handle, to_js(list(stores)), mode,
                            to_js_batch(first), step)
    except (JsException, JsRejection) as exc:
        if box.error is not None:
            raise box.error from None
        raise storage_error(_error_name(exc), doing) from None
    finally:
        if step is not None:
            step.destroy()
    scanned = int(out.scanned)
    if not single:
        return box.value, scanned
    try:
        program.send(_results(out.results))
    except StopIteration as stop:
        return stop.value, scanned
    raise RuntimeError("a program asked for a batch after its final one")


def _closed_error(db: Database) -> WorkerBridgeError:
    if db.closed_reason == "upgraded":
        return StorageBlockedError(
            f"database {db.name[:60]!r} was upgraded past version {db.version} by another "
            "tab: this connection closed so that upgrade could proceed; define() the new "
            "schema (or reload the page)")
    return StorageError(f"database {db.name[:60]!r} was closed")


@dataclass(slots=True)
class _Outcome:
    value: Any = None
    error: BaseException | None = None
