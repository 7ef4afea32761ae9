"""The wire protocol: one enum of message kinds, one frozen dataclass per envelope.

On the wire an envelope is a plain object (a dict on the host, a JS object in the
browser) with a version field ``v`` and a ``kind``. Every request carries an integer id;
responses, errors and progress reports name the id they answer. ``web/glue.mjs`` mirrors
the field names below and nothing else.

This module imports only the standard library: it runs unchanged on the host, on the
main thread's Pyodide and in every worker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import IntEnum, StrEnum
from typing import Any, Final, TypeAlias

from workerbridge.core.errors import ProtocolError, VersionMismatchError

PROTOCOL_VERSION: Final = 1
MAX_ID: Final = 2**31 - 1  # ids double as Int32 slots in the worker's control buffer


class Kind(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"
    ERROR = "error"
    PROGRESS = "progress"
    CANCEL = "cancel"
    READY = "ready"
    BATCH = "batch"  # several envelopes in one postMessage; see split_batch


class Priority(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    channel: str
    op: str
    payload: Any = None
    priority: Priority = Priority.NORMAL
    timeout: float | None = None  # seconds, as asked by the caller; informational for the worker
    correlation: str | None = None
    progress: Any = None  # a SharedArrayBuffer under isolation, True for PROGRESS envelopes
    cancel: Any = None  # a SharedArrayBuffer of the caller's SharedCancellation, if any


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    payload: Any = None


@dataclass(frozen=True, slots=True)
class Error:
    id: int | None
    code: str
    message: str
    error_type: str = ""


@dataclass(frozen=True, slots=True)
class Progress:
    id: int
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class Cancel:
    id: int


@dataclass(frozen=True, slots=True)
class Ready:
    payload: Any = None


Envelope: TypeAlias = Request | Response | Error | Progress | Cancel | Ready

_KIND_OF: Final[dict[type, Kind]] = {
    Request: Kind.REQUEST,
    Response: Kind.RESPONSE,
    Error: Kind.ERROR,
    Progress: Kind.PROGRESS,
    Cancel: Kind.CANCEL,
    Ready: Kind.READY,
}


_FIELDS: Final[dict[type, tuple[str, ...]]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _KIND_OF
}


def encode(env: Envelope) -> dict[str, Any]:
    """The wire form of an envelope: a flat dict, ``None`` fields left out."""
    cls = type(env)
    out: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": _KIND_OF[cls].value}
    for name in _FIELDS[cls]:
        value = getattr(env, name)
        if value is not None:
            out[name] = value
    if cls is Request:
        out["priority"] = int(out["priority"])  # IntEnum -> plain int for JSON and JS
    return out


def request_wire(
    rid: int, channel: str, op: str, payload: Any = None, priority: int = Priority.NORMAL,
    timeout: float | None = None, correlation: str | None = None, progress: Any = None,
    cancel: Any = None,
) -> dict[str, Any]:
    """``encode(Request(...))`` without building the dataclass: the per-call hot path."""
    out: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": "request", "id": rid,
                           "channel": channel, "op": op, "priority": int(priority)}
    if payload is not None:
        out["payload"] = payload
    if timeout is not None:
        out["timeout"] = timeout
    if correlation is not None:
        out["correlation"] = correlation
    if progress is not None:
        out["progress"] = progress
    if cancel is not None:
        out["cancel"] = cancel
    return out


def response_wire(rid: int, payload: Any) -> dict[str, Any]:
    """``encode(Response(rid, payload))`` without building the dataclass (the hot path)."""
    if payload is None:
        return {"v": PROTOCOL_VERSION, "kind": "response", "id": rid}
    return {"v": PROTOCOL_VERSION, "kind": "response", "id": rid, "payload": payload}


def batch_text(encoded: list[str]) -> str:
    """JSON texts of envelopes -> the JSON text of one BATCH envelope (or the lone one)."""
    if len(encoded) == 1:
        return encoded[0]
    return f'{{"v":{PROTOCOL_VERSION},"kind":"batch","messages":[{",".join(encoded)}]}}'


def split_batch(raw: object) -> list[object]:
    """The envelopes a received message carries: a BATCH's members, else the message itself.

    Members are decoded one by one, so one malformed member spoils only itself.
    """
    if (type(raw) is dict or isinstance(raw, Mapping)) and raw.get("kind") == "batch" \
            and raw.get("v") == PROTOCOL_VERSION and type(raw.get("v")) is int \
            and isinstance(raw.get("messages"), list):
        return list(raw["messages"])
    return [raw]


# Python's json parser recurses once per nesting level, and in Pyodide it runs out of the
# WebAssembly stack before its recursion limit: JSON nested 2,000 deep ended the whole
# interpreter here ("Maximum call stack size exceeded", then Pyodide's fatal error), 1,500
# deep still parsed. A message may come from anywhere, so text that may nest deeper than
# this is parsed by the browser instead, and its payload converted by from_wire, which
# raises RecursionError at Python's limit.
MAX_JSON_DEPTH = 512
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``text`` nests, counted up to ``limit + 1`` (strings skipped)."""
    if text.count("[") + text.count("{") <= limit:  # the usual case, at C speed
        return 0
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token == "]" or token == "}":
            depth -= 1
    return deepest


