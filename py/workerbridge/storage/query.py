"""Storage queries: values, filter validation, matching and ordering (pure, stdlib).

A filter is a dict, MongoDB-like::

    {"age": 30}                                 implicit $eq
    {"age": {"$gte": 18, "$lt": 65}}            several operators on one field: all hold
    {"$or": [{"role": "admin"}, {"tags": {"$in": ["ops", "dev"]}}]}
    {"address.city": "Oslo"}                    a dotted path reaches into nested objects

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists $and $or``. Semantics:

- A condition on a field that holds a list holds when it holds for the list as a whole
  or for any of its elements: ``{"tags": "a"}`` finds ``{"tags": ["a", "b"]}``.
- ``$eq None`` also matches a missing field; ``$ne`` is the negation of ``$eq`` and
  ``$nin`` of ``$in``; ``$exists`` is about presence (a ``None`` value is present).
- ``$gt $gte $lt $lte`` compare values of one kind only: numbers, strings, bytes or lists
  (booleans are not numbers). Strings compare in UTF-16 code-unit order and lists element
  by element: IndexedDB's key order, so an index scan and this matcher always agree.

``_plan`` chooses the index a filter is served by.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workerbridge.core.errors import InvalidFilterError, InvalidInputError, InvalidTypeError

MAX_DEPTH = 64
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript numbers hold integers exactly up to here

COMPARE = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPS = ("$eq", "$ne", "$in", "$nin", "$exists", *COMPARE)
_UTF16_NATIVE = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


# --- values -------------------------------------------------------------------------------


def clean_value(value: Any, what: str = "value", *, fields: bool = False,
                foreign: Callable[[Any], Any] | None = None, depth: int = 0) -> Any:
    """``value`` as storable data: JSON types plus bytes, tuples as lists. Anything else
    (sets, objects, NaN, integers beyond 2**53) raises InvalidInputError: IndexedDB and
    the wire would change or refuse it. ``fields``: refuse dict keys starting with "$"
    (a record's field names); ``foreign`` converts other objects first (JS values)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise InvalidInputError(f"{what} is nested too deeply (or refers to itself)")
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidInputError(f"{what} has a non-str key ({type(key).__name__})")
            if fields and key.startswith("$"):
                raise InvalidInputError("field names must not start with '$' (filters use it "
                                        "for operators)")
            t = type(item)
            out[key] = item if t is str or t is bool or item is None or \
                (t is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER) \
                else clean_value(item, what, fields=fields, foreign=foreign, depth=depth + 1)
        return out
    if kind is int or (isinstance(value, int) and not isinstance(value, bool)):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InvalidInputError(f"{what} holds an integer beyond 2**53, which JavaScript "
                                    "cannot represent exactly; store it as a string")
        return int(value)
    if kind is float or isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} holds NaN or an infinity (not JSON data)")
        return float(value)
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise InvalidInputError(f"{what} is nested too deeply (or refers to itself)")
        return [clean_value(item, what, fields=fields, foreign=foreign, depth=depth + 1)
                for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return clean_value(dict(value), what, fields=fields, foreign=foreign, depth=depth)
    if foreign is not None:
        converted = foreign(value)
        if converted is not value:
            return clean_value(converted, what, fields=fields, foreign=None, depth=depth)
    raise InvalidInputError(f"{what} holds a {type(value).__name__}, which is not "
                            "serialisable (use dicts, lists, str, numbers, bool, None, bytes)")


def _units(text: str) -> str:
    """``text`` re-spelled so Python's code-point order is UTF-16 code-unit order: a
    character beyond U+FFFF becomes its surrogate pair."""
    if text.isascii() or max(text) < "\U00010000":
        return text
    units = array("H", text.encode(_UTF16_NATIVE, "surrogatepass"))
    return "".join(map(chr, units))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def key_of(value: Any) -> tuple[Any, ...] | None:
    """An IndexedDB key's sort position (numbers < strings < bytes < lists), or None when
    ``value`` is not a valid key (None, booleans, dicts, lists holding those)."""
    if _is_number(value):
        return (1, value)
    if isinstance(value, str):
        return (2, _units(value))
    if isinstance(value, bytes):
        return (3, value)
    if isinstance(value, list):
        parts = []
        for item in value:
            k = key_of(item)
            if k is None:
                return None
            parts.append(k)
        return (4, tuple(parts))
    return None


def sort_key(value: Any) -> tuple[Any, ...]:
    """Where ``value`` goes in a sort: missing < None < booleans < numbers < strings <
    bytes < lists < objects; within a kind, IndexedDB's key order."""
    if value is MISSING:
        return (0,)
    if value is None:
        return (1,)
    if isinstance(value, bool):
        return (2, value)
    if _is_number(value):
        return (3, value)
    if isinstance(value, str):
        return (4, _units(value))
    if isinstance(value, bytes):
        return (5, value)
    if isinstance(value, list):
        return (6, tuple(sort_key(v) for v in value))
    return (7,)


def _same(a: Any, b: Any) -> bool:
    """Deep equality where booleans are not numbers (Python says True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() \
            and all(_same(v, b[k]) for k, v in a.items())
    if _is_number(a):
        return _is_number(b) and a == b
    return type(a) is type(b) and a == b


# --- filters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cond:
    """One operator applied to one field (``parts`` is the dotted path split)."""

    field: str
    parts: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class All:
    """Every item holds ($and, or the fields of one dict). ``All(())`` matches all."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one item holds ($or)."""

    items: tuple[Node, ...]


Node = Cond | All | AnyOf
EVERYTHING = All(())


def _field_parts(name: Any) -> tuple[str, ...]:
    if not isinstance(name, str) or not name:
        raise InvalidFilterError("a filter's field names must be non-empty strings")
    if name.startswith("$"):
        raise InvalidFilterError(f"unknown filter operator {name[:40]!r} "
                                 "(top level takes fields, $and and $or)")
    parts = tuple(name.split("."))
    if not all(parts):
        raise InvalidFilterError("a dotted field path has an empty part")
    return parts


def _operand(op: str, value: Any) -> Any:
    what = f"the {op} operand"
    if op == "$exists":
        if not isinstance(value, bool):
            raise InvalidFilterError("$exists takes True or False")
        return value
    if op in ("$in", "$nin"):
        if not isinstance(value, list | tuple):
            raise InvalidFilterError(f"{op} takes a list of values")
        return [_plain(v, what) for v in value]
    value = _plain(value, what)
    if op in COMPARE and key_of(value) is None:
        raise InvalidFilterError(f"{op} compares numbers, strings, bytes or lists only")
    return value


def _plain(value: Any, what: str) -> Any:
    try:
        return clean_value(value, what)
    except InvalidInputError as exc:
        raise InvalidFilterError(str(exc)) from None


def _parse(flt: Any, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InvalidFilterError("the filter is nested too deeply")
    if not isinstance(flt, Mapping):
        raise InvalidFilterError(f"a filter must be a dict, not {type(flt).__name__}")
    items: list[Node] = []
    for name, spec in flt.items():
        if name in ("$and", "$or"):
            if not isinstance(spec, list | tuple) or not spec:
                raise InvalidFilterError(f"{name} takes a non-empty list of filters")
            subs = tuple(_parse(s, depth + 1) for s in spec)
            items.append(All(subs) if name == "$and" else AnyOf(subs))
            continue
        parts = _field_parts(name)
        if isinstance(spec, Mapping) and any(isinstance(k, str) and k.startswith("$")
                                             for k in spec):
            if not all(isinstance(k, str) and k.startswith("$") for k in spec):
                raise InvalidFilterError(f"field {name[:40]!r} mixes operators and "
                                         "plain keys")
            for op, operand in spec.items():
                if op not in FIELD_OPS:
                    raise InvalidFilterError(f"unknown filter operator {op[:40]!r}")
                items.append(Cond(name, parts, op, _operand(op, operand)))
        else:
            items.append(Cond(name, parts, "$eq", _plain(spec, "a filter value")))
    return items[0] if len(items) == 1 else All(tuple(items))


def validate_filter(flt: Any) -> Node:
    """Check a filter and return its parsed form; None or {} matches every record.

    Raises InvalidFilterError (an InvalidInputError) naming what is wrong."""
    if flt is None:
        return EVERYTHING
    return _parse(flt, 0)


def unparse(node: Node | None) -> dict[str, Any]:
    """A parsed filter back as a dict (for messages and tests)."""
    if node is None:
        return {}
    if isinstance(node, Cond):
        return {node.field: {node.op: node.value}}
    subs = [unparse(n) for n in node.items]
    if isinstance(node, AnyOf):
        return {"$or": subs}
    return subs[0] if len(subs) == 1 else {"$and": subs} if subs else {}


# --- matching -----------------------------------------------------------------------------


def get_path(record: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if not isinstance(record, dict) or part not in record:
            return MISSING
        record = record[part]
    return record


def _equals(x: Any, v: Any) -> bool:
    if v is None and x is MISSING:
        return True
    if _same(x, v):
        return True
    return isinstance(x, list) and any(_same(e, v) for e in x)


def _compare(op: str, x: Any, v: Any) -> bool:
    kv = key_of(v)
    assert kv is not None  # checked by validate_filter
    candidates = [x] if isinstance(v, list) or not isinstance(x, list) else x
    for c in candidates:
        kc = key_of(c)
        if kc is None or kc[0] != kv[0]:
            continue
        if (op == "$gt" and kc > kv) or (op == "$gte" and kc >= kv) \
                or (op == "$lt" and kc < kv) or (op == "$lte" and kc <= kv):
            return True
    return False


def matches(node: Node, record: Any) -> bool:
    """Whether ``record`` satisfies the parsed filter ``node``."""
    if isinstance(node, All):
        return all(matches(n, record) for n in node.items)
    if isinstance(node, AnyOf):
        return any(matches(n, record) for n in node.items)
    x = get_path(record, node.parts)
    op, v = node.op, node.value
    if op == "$eq":
        return _equals(x, v)
    if op == "$ne":
        return not _equals(x, v)
    if op == "$in":
        return any(_equals(x, e) for e in v)
    if op == "$nin":
        return not any(_equals(x, e) for e in v)
    if op == "$exists":
        return (x is not MISSING) is v
    return x is not MISSING and _compare(op, x, v)


# --- sorting ------------------------------------------------------------------------------

SortSpec = tuple[tuple[tuple[str, ...], bool], ...]  # (path parts, descending) per key
_DIRECTIONS = {"asc": False, "ascending": False, 1: False, "desc": True, "descending": True,
               -1: True}


def check_sort(sort: Any) -> SortSpec:
    """``"field"``, ``("field", "desc")`` or a list of either; directions "asc"/"desc"."""
    if sort is None:
        return ()
    if isinstance(sort, str) or (isinstance(sort, list | tuple) and len(sort) == 2
                                 and isinstance(sort[0], str)
                                 and not isinstance(sort[1], list | tuple)
                                 and sort[1] in _DIRECTIONS):
        sort = [sort]
    if not isinstance(sort, list | tuple):
        raise InvalidTypeError("sort must be a field name or a list of (field, 'asc'|'desc')")
    out = []
    for item in sort:
        if isinstance(item, str):
            name, direction = item, "asc"
        elif isinstance(item, list | tuple) and len(item) == 2:
            name, direction = item
        else:
            raise InvalidInputError("each sort key must be a field or (field, 'asc'|'desc')")
        if isinstance(direction, bool) or direction not in _DIRECTIONS:
            raise InvalidInputError("a sort direction must be 'asc' or 'desc'")
        try:
            parts = _field_parts(name)
        except InvalidFilterError as exc:
            raise InvalidInputError(str(exc).replace("filter", "sort")) from None
        out.append((parts, _DIRECTIONS[direction]))
    return tuple(out)


def sort_records(records: list[Any], spec: SortSpec) -> list[Any]:
    """Sort in place by ``spec`` (stable: ties keep their order) and return the list."""
    for parts, descending in reversed(spec):

        def by_field(record: Any, parts: tuple[str, ...] = parts) -> tuple[Any, ...]:
            return sort_key(get_path(record, parts))

        records.sort(key=by_field, reverse=descending)
    return records
