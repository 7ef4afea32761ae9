"""Storage queries: filter validation, matching, ordering and the index planner (pure).

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

The planner picks at most one index for a filter and IndexedDB key ranges for it; the
records those ranges return hold every match, and the residual filter (the conditions
the index does not enforce) is checked on each of them.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import InvalidFilterError, InvalidInputError, InvalidTypeError

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


# --- planning -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """A declared index: one field (possibly multi-entry) or a compound of fields.

    Indexed fields hold no lists unless the index is multi-entry (``check_indexed``
    enforces it on every write): IndexedDB indexes a list whole, and drops a list holding
    null, a boolean or an object altogether, while a filter matches list elements.
    """

    name: str
    fields: tuple[str, ...]
    unique: bool = False
    multi_entry: bool = False


def check_indexed(record: dict[str, Any], indexes: Iterable[IndexSpec]) -> None:
    """Refuse a record holding a list in a field with a plain or compound index."""
    for spec in indexes:
        if spec.multi_entry:
            continue
        for name in spec.fields:
            if isinstance(get_path(record, name.split(".")), list):
                raise InvalidInputError(
                    f"field {name[:60]!r} holds a list but its index {spec.name[:60]!r} is "
                    "not multi-entry (declare it multi_entry to index list elements)")


class _Bound:
    """A bound beyond every key of a kind's values, where no Python value sits."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNBOUNDED: Any = _Bound("UNBOUNDED")
BINARY_MIN: Any = _Bound("BINARY_MIN")  # the empty ArrayBuffer: after every string

# (lowest key, highest key, highest is excluded) of each kind an index can be ranged on
_KIND_BOUNDS: dict[int, tuple[Any, Any, bool]] = {
    1: (-math.inf, math.inf, False),
    2: ("", BINARY_MIN, True),
    3: (b"", [], True),  # [] is the lowest array key: above every binary key
}


@dataclass(frozen=True, slots=True)
class KeyRange:
    """An IDBKeyRange; ``UNBOUNDED`` on a side that is open-ended."""

    lower: Any = UNBOUNDED
    upper: Any = UNBOUNDED
    lower_open: bool = False
    upper_open: bool = False

    @classmethod
    def only(cls, key: Any) -> KeyRange:
        return cls(key, key)

    def to_wire(self) -> dict[str, Any]:
        """The descriptor ``_idb``'s JS turns into an IDBKeyRange."""
        out: dict[str, Any] = {}
        if self.lower is not UNBOUNDED:
            out["lo"], out["lo_open"] = _wire_key(self.lower), self.lower_open
        if self.upper is not UNBOUNDED:
            out["hi"], out["hi_open"] = _wire_key(self.upper), self.upper_open
        return out


def _wire_key(key: Any) -> Any:
    if key is BINARY_MIN:
        return {"$k": "bin"}
    if isinstance(key, float) and math.isinf(key):
        return {"$k": "inf" if key > 0 else "-inf"}
    if isinstance(key, list):
        return [_wire_key(k) for k in key]
    return key


@dataclass(frozen=True, slots=True)
class Plan:
    """How to fetch a filter's candidates: ``index`` None means the primary key (the
    store itself); ``ranges`` None means every record (an empty tuple: none); the
    ``residual`` is what must still be checked on each candidate (None: nothing);
    ``repeats``: a record may come back more than once (a multi-entry index)."""

    index: str | None
    ranges: tuple[KeyRange, ...] | None
    residual: Node | None
    repeats: bool = False


def _conjuncts(node: Node) -> list[Node]:
    if isinstance(node, All):
        return [c for n in node.items for c in _conjuncts(n)]
    return [node]


def _scalar_key(value: Any) -> bool:
    return not isinstance(value, list) and key_of(value) is not None


def _indexable(cond: Cond) -> bool:
    if cond.op == "$in":
        return bool(cond.value) and all(map(_scalar_key, cond.value))
    return (cond.op == "$eq" or cond.op in COMPARE) and _scalar_key(cond.value)


@dataclass(slots=True)
class _Choice:
    score: int
    index: str | None
    ranges: list[KeyRange]
    used: list[Cond]
    repeats: bool = False


def _bounds(conds: list[Cond]) -> tuple[Any, bool, Any, bool] | None:
    """The tightest (lower, open, upper, open) the comparisons allow; None when empty."""
    kinds = {key_of(c.value)[0] for c in conds}  # type: ignore[index]
    if len(kinds) != 1:
        return None  # 5 < x < "a" holds for no value of one kind
    lo, hi, hi_open = _KIND_BOUNDS[kinds.pop()]
    lo_open = False
    for c in conds:
        k = key_of(c.value)
        assert k is not None
        if c.op in ("$gt", "$gte"):
            klo = key_of(lo)
            if klo is None or k > klo or (k == klo and c.op == "$gt"):
                lo, lo_open = c.value, c.op == "$gt"
        else:
            khi = key_of(hi)
            if khi is None or k < khi or (k == khi and c.op == "$lt"):
                hi, hi_open = c.value, c.op == "$lt"
    klo, khi = key_of(lo), key_of(hi)
    if klo is not None and khi is not None and (klo > khi or (klo == khi and (lo_open
                                                                            or hi_open))):
        return None
    return lo, lo_open, hi, hi_open


