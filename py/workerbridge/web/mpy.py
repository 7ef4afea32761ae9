"""workerbridge on a MicroPython page: ``from workerbridge import WorkerBridge`` in
``<script type="mpy" config="./dist/mpy.json">``.

MicroPython cannot import the package (no dataclasses, typing, enum …), so on an mpy page
this file is the ``workerbridge`` module. It is a thin layer: each call goes to a host
worker (``web/remote.mjs`` starts it; ``workerbridge.host`` answers) that holds the same
``WorkerBridge`` a Pyodide page runs on its own thread, so results and errors are the
same. Attributes make a path (``bridge.crypto.hash_file``); calling it sends the path and
the arguments; awaiting gives the result. Objects the host returns (a job, a database)
come back as handles whose calls go to the same object. The public classes whose
instances are arguments (``Retry``, ``Stage`` …) are recipes built in the host.

It runs under MicroPython only (and is checked as Python for its types); its exceptions
mirror ``workerbridge.core.errors`` (a host test keeps them equal).
"""

import asyncio
import json

import js

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass

__version__ = "0.1.0"


# --- the exceptions: workerbridge.core.errors, by the same names and codes ----------------
# MicroPython cannot derive a class from two builtin exceptions ("instance lay-out
# conflict"), so here each has its workerbridge base only: `except InvalidInputError`
# and `except WorkerBridgeError` work as on a Pyodide page, `except ValueError` does not.


class WorkerBridgeError(Exception):
    code = "error"


class InvalidInputError(WorkerBridgeError):
    code = "invalid_input"


class InvalidTypeError(InvalidInputError):
    code = "invalid_type"


class NonceReuseError(InvalidInputError):
    code = "nonce_reuse"


class CorruptDataError(InvalidInputError):
    code = "corrupt_data"


class UnknownCollectionError(InvalidInputError):
    code = "unknown_collection"


class InvalidFilterError(InvalidInputError):
    code = "invalid_filter"


class StorageError(WorkerBridgeError):
    code = "storage"


class StorageQuotaError(StorageError):
    code = "storage_quota"


class StorageBlockedError(StorageError):
    code = "storage_blocked"


class ConstraintError(StorageError):
    code = "constraint"


class UnconfiguredError(StorageError):
    code = "unconfigured"


class UnsupportedError(WorkerBridgeError):
    code = "unsupported"


class IntegrityError(WorkerBridgeError):
    code = "integrity"


class NetworkError(WorkerBridgeError):
    code = "network"


class AuthError(WorkerBridgeError):
    code = "unauthorized"


class PackageError(WorkerBridgeError):
    code = "package"


class PackageNotFoundError(PackageError):
    code = "missing_package"


class WorkflowError(WorkerBridgeError):
    code = "workflow_diverged"


class ProtocolError(WorkerBridgeError):
    code = "protocol"


class VersionMismatchError(ProtocolError):
    code = "version"


class UnknownOperationError(ProtocolError):
    code = "unknown_op"


