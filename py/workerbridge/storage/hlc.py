"""Clocks and conflict resolution for records edited in several tabs at once.

`HLC` is a hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014): its
timestamps follow wall time closely, never go backwards, and order every event after
the events it has seen, even when tabs' clocks disagree. `VectorClock` tells causally
ordered edits from concurrent ones. `resolve` picks the surviving version of a record.

Every tab that sees the same two versions reaches the same `Resolution`, whatever order
they arrived in: ties break on the node id, merge functions get their arguments in HLC
order, and the result's clock is the same everywhere. Store that result as it is (do not
stamp it anew), so tabs agree on it and stop exchanging it.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from workerbridge.core.errors import InvalidInputError, InvalidTypeError

# Node ids are ASCII so that Python's string order equals IndexedDB's (UTF-16 code units).
_NODE = re.compile(r"[0-9A-Za-z._:-]{1,64}")
_ENCODED = re.compile(r"([0-9a-f]{12})-([0-9a-f]{4})-([0-9A-Za-z._:-]{1,64})")
MAX_WALL_MS = 16**12 - 1  # 12 hex digits: about the year 10889
MAX_COUNTER = 0xFFFF
DEFAULT_MAX_DRIFT_MS = 60_000

Order = Literal["before", "after", "equal", "concurrent"]
Kind = Literal["local", "remote", "merged"]
MergeFn = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _check_node(node: object) -> str:
    if not isinstance(node, str):
        raise InvalidTypeError("a node id must be a str")
    if not _NODE.fullmatch(node):
        raise InvalidInputError("a node id is 1-64 characters of A-Z a-z 0-9 . _ : -")
    return node


def _check_int(name: str, value: object, top: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{name} must be an int")
    if not 0 <= value <= top:
        raise InvalidInputError(f"{name} must be between 0 and {top}")


@dataclass(frozen=True, order=True, slots=True)
class Timestamp:
    """An HLC reading; ordered by (wall_ms, counter, node), a total order."""

    wall_ms: int
    counter: int
    node: str

    def __post_init__(self) -> None:
        _check_int("wall_ms", self.wall_ms, MAX_WALL_MS)
        _check_int("counter", self.counter, MAX_COUNTER)
        _check_node(self.node)

    def encode(self) -> str:
        """Fixed-width lowercase hex, then the node: strings sort exactly like timestamps,
        so an IndexedDB index on them is in clock order."""
        return f"{self.wall_ms:012x}-{self.counter:04x}-{self.node}"

    @classmethod
    def decode(cls, text: str) -> Timestamp:
        if not isinstance(text, str):
            raise InvalidTypeError("an encoded timestamp must be a str")
        match = _ENCODED.fullmatch(text)
        if match is None:
            raise InvalidInputError("not an encoded HLC timestamp")
        return cls(int(match[1], 16), int(match[2], 16), match[3])


def _system_ms() -> float:
    return time.time() * 1000


class HLC:
    """A hybrid logical clock for one node (one tab, one worker).

    ``now_ms``: the physical clock in milliseconds (injected for tests). ``max_drift_ms``:
    `update` refuses a remote timestamp further ahead of our physical clock than this,
    so one tab with a wrong clock cannot drag every other tab's clock into the future.
    """

    def __init__(self, node_id: str, now_ms: Callable[[], float] = _system_ms, *,
                 max_drift_ms: int = DEFAULT_MAX_DRIFT_MS) -> None:
        self.node = _check_node(node_id)
        if not callable(now_ms):
            raise InvalidTypeError("now_ms must be callable")
        _check_int("max_drift_ms", max_drift_ms, MAX_WALL_MS)
        self._now_ms = now_ms
        self.max_drift_ms = max_drift_ms
        self._wall = 0
        self._counter = 0

    @property
    def last(self) -> Timestamp | None:
        """The latest timestamp issued, or None before the first."""
        return Timestamp(self._wall, self._counter, self.node) if self._wall else None

    def _physical(self) -> int:
        value = self._now_ms()
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or not 0 < value <= MAX_WALL_MS:
            raise InvalidInputError("the physical clock gave an unusable reading")
        return math.floor(value)

    def now(self) -> Timestamp:
        """A timestamp for a local event, later than every one issued or seen before."""
        physical = self._physical()
        if physical > self._wall:
            self._wall, self._counter = physical, 0
        else:
            self._counter += 1
        return self._issue()

    def update(self, remote: Timestamp | str) -> Timestamp:
        """Take in a timestamp from another node; return one later than both it and
        every earlier reading of this clock. The clock is unchanged if it raises."""
        if isinstance(remote, str):
            remote = Timestamp.decode(remote)
        if not isinstance(remote, Timestamp):
            raise InvalidTypeError("remote must be a Timestamp or its encoded str")
        physical = self._physical()
        if remote.wall_ms - physical > self.max_drift_ms:
            raise InvalidInputError(
                f"a remote clock is {remote.wall_ms - physical} ms ahead of this one "
                f"(the limit is {self.max_drift_ms} ms)")
        wall = max(self._wall, remote.wall_ms, physical)
        if wall == self._wall == remote.wall_ms:
            counter = max(self._counter, remote.counter) + 1
        elif wall == self._wall:
            counter = self._counter + 1
        elif wall == remote.wall_ms:
            counter = remote.counter + 1
        else:
            counter = 0
        self._wall, self._counter = wall, counter
        return self._issue()

    def _issue(self) -> Timestamp:
        if self._counter > MAX_COUNTER:
            # Tens of thousands of events inside one millisecond (or while a remote clock
            # is ahead): move the logical wall on rather than fail. Order stays intact.
            self._wall, self._counter = self._wall + 1, 0
        return Timestamp(self._wall, self._counter, self.node)


class VectorClock:
    """Per-node event counts; immutable. Missing nodes count 0."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        if counts is None:
            counts = {}
        if not isinstance(counts, Mapping):
            raise InvalidTypeError("a vector clock is a mapping of node id to count")
        for node, count in counts.items():
            _check_node(node)
            _check_int("a vector clock count", count, 2**53 - 1)
        self._counts = {n: c for n, c in sorted(counts.items()) if c}

    def get(self, node: str) -> int:
        return self._counts.get(node, 0)

    def increment(self, node: str) -> VectorClock:
        _check_node(node)
        return VectorClock({**self._counts, node: self.get(node) + 1})

    def merge(self, other: VectorClock) -> VectorClock:
        """The element-wise maximum: a clock that has seen both."""
        nodes = self._counts.keys() | other._counts.keys()
        return VectorClock({n: max(self.get(n), other.get(n)) for n in nodes})

    def compare(self, other: VectorClock) -> Order:
        """"before": self happened before other; "after"; "equal"; or "concurrent"."""
        if not isinstance(other, VectorClock):
            raise InvalidTypeError("compare needs a VectorClock")
        nodes = self._counts.keys() | other._counts.keys()
        less = any(self.get(n) < other.get(n) for n in nodes)
        more = any(self.get(n) > other.get(n) for n in nodes)
        if less and more:
            return "concurrent"
        return "before" if less else "after" if more else "equal"

    def to_dict(self) -> dict[str, int]:
        return dict(self._counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VectorClock) and self._counts == other._counts

    def __hash__(self) -> int:
        return hash(tuple(self._counts.items()))

    def __repr__(self) -> str:
        return f"VectorClock({self._counts!r})"