def _ranges(conds: list[Cond], prefix: list[Any], multi: bool
            ) -> tuple[str, list[KeyRange], list[Cond]] | None:
    """("eq"|"in"|"range", key ranges, conditions used) for one field's conditions; keys
    are appended to ``prefix`` (the equal fields before it in a compound index)."""
    usable = [c for c in conds if _indexable(c)]
    for op, kind in (("$eq", "eq"), ("$in", "in")):
        found = next((c for c in usable if c.op == op), None)
        if found is not None:
            keys = [found.value] if op == "$eq" else found.value
            distinct: dict[Any, Any] = {key_of(k): k for k in keys}  # 3 and 3.0: one key
            return kind, [KeyRange.only(_join(prefix, distinct[k])) for k in sorted(distinct)], \
                [found]
    compare = [c for c in usable if c.op in COMPARE]
    if not compare:
        return None
    if multi:
        # Each bound may be met by a different element of a list ([3, 8] is both > 5
        # and < 7): one bound only, the other stays in the residual.
        compare = compare[:1]
    bounds = _bounds(compare)
    if bounds is None:
        return "range", [], compare
    lo, lo_open, hi, hi_open = bounds
    return "range", [KeyRange(_join(prefix, lo), _join(prefix, hi), lo_open, hi_open)], \
        compare


def _join(prefix: list[Any], key: Any) -> Any:
    return [*prefix, key] if prefix else key


_SCORES = {
    # (primary key, unique, compound) -> score per kind; the highest plan wins
    "primary": {"eq": 100, "in": 95, "range": 30},
    "unique": {"eq": 90, "in": 85, "range": 25},
    "plain": {"eq": 50, "in": 45, "range": 20},
}


def _choose(by_field: dict[str, list[Cond]], primary: str,
            indexes: Sequence[IndexSpec]) -> _Choice | None:
    choices: list[_Choice] = []
    found = _ranges(by_field.get(primary, []), [], False)
    if found is not None:
        kind, ranges, used = found
        choices.append(_Choice(_SCORES["primary"][kind], None, ranges, used))
    for spec in indexes:
        choice = _compound(spec, by_field)
        if choice is not None:
            choices.append(choice)
    # max() keeps the first of equal scores: the primary key, then declaration order.
    return max(choices, key=lambda c: c.score, default=None)


def _compound(spec: IndexSpec, by_field: dict[str, list[Cond]]) -> _Choice | None:
    """An index serves a filter only if it constrains every one of its fields (a record
    missing one is not in the index): $eq on all but the last; $eq, $in or a range on
    the last."""
    prefix: list[Any] = []
    used: list[Cond] = []
    for name in spec.fields[:-1]:
        eq = next((c for c in by_field.get(name, []) if c.op == "$eq" and _indexable(c)),
                  None)
        if eq is None:
            return None
        prefix.append(eq.value)
        used.append(eq)
    found = _ranges(by_field.get(spec.fields[-1], []), prefix, spec.multi_entry)
    if found is None:
        return None
    kind, ranges, last = found
    score = _SCORES["unique" if spec.unique else "plain"][kind] + len(spec.fields) - 1
    return _Choice(score, spec.name, ranges, used + last, repeats=spec.multi_entry)


def plan(node: Node, primary: str, indexes: Iterable[IndexSpec] = ()) -> Plan:
    """Choose how to fetch the candidates of a parsed filter (see ``Plan``).

    ``primary`` is the key field; ``indexes`` the collection's declared indexes. Only
    conditions of the filter's top-level conjunction on scalar keys (numbers, strings,
    bytes) steer the choice; $or, $ne, $nin, $exists and null/boolean values never do.
    The conditions an index enforces leave the residual.
    """
    top = _conjuncts(node)
    by_field: dict[str, list[Cond]] = {}
    for item in top:
        if isinstance(item, Cond):
            by_field.setdefault(item.field, []).append(item)
    choice = _choose(by_field, primary, list(indexes))
    if choice is None:
        return Plan(None, None, node if top else None)
    rest = [n for n in top if not any(n is u for u in choice.used)]
    residual: Node | None = None
    if rest:
        residual = rest[0] if len(rest) == 1 else All(tuple(rest))
    return Plan(choice.index, tuple(choice.ranges), residual, choice.repeats)


def in_range(key: Any, r: KeyRange) -> bool:
    """Whether ``key`` lies in ``r`` (IndexedDB's comparison; for in-memory models)."""
    k = key_of(key)
    if k is None:
        return False
    if r.lower is not UNBOUNDED:
        lo = key_of(_plain_bound(r.lower))
        if k < lo or (r.lower_open and k == lo):  # type: ignore[operator]
            return False
    if r.upper is not UNBOUNDED:
        hi = key_of(_plain_bound(r.upper))
        if k > hi or (r.upper_open and k == hi):  # type: ignore[operator]
            return False
    return True


def _plain_bound(bound: Any) -> Any:
    # BINARY_MIN stands for b"" (an empty ArrayBuffer), also inside a compound bound.
    if isinstance(bound, list):
        return [_plain_bound(b) for b in bound]
    return b"" if bound is BINARY_MIN else bound
