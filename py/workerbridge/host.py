"""The page's bridge, run in a worker for a MicroPython page (browser only).

A ``<script type="mpy">`` page runs MicroPython, which cannot import this package. Its
``workerbridge`` module (``web/mpy.py``) is a thin layer that sends each call to a
*host*: a worker booted by ``web/worker.mjs`` with ``{"host": true}``, where this module
holds the same ``WorkerBridge``, pool, storage and jobs engine a Pyodide page runs on its
own thread. Its workers are the host's own (nested) workers. So there is one page core,
whichever interpreter the page has; docs/architecture.md says why.

A call names a path of public attributes from a root, and the host walks it, calls,
awaits and answers through the ordinary handler protocol, so progress, cancellation and
typed errors travel as for any request:

- roots: a bridge the page made (``{"bridge": id, "options": {...}}``, created on first
  use), an object an earlier call returned (``{"target": ref}``), or one of the package's
  public names (``WorkerBridge``, ``Retry`` …);
- arguments may hold ``{"$bytes": buffer}`` (Python bytes on the page), ``{"$ref": n}``
  (an object returned earlier), ``{"$new": name, "args", "kwargs"}`` (a public class to
  build here, such as ``Retry`` or ``Stage``) and ``{"$progress": true}`` (the caller's
  progress callback: reports go back as PROGRESS envelopes);
- results are plain values, ``{"$bytes": ...}``, ``{"$obj": name, "fields": {...}}`` for a
  record (a dataclass or named tuple), or ``{"$ref": n, "type": name, "attrs": {...}}``
  for any other object, which stays here until released.

Only names that do not start with ``_`` are reachable: a message names API, never code.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import warnings
from typing import Any

import workerbridge
from workerbridge.bridge import WorkerBridge
from workerbridge.core.errors import InvalidInputError
from workerbridge.core.platform import IN_PYODIDE, in_worker
from workerbridge.core.shared import ProgressInfo
from workerbridge.runtime.dispatch import Context, handler

_PLAIN = (str, int, float, bool, type(None))

try:
    from pyodide.ffi import JsProxy as _JsProxy
    from pyodide.ffi import jsnull as _jsnull
except ImportError:  # the host's unit tests run under CPython
    _JsProxy = _jsnull = None  # type: ignore[assignment,misc]

_bridges: dict[int, WorkerBridge] = {}
_objects: dict[int, Any] = {}
_ids = itertools.count(1)


def _public(name: Any) -> str:
    if not isinstance(name, str) or not name or name.startswith("_"):
        raise InvalidInputError("a host call names public attributes only")
    return name


def _root(payload: dict[str, Any]) -> tuple[Any, list[str]]:
    path = [_public(p) for p in str(payload.get("path") or "").split(".") if p] \
        if payload.get("path") else []
    bridge = payload.get("bridge")
    if isinstance(bridge, int):
        if bridge not in _bridges:
            _bridges[bridge] = _new_bridge(bridge, _arguments(payload.get("options") or {}, None))
        return _bridges[bridge], path
    target = payload.get("target")
    if target is not None:
        if target not in _objects:
            raise InvalidInputError("this object was released")
        return _objects[target], path
    if not path or path[0] not in workerbridge.__all__:
        raise InvalidInputError("a host call names one of workerbridge's public names")
    return getattr(workerbridge, path[0]), path[1:]


def _new_bridge(number: int, options: dict[str, Any]) -> WorkerBridge:
    """The page's bridge ``number`` (0: the default one). A host on the page's own thread
    (web/remote.mjs's PageHost: no worker could start) runs the handlers there too, and
    the page has said so once already."""
    if IN_PYODIDE and not in_worker():
        options.setdefault("fallback", "main")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WorkerBridge(**options)
    return WorkerBridge(**options) if number else WorkerBridge.default()


def _arguments(value: Any, ctx: Context | None) -> Any:
    """A call's arguments as they arrived -> the values to call with."""
    if value is _jsnull:  # JSON's null, in a message that crossed as a JS object
        return None
    if isinstance(value, list):
        return [_arguments(v, ctx) for v in value]
    if not isinstance(value, dict):
        return value
    if "$bytes" in value:
        return bytes(value["$bytes"].to_bytes())
    if "$ref" in value:
        ref = value["$ref"]
        if ref not in _objects:
            raise InvalidInputError("an argument names a released object")
        return _objects[ref]
    if "$new" in value:
        name = _public(value["$new"])
        cls = getattr(workerbridge, name, None) if name in workerbridge.__all__ else None
        if not inspect.isclass(cls):
            raise InvalidInputError(f"{name} is not one of workerbridge's public classes")
        return cls(*_arguments(value.get("args") or [], ctx),
                   **_arguments(value.get("kwargs") or {}, ctx))
    if value.get("$progress") is True:
        if ctx is None:
            raise InvalidInputError("a progress callback belongs to a call")
        context = ctx

        def report(info: ProgressInfo) -> None:
            context.progress(info.done, info.total, last=info.final)

        return report
    return {str(k): _arguments(v, ctx) for k, v in value.items()}


def answer(value: Any) -> Any:
    """A result -> what the page gets (see the module's docstring)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"$obj": type(value).__name__,
                "fields": {k: answer(getattr(value, k)) for k in value._fields}}
    if isinstance(value, list | tuple):
        return [answer(v) for v in value]
    if isinstance(value, dict):
        return {str(k): answer(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$obj": type(value).__name__,
                "fields": {f.name: answer(getattr(value, f.name))
                           for f in dataclasses.fields(value) if not f.name.startswith("_")}}
    if _JsProxy is not None and isinstance(value, _JsProxy):
        return value  # a JS object: it crosses by structured clone
    ref = next(_ids)
    _objects[ref] = value
    attrs = {k: v for k, v in getattr(value, "__dict__", {}).items()
             if not k.startswith("_") and isinstance(v, _PLAIN)}
    return {"$ref": ref, "type": type(value).__name__, "attrs": attrs}


@handler("page", "call")
async def call(ctx: Context, payload: Any) -> Any:
    """Walk ``path`` from the root, then call it (``call``: true) or read it."""
    if not isinstance(payload, dict):
        raise InvalidInputError("a host call takes an object")
    obj, path = _root(payload)
    for name in path:
        obj = getattr(obj, name)
    if payload.get("call"):
        obj = obj(*_arguments(payload.get("args") or [], ctx),
                  **_arguments(payload.get("kwargs") or {}, ctx))
    if inspect.isawaitable(obj):
        obj = await obj
    return answer(obj)


@handler("page", "release")
async def release(ctx: Context, payload: Any) -> None:
    """Forget objects the page no longer holds (``refs``), or a bridge it closed."""
    for ref in (payload or {}).get("refs") or []:
        _objects.pop(ref, None)