@dataclass(frozen=True, slots=True)
class Versioned:
    """One version of a record: its value and the clocks of the write that made it."""

    value: dict[str, Any]
    hlc: Timestamp
    vector: VectorClock | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.value, dict):
            raise InvalidTypeError("a versioned value must be a dict")
        if not isinstance(self.hlc, Timestamp):
            raise InvalidTypeError("hlc must be a Timestamp")
        if self.vector is not None and not isinstance(self.vector, VectorClock):
            raise InvalidTypeError("vector must be a VectorClock or None")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form for IndexedDB and BroadcastChannel."""
        vector = None if self.vector is None else self.vector.to_dict()
        return {"value": self.value, "hlc": self.hlc.encode(), "vector": vector}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Versioned:
        if not isinstance(data, Mapping) or not {"value", "hlc"} <= data.keys():
            raise InvalidInputError("a versioned record needs value and hlc")
        vector = data.get("vector")
        return cls(data["value"], Timestamp.decode(data["hlc"]),
                   None if vector is None else VectorClock(vector))


@dataclass(frozen=True, slots=True)
class Resolution:
    """The surviving version: ``kind`` says where its value came from."""

    value: dict[str, Any]
    kind: Kind
    reason: str
    hlc: Timestamp
    vector: VectorClock | None

    @property
    def version(self) -> Versioned:
        return Versioned(self.value, self.hlc, self.vector)


class MergeRegistry:
    """Named merge functions: ``fn(older, newer) -> merged dict``.

    Every tab calls a function with the two values in HLC order (older first), so it
    must be deterministic; then every tab gets the same merged value.
    """

    RESERVED = frozenset({"lww", "vector"})

    def __init__(self) -> None:
        self._fns: dict[str, MergeFn] = {}

    def register(self, name: str, fn: MergeFn) -> None:
        """Add (or replace) a merge function under ``name``."""
        if not isinstance(name, str):
            raise InvalidTypeError("a merge function name must be a str")
        if not name or name in self.RESERVED:
            raise InvalidInputError(f"{name!r} cannot name a merge function")
        if not callable(fn):
            raise InvalidTypeError("a merge function must be callable")
        if inspect.iscoroutinefunction(fn):
            # Resolution runs where nothing may be awaited (beside IndexedDB writes).
            raise InvalidTypeError("a merge function must be synchronous")
        self._fns[name] = fn

    def get(self, name: str) -> MergeFn:
        try:
            return self._fns[name]
        except (KeyError, TypeError):
            raise InvalidInputError(f"no merge function is registered as {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._fns)

    def __contains__(self, name: object) -> bool:
        return name in self._fns


def resolve(local: Versioned, remote: Versioned, strategy: str = "lww", *,
            registry: MergeRegistry | None = None) -> Resolution:
    """Decide between two versions of one record.

    ``"lww"``: the later HLC wins (the node id breaks wall and counter ties).
    ``"vector"``: the causally later version wins; concurrent ones fall back to LWW.
    A name registered in ``registry``: as ``"vector"``, but concurrent versions are merged
    by that function. ``"vector"`` and merge functions need vector clocks on both.
    """
    if not isinstance(local, Versioned) or not isinstance(remote, Versioned):
        raise InvalidTypeError("resolve needs two Versioned values")
    if not isinstance(strategy, str):
        raise InvalidTypeError("strategy must be a str")
    merge: MergeFn | None = None
    if strategy not in MergeRegistry.RESERVED:
        if registry is None:
            raise InvalidInputError(f"unknown strategy {strategy!r} (no merge registry)")
        merge = registry.get(strategy)
    vector = _merged_vector(local, remote)
    if strategy == "lww":
        return _lww(local, remote, vector, "")
    if local.vector is None or remote.vector is None:
        raise InvalidInputError(f"strategy {strategy!r} needs vector clocks on both versions")
    order = local.vector.compare(remote.vector)
    if order == "after":
        return Resolution(local.value, "local", "local is causally later", local.hlc, vector)
    if order == "before":
        return Resolution(remote.value, "remote", "remote is causally later", remote.hlc,
                          vector)
    if order == "equal" or merge is None:
        return _lww(local, remote, vector, f"vector clocks {order}; ")
    older, newer = sorted((local, remote), key=_lww_key)
    merged = merge(dict(older.value), dict(newer.value))
    if not isinstance(merged, dict):
        raise InvalidTypeError(f"merge function {strategy!r} must return a dict")
    return Resolution(merged, "merged", f"concurrent; merged by {strategy!r}", newer.hlc,
                      vector)


def _merged_vector(local: Versioned, remote: Versioned) -> VectorClock | None:
    if local.vector is None or remote.vector is None:
        return local.vector or remote.vector
    return local.vector.merge(remote.vector)


def _lww_key(v: Versioned) -> tuple[Timestamp, str]:
    # Equal timestamps come only from a reused node id; the content then decides, so the
    # choice is still the same in every tab.
    return v.hlc, json.dumps(v.value, sort_keys=True, default=repr)


def _lww(local: Versioned, remote: Versioned, vector: VectorClock | None,
         prefix: str) -> Resolution:
    if local.hlc == remote.hlc and local.value == remote.value:
        return Resolution(local.value, "local", prefix + "same version", local.hlc, vector)
    if _lww_key(local) >= _lww_key(remote):
        return Resolution(local.value, "local", prefix + "local has the later HLC",
                          local.hlc, vector)
    return Resolution(remote.value, "remote", prefix + "remote has the later HLC", remote.hlc,
                      vector)


# --- versions of stored records ------------------------------------------------------------

#: The reserved field a stored record keeps its version in: {"h": encoded HLC, "vc": {node:
#: count}}. Callers never see it: reads strip it, writes that carry it are refused.
VERSION_FIELD = "_v"
#: Stands for the version of a record written before it had one (older than any write).
ORIGIN = Timestamp(0, 0, "0")

Action = Literal["apply", "keep", "conflict"]
StrategyKind = Literal["lww", "vector", "merge"]


def strategy_kind(strategy: str) -> StrategyKind:
    """"lww" and "vector" as they are; any other name is a merge function's."""
    return strategy if strategy in ("lww", "vector") else "merge"  # type: ignore[return-value]


