"""The index planner: which index serves a filter, with which key ranges (pure).

``plan`` picks at most one index (or the primary key) for a parsed filter and IndexedDB
key ranges on it. The records those ranges return hold every match; the residual filter
(the conditions the index does not enforce) is checked on each of them. Only conditions
of the filter's top-level conjunction on scalar keys can steer the choice.

Two rules keep an index scan and the matcher in ``_query`` in agreement:

- a field with a plain or compound index holds no lists (``check_indexed``, on every
  write): IndexedDB indexes a list whole, or not at all when it holds null, a boolean
  or an object, while a filter matches list elements. Multi-entry indexes index
  elements, and serve element matches exactly;
- a compound index serves only a filter that constrains every one of its fields: a
  record missing one is not in the index.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from workerbridge.core.errors import InvalidInputError
from workerbridge.storage.query import COMPARE, All, Cond, Node, get_path, key_of


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
        """The descriptor ``idb``'s JS turns into an IDBKeyRange."""
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