class RemoteError(WorkerBridgeError):
    code = "remote"

    def __init__(self, message: str, remote_type: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type


class WorkerCrashedError(WorkerBridgeError):
    code = "crashed"


class RequestTimeoutError(WorkerBridgeError):
    code = "timeout"


class ShutdownError(WorkerBridgeError):
    code = "shutdown"


class QueueFullError(WorkerBridgeError):
    code = "queue_full"


# Task cancellation raises asyncio.CancelledError, as on a Pyodide page; this one is for
# a call stopped through a ``SharedCancellation`` token.
class CancelledError(WorkerBridgeError):
    code = "cancelled"


_BY_CODE = {}
for _cls in (WorkerBridgeError, InvalidInputError, InvalidTypeError, NonceReuseError,
             CorruptDataError, UnknownCollectionError, InvalidFilterError, StorageError,
             StorageQuotaError, StorageBlockedError, ConstraintError, UnconfiguredError,
             UnsupportedError, IntegrityError, NetworkError, AuthError, PackageError,
             PackageNotFoundError, WorkflowError, ProtocolError, VersionMismatchError,
             UnknownOperationError, RemoteError, WorkerCrashedError, RequestTimeoutError,
             ShutdownError, QueueFullError, CancelledError):
    _BY_CODE[_cls.code] = _cls


def _raised(exc: BaseException) -> BaseException:
    """A rejected call (a JS error carrying ``error_type`` and ``code``) -> its exception."""
    failure: Any = exc.args[0] if exc.args else None
    try:
        code, message, kind = str(failure.code), str(failure.message), str(failure.error_type)
    except Exception:
        return exc
    cls = _BY_CODE.get(code, RemoteError)
    if cls is RemoteError:
        return RemoteError(message, kind)
    return cls(message)


# --- values ----------------------------------------------------------------------------


class ProgressInfo:
    """A progress snapshot: ``done`` and ``total`` in bytes (or items), ``percent`` 0–100."""

    def __init__(self, done: int, total: int, final: bool = False) -> None:
        self.done = done
        self.total = total
        self.final = final

    @property
    def percent(self) -> float:
        if self.final:
            return 100.0
        if self.total <= 0:
            return 0.0
        return min(100.0, 100.0 * self.done / self.total)

    def __repr__(self) -> str:
        return "ProgressInfo(done=%d, total=%d)" % (self.done, self.total)


class Record:
    """A record the host returned (a dataclass or named tuple there): its fields as
    attributes, and in order when unpacked."""

    def __init__(self, kind: str, fields: list[Any]) -> None:
        self._kind = kind
        self._names = [name for name, _ in fields]
        for name, value in fields:
            setattr(self, name, value)

    def __iter__(self) -> Any:
        return iter([getattr(self, name) for name in self._names])

    def __getitem__(self, i: int) -> Any:
        return getattr(self, self._names[i])

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        inner = ", ".join("%s=%r" % (n, getattr(self, n)) for n in self._names)
        return "%s(%s)" % (self._kind, inner)


class _Recipe:
    """A public class's instance, built in the host when it is sent (``Retry(...)``)."""

    def __init__(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._name = name
        self._args = args
        self._kwargs = kwargs

    def __repr__(self) -> str:
        return "%s(...)" % self._name


def _recipe(name: str) -> Any:
    def make(*args: Any, **kwargs: Any) -> _Recipe:
        return _Recipe(name, args, kwargs)
    return make


class Priority:
    LOW = 0
    NORMAL = 1
    HIGH = 2


Retry = _recipe("Retry")
Backoff = _recipe("Backoff")
Fail = _recipe("Fail")
Stage = _recipe("Stage")
RetryPolicy = _recipe("RetryPolicy")

_to_string = js.Object.prototype.toString


def _is_js(value: Any) -> bool:
    return type(value).__name__ == "JsProxy"


class _Call:
    """One call's arguments, encoded for the host: JSON text and the JS objects it names."""

    def __init__(self, plain: bool = False) -> None:
        self.objects: Any = None if plain else js.Array.new()
        self.transfer: Any = None if plain else js.Array.new()
        self.progress: Any = None
        self.tokens: list["SharedCancellation"] = []

    def token(self, token: "SharedCancellation") -> bool:
        """A ``cancel=`` token stays on the page: it cancels the call from here."""
        self.tokens.append(token)
        return False

    def js_object(self, value: Any) -> dict[str, int]:
        self.objects.push(value)
        return {"$js": self.objects.length - 1}

    def encode(self, value: Any, key: str = "") -> Any:
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            copy = js.Uint8Array.new(bytes(value))
            self.transfer.push(copy.buffer)
            return {"$bytes": self.js_object(copy)}
        if _is_js(value):
            if str(_to_string.call(value)) == "[object ArrayBuffer]":
                self.transfer.push(value)  # moved, as from a Pyodide page
            return self.js_object(value)
        if isinstance(value, (list, tuple)):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            return {str(k): self.encode(v, str(k)) for k, v in value.items()
                    if not isinstance(v, SharedCancellation) or self.token(v)}
        if isinstance(value, Handle):
            return {"$ref": value._ref}
        if isinstance(value, _Recipe):
            return {"$new": value._name, "args": self.encode(list(value._args)),
                    "kwargs": self.encode(value._kwargs)}
        if callable(value) and key == "on_progress":
            callback = value

            def report(done: str, total: str) -> None:
                # As decimal text: MicroPython's FFI keeps only 32 bits of a JS number. The
                # host sends the pool's closing report last, with done == total.
                d, t = int(done), int(total)
                callback(ProgressInfo(d, t, 0 < t <= d))

            self.progress = report
            return {"$progress": True}
        raise InvalidTypeError("%s cannot be sent to a worker" % type(value).__name__)


_PLAIN_CALL = _Call(plain=True)  # a call whose arguments are JSON as they are


def _plain(value: Any) -> bool:
    kind = type(value)
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return True
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _decode(value: Any, objects: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, objects) for v in value]
    if not isinstance(value, dict):
        return value
    if "$js" in value and len(value) == 1:
        return objects[value["$js"]]
    if "$bytes" in value:
        return bytes(js.Uint8Array.new(_decode(value["$bytes"], objects)))
    if "$obj" in value:
        return Record(value["$obj"], [(k, _decode(v, objects))
                                      for k, v in value["fields"].items()])
    if "$ref" in value:
        return Handle(value["$ref"], value.get("type", ""), value.get("attrs") or {})
    return {k: _decode(v, objects) for k, v in value.items()}


# --- the connection --------------------------------------------------------------------

_remote: Any = None
_live = [False]  # _remote is known to be alive: a call need not ask JS
_dist: Any = None
_import = js.Function.new("url", "return import(url)")


def _bundle_base() -> str:
    """The bundle's dist/ URL, from where this page loaded PyScript."""
    script = js.document.querySelector('script[src$="pyscript/core.js"]')
    if script is None:
        raise InvalidInputError("cannot locate the workerbridge bundle; pass "
                                "WorkerBridge(base_url='.../dist/')")
    return str(script.src)[: -len("pyscript/core.js")]


async def _connection() -> Any:
    """The host worker: the one preboot.mjs?host started, or one started now (again,
    after a crash)."""
    global _remote
    if _remote is not None and not _remote.dead:
        _live[0] = True
        return _remote
    dist = _dist or _bundle_base()
    started = getattr(js.globalThis, "workerbridgeRemote", None)
    if started and _remote is None and str(started.dist) == dist:
        js.globalThis.workerbridgeRemote = None
        _remote = started
    else:
        module = await _import(dist + "workerbridge/remote.mjs")
        _remote = module.Remote.start(dist)
    _live[0] = True
    return _remote


_MAX_ID = 2**31 - 1  # ids are Int32 slots in a worker's control buffer
_ids = [1]


async def _send(op: str, root: dict[str, Any], call: bool, args: tuple[Any, ...] = (),
                kwargs: Any = None) -> Any:
    remote = _remote if _live[0] else await _connection()
    payload = dict(root)
    payload["call"] = call
    if call:
        payload["args"] = args
        payload["kwargs"] = kwargs or {}
    # Plain values (the common case) are JSON as they are; bytes, JS objects, handles,
    # recipes, callbacks and tokens are encoded. (MicroPython's json.dumps writes a repr
    # where it cannot encode, rather than raising, so the check is here.)
    encoder = _PLAIN_CALL if _plain(payload) else _Call()
    if encoder is not _PLAIN_CALL:
        payload["args"] = encoder.encode(list(args))
        payload["kwargs"] = encoder.encode(kwargs or {})
    text = json.dumps(payload)
    for token in encoder.tokens:
        if token.is_cancelled():
            raise CancelledError("cancelled before it started")
    rid = _ids[0]
    _ids[0] = 1 if rid >= _MAX_ID else rid + 1
    promise = remote.call(rid, op, text, encoder.objects, encoder.transfer, encoder.progress)
    for token in encoder.tokens:
        token._calls.add(rid)
    try:
        answer = await promise
    except asyncio.CancelledError:
        remote.cancel(rid)
        raise
    except Exception as exc:
        error = _raised(exc)
        if isinstance(error, WorkerCrashedError):
            _live[0] = False  # the next call starts a new host
        raise error from None
    finally:
        for token in encoder.tokens:
            token._calls.discard(rid)
    if type(answer) is str:  # no JS objects in it
        return json.loads(answer) if '"$' not in answer else _decode(json.loads(answer), None)
    return _decode(json.loads(str(answer[0])), answer[1])


class _Path:
    """``root.a.b``: called (``await root.a.b(...)``), or read with ``await value(root.a.b)``.
    It has no public names of its own, so none hides one of the host's."""

    def __init__(self, root: dict[str, Any], path: list[str]) -> None:
        self._root = root
        self._path = path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Path(self._root, self._path + [name])

    def _payload(self) -> dict[str, Any]:
        payload = dict(self._root)
        payload["path"] = ".".join(self._path)
        return payload

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _send("call", self._payload(), True, args, kwargs)


async def release(*handles: Any) -> None:
    """Let the host forget objects it returned (``await release(job)``)."""
    refs = [h._ref for h in handles if isinstance(h, Handle)]
    if refs:
        await _send("release", {"refs": refs}, False)


async def value(path: Any) -> Any:
    """An attribute's value, read in the host: ``await value(bridge.pool.size)``; any
    other value is returned as it is (as on a py page)."""
    if not isinstance(path, _Path):
        return path
    return await _send("call", path._payload(), False)


class Handle:
    """An object the host returned and keeps: its plain attributes as they were then;
    any other name is a path into it (``await job.result()``)."""

    def __init__(self, ref: int, kind: str, attrs: dict[str, Any]) -> None:
        self._ref = ref
        self._kind = kind
        for name, value in attrs.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Path({"target": self._ref}, [name])

    def __repr__(self) -> str:
        return "<%s in the host>" % self._kind


# --- shared state: SharedArrayBuffer + Atomics, as in workerbridge.core.shared ------------

# Cells over a SharedArrayBuffer when the page is cross-origin isolated (or over the
# buffer given), else over plain memory; BigInt64 cells ("wide") for byte counts.
_cells = js.Function.new("n", "wide", "buffer", "local", """
  const shared = buffer || (!local && self.crossOriginIsolated
    ? new SharedArrayBuffer(n * (wide ? 8 : 4)) : null);
  const a = wide ? (shared ? new BigInt64Array(shared, 0, n) : new BigInt64Array(n))
    : (shared ? new Int32Array(shared, 0, n) : new Int32Array(n));
  // Wide values cross as decimal text: MicroPython's FFI keeps only 32 bits of a number.
  const v = (x) => (wide ? BigInt(x) : x);
  const out = (x) => (wide ? String(x) : x);
  return {
    buffer: shared,
    load: (i) => out(Atomics.load(a, i)),
    store: (i, x) => { Atomics.store(a, i, v(x)); },
    add: (i, d) => out(Atomics.add(a, i, v(d))),
    cas: (i, e, x) => out(Atomics.compareExchange(a, i, v(e), v(x))),
    notify: (i) => { if (shared) Atomics.notify(a, i); },
  };""")

POLL_INTERVAL = 1 / 30


class _Shared:
    _N = 1
    _WIDE = False

    def __init__(self, buffer: Any = None, shared: Any = None) -> None:
        self._cells = _cells(self._N, self._WIDE, buffer, shared is False)
        self._subscribers: list[Any] = []

    @property
    def buffer(self) -> Any:
        """The SharedArrayBuffer behind this object (send it to a worker), or None."""
        buffer = self._cells.buffer
        return buffer if buffer else None

    @property
    def is_shared(self) -> bool:
        return self.buffer is not None

    @classmethod
    def from_buffer(cls, buffer: Any) -> Any:
        return cls(buffer=buffer)

    def _subscribe(self, callback: Any, snapshot: Any, convert: Any = None) -> Any:
        """Call ``callback`` with ``snapshot()`` (through ``convert``) when it changes,
        looked at ~30 times a second: a worker may write the buffer. Returns the function
        that stops it."""
        async def poll() -> None:
            last = snapshot()
            while True:
                await asyncio.sleep(POLL_INTERVAL)
                now = snapshot()
                if now != last:
                    last = now
                    callback(convert(now) if convert else now)

        task = asyncio.create_task(poll())
        return task.cancel


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError("%s must be a non-negative integer" % name)
    return value


class SharedProgress(_Shared):
    """Progress in shared memory: ``done`` and ``total`` (64-bit cells, whose values cross
    to JS as text)."""

    _N = 2
    _WIDE = True

    def __init__(self, total: int = 0, *, buffer: Any = None, shared: Any = None) -> None:
        super().__init__(buffer, shared)
        if buffer is None and total:
            self.set_total(total)

    def set_total(self, total: int) -> None:
        self._cells.store(1, str(_count(total, "total")))

    def increment(self, delta: int = 1) -> int:
        return int(self._cells.add(0, str(delta))) + delta

    def set(self, done: int, total: Any = None) -> None:
        if total is not None:
            self.set_total(total)
        self._cells.store(0, str(_count(done, "done")))

    def _pair(self) -> tuple[int, int]:
        return int(self._cells.load(0)), int(self._cells.load(1))

    def get(self) -> ProgressInfo:
        return ProgressInfo(*self._pair())

    def percent(self) -> float:
        return self.get().percent

    def reset(self) -> None:
        self._cells.store(0, "0")

    def subscribe(self, callback: Any) -> Any:
        return self._subscribe(callback, self._pair, lambda pair: ProgressInfo(*pair))


class SharedCancellation(_Shared):
    """A cancel token: pass it as ``cancel=`` to any call, then ``.cancel()`` it. The calls
    it was passed to fail with ``CancelledError`` at once, and their work stops."""

    def __init__(self, *, buffer: Any = None, shared: Any = None) -> None:
        super().__init__(buffer, shared)
        self._calls: set[int] = set()

    def cancel(self) -> None:
        if self._cells.cas(0, 0, 1) == 0:
            self._cells.notify(0)
            if _remote is not None:
                for rid in list(self._calls):
                    _remote.cancelWith(rid, "cancelled through its token")

    def is_cancelled(self) -> bool:
        return int(self._cells.load(0)) != 0

    def reset(self) -> None:
        self._cells.store(0, 0)

    def wait(self, timeout: Any = None) -> bool:
        """On the page's thread: the current state, at once (as on a py page)."""
        return self.is_cancelled()

    def subscribe(self, callback: Any) -> Any:
        return self._subscribe(lambda now: now and callback(True), self.is_cancelled)


class SharedCounter(_Shared):
    """A 32-bit signed integer that any thread may change atomically."""

    def __init__(self, initial: int = 0, *, buffer: Any = None, shared: Any = None) -> None:
        super().__init__(buffer, shared)
        if buffer is None and initial:
            self._cells.store(0, initial)

    def increment(self, delta: int = 1) -> int:
        return int(self._cells.add(0, delta)) + delta

    def decrement(self, delta: int = 1) -> int:
        return int(self._cells.add(0, -delta)) - delta

    def get(self) -> int:
        return int(self._cells.load(0))

    def set(self, value: int) -> None:
        self._cells.store(0, value)

    def compare_and_swap(self, expected: int, value: int) -> bool:
        return int(self._cells.cas(0, expected, value)) == expected

    def subscribe(self, callback: Any) -> Any:
        return self._subscribe(callback, self.get)


class SharedFlag(_Shared):
    """A boolean that any thread may set, clear or toggle."""

    def __init__(self, initial: bool = False, *, buffer: Any = None, shared: Any = None) -> None:
        super().__init__(buffer, shared)
        if buffer is None and initial:
            self._cells.store(0, 1)

    def set(self) -> None:
        self._cells.store(0, 1)
        self._cells.notify(0)

    def clear(self) -> None:
        self._cells.store(0, 0)
        self._cells.notify(0)

    def is_set(self) -> bool:
        return int(self._cells.load(0)) != 0

    def toggle(self) -> bool:
        while True:
            old = self._cells.load(0)
            if self._cells.cas(0, old, 0 if old else 1) == old:
                self._cells.notify(0)
                return not old

    def wait(self, timeout: Any = None) -> bool:
        """On the page's thread: the current state, at once (as on a py page)."""
        return self.is_set()

    def subscribe(self, callback: Any) -> Any:
        return self._subscribe(callback, self.is_set)


_NAMESPACES = ("crypto", "file", "compression", "network", "storage")
_bridges = [0]


class WorkerBridge:
    """Workers running Pyodide, and the calls the page makes into them — the same API as
    on a Pyodide page; each call runs in the host worker's bridge."""

    crypto = _Path({"bridge": 0}, ["crypto"])
    file = _Path({"bridge": 0}, ["file"])
    compression = _Path({"bridge": 0}, ["compression"])
    network = _Path({"bridge": 0}, ["network"])
    storage = _Path({"bridge": 0}, ["storage"])

    def __init__(self, **options: Any) -> None:
        global _dist
        base = options.get("base_url")
        page = js.document.baseURI
        if base:
            _dist = str(js.URL.new(base, page).href)
        options["modules"] = [str(js.URL.new(m, page).href) for m in options.get("modules", ())]
        if options.get("packages_base_url"):
            options["packages_base_url"] = str(js.URL.new(options["packages_base_url"], page).href)
        options.pop("base_url", None)
        _bridges[0] += 1
        self._attach({"bridge": _bridges[0], "options": _Call().encode(options)})

    def _attach(self, root: dict[str, Any]) -> None:
        self._root = root
        for name in _NAMESPACES:
            setattr(self, name, _Path(root, [name]))

    @classmethod
    def default(cls) -> Any:
        """The bridge ``WorkerBridge.crypto`` and the other class-level namespaces use."""
        bridge = cls()
        bridge._attach({"bridge": 0})
        return bridge

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Path(self._root, [name])