class DecodeError(ProtocolError):
    """A message that is not a valid envelope; ``request_id`` is set when one was readable."""

    def __init__(self, message: str, request_id: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id
        self.code = code or ProtocolError.code


def usable_id(raw: Mapping[str, Any]) -> int | None:
    """The message's id if a request could have it (an integer in 1..MAX_ID), else None.

    A message that is malformed in any other way is still answered under this id.
    """
    value = raw.get("id")
    # bool is an int subclass; JS numbers arrive as int or float.
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and 0 < value <= MAX_ID:
        return value
    return None


def _str(raw: Mapping[str, Any], key: str, request_id: int | None) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise DecodeError(f"envelope field {key!r} must be a non-empty string", request_id)
    return value


def _count(raw: Mapping[str, Any], key: str, request_id: int) -> int:
    value = raw.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError(f"envelope field {key!r} must be a non-negative integer", request_id)
    return value


def _short(value: Any) -> str:
    """A received value for an error message, cut short: it may be anything, of any size."""
    if value is None or type(value) in (bool, int, float):
        return repr(value)
    if type(value) is str:
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    return f"a {type(value).__name__}"  # no repr: it may be nested past the recursion limit


_KINDS: Final = {k.value: k for k in Kind}  # a dict lookup is cheaper than Kind(...)
_PRIORITIES: Final = {int(p): p for p in Priority}


def decode(raw: object) -> Envelope:
    """Validate a wire message and build its envelope; raise ``DecodeError`` if invalid."""
    if type(raw) is not dict and not isinstance(raw, Mapping):  # dict first: the hot path
        raise DecodeError("envelope must be an object")
    rid = usable_id(raw)
    version = raw.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise DecodeError(
            f"unsupported protocol version {_short(version)} "
            f"(this side speaks {PROTOCOL_VERSION})",
            rid,
            VersionMismatchError.code,
        )
    name = raw.get("kind")
    kind = _KINDS.get(name) if type(name) is str else None
    if kind is None:
        raise DecodeError("unknown envelope kind", rid)
    if kind is Kind.BATCH:
        # split_batch takes valid ones
        raise DecodeError("a batch must hold a list of envelopes", rid)
    if kind is Kind.READY:
        return Ready(raw.get("payload"))
    if rid is None and (kind is not Kind.ERROR or raw.get("id") is not None):
        raise DecodeError("envelope id must be an integer in 1..2**31-1")
    if kind is Kind.ERROR:
        error_type = raw.get("error_type", "")
        return Error(rid, _str(raw, "code", rid), str(raw.get("message", "")),
                     error_type if isinstance(error_type, str) else "")
    assert rid is not None
    if kind is Kind.REQUEST:
        raw_priority = raw.get("priority", 1)
        priority = _PRIORITIES.get(raw_priority) if type(raw_priority) is int else None
        if priority is None:
            raise DecodeError("envelope field 'priority' must be 0, 1 or 2", rid)
        timeout = raw.get("timeout")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise DecodeError("envelope field 'timeout' must be a positive number", rid)
        correlation = raw.get("correlation")
        if correlation is not None and not isinstance(correlation, str):
            raise DecodeError("envelope field 'correlation' must be a string", rid)
        return Request(rid, _str(raw, "channel", rid), _str(raw, "op", rid),
                       raw.get("payload"), priority, timeout, correlation,
                       raw.get("progress"), raw.get("cancel"))
    if kind is Kind.RESPONSE:
        return Response(rid, raw.get("payload"))
    if kind is Kind.PROGRESS:
        return Progress(rid, _count(raw, "done", rid), _count(raw, "total", rid))
    return Cancel(rid)