def parse_version(value: Any) -> tuple[Timestamp | None, VectorClock]:
    """A stored ``_v`` as (its HLC or None, its vector clock); anything malformed (a
    record written by other code) counts as no version."""
    if not isinstance(value, Mapping):
        return None, VectorClock()
    try:
        stamp = Timestamp.decode(value["h"]) if value.get("h") is not None else None
        vector = VectorClock(value.get("vc") or {})
    except (InvalidInputError, KeyError):
        return None, VectorClock()
    return stamp, vector


def version(stamp: Timestamp, vector: VectorClock) -> dict[str, Any]:
    """The stored form of a version (what ``parse_version`` reads)."""
    return {"h": stamp.encode(), "vc": vector.to_dict()}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an update does to one stored record.

    ``action``: "apply" (write it, with ``version``), "keep" (the stored record wins;
    nothing is written) or "conflict" (concurrent under a merge function: the page merges).
    ``conflict``: the stored version was one the update had not seen.
    """

    action: Action
    conflict: bool
    reason: str
    version: dict[str, Any] | None = None


def decide(strategy: str, stamp: Timestamp, node: str, base: VectorClock | None,
           stored: Any) -> Verdict:
    """Whether an update stamped ``stamp`` by ``node``, made knowing ``base`` of the
    record's history, may overwrite the stored version ``stored`` (a ``_v`` or None).

    "lww": only if its HLC is later. "vector": if it has seen the stored version, else as
    "lww". A merge function: if it has seen the stored version, else "conflict".
    """
    kind = strategy_kind(strategy)
    stored_hlc, stored_vector = parse_version(stored)
    seen = base if base is not None else VectorClock()
    written = version(stamp, stored_vector.merge(seen).increment(node))
    later = stored_hlc is None or stamp > stored_hlc
    if kind == "lww":
        if later:
            return Verdict("apply", False, "the update has the later HLC", written)
        return Verdict("keep", True, "the stored version has the later HLC")
    if stored_vector.compare(seen) in ("before", "equal"):
        return Verdict("apply", False, "the update has seen the stored version", written)
    if kind == "merge":
        return Verdict("conflict", True, "concurrent versions: the merge function decides")
    if later:
        return Verdict("apply", True, "concurrent versions; the update has the later HLC",
                       written)
    return Verdict("keep", True, "concurrent versions; the stored version has the later HLC")


# --- what tabs tell each other ------------------------------------------------------------

#: A transaction changing more records than this is announced per collection, without keys.
MAX_KEYS_ANNOUNCED = 1000


def channel_name(database: str) -> str:
    """The BroadcastChannel a database's committed changes are announced on."""
    return f"workerbridge.storage:{database}"


def announcement(changes: list[tuple[str, str, Any, Any]]) -> dict[str, Any]:
    """The message for one committed transaction's (collection, op, key, stored ``_v``)
    changes: {"changes": [{"c", "op", "k", "v"}]} or, for a large one, {"changes": [],
    "collections": {name: count}}. Never record contents (they may be encrypted; a
    watcher reads the records itself)."""
    counts: dict[str, int] = {}
    for collection, _, _, _ in changes:
        counts[collection] = counts.get(collection, 0) + 1
    if len(changes) > MAX_KEYS_ANNOUNCED:
        return {"changes": [], "collections": counts}
    return {"changes": [{"c": c, "op": op, "k": k, "v": v} for c, op, k, v in changes],
            "collections": counts}
