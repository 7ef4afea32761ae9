"""Live queries and sync between tabs for the ``storage`` channel.

Every record carries its version in the reserved field ``_v`` ({"h": HLC, "vc": vector
clock}); reads strip it and callers' writes may not carry it. After each committed
read-write transaction this worker announces the keys and versions it changed on the
database's BroadcastChannel (``hlc.channel_name``); every tab's page listens there — the
writing tab's own page too, since it holds another BroadcastChannel object — to refresh
its live queries and advance its clock.

``sync_update`` is the page's ``update``: stamped with the tab's HLC when it was called,
it overwrites a stored record only as the collection's strategy allows (``hlc.decide``).
Under a merge function, a concurrent record is not written but handed back, decoded,
with its version; the page merges it with the function registered there (this worker runs
only registered code, never code from a message) and writes the result conditionally:
only if the stored version is still the one merged against, else it gets it again.

Its page half: ``workerbridge.storage.storage_sync``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from workerbridge.core.errors import InvalidFilterError, InvalidInputError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.storage.hlc import (
    HLC,
    MAX_KEYS_ANNOUNCED,
    VERSION_FIELD,
    Timestamp,
    VectorClock,
    Verdict,
    announcement,
    channel_name,
    decide,
    parse_version,
    version,
)
from workerbridge.storage.plan import check_indexed
from workerbridge.storage.query import All, AnyOf, Cond, Node, key_of, validate_filter
from workerbridge.storage.schema import check_collection, check_key
from workerbridge.storage.serial import Sink
from workerbridge.storage.txn import (
    Batch,
    Change,
    Hooks,
    Program,
    Tx,
    _candidates,
    _scan,
)

from .storage import _native, database, operation, register_hooks

Decider = Callable[[Any, Any], Verdict]  # (key, stored _v) -> what to do


def _fields(node: Node) -> set[str]:
    if isinstance(node, Cond):
        return {node.parts[0]}
    if isinstance(node, All | AnyOf):
        return set().union(*(_fields(n) for n in node.items))
    return set()


class SyncHooks(Hooks):
    """Versions on every update and announcements after every commit, per database."""

    reserved = frozenset({VERSION_FIELD})  # callers' data may not hold it

    def __init__(self, database_name: str) -> None:
        self.database = database_name
        # Writes that come without a tab's stamp (bulk_update, transaction) are stamped
        # here; this clock takes in every stored version it overwrites, so it never
        # stamps a record older than it was.
        self.node = "w" + secrets.token_hex(6)
        self.hlc = HLC(self.node)
        self.strategies: dict[str, str] = {}
        self._channel: Any = None

    def configure(self, settings: dict[str, Any]) -> None:
        mine = settings.get("sync") or {}
        strategies = mine.get("strategies") if isinstance(mine, dict) else None
        self.strategies = dict(strategies) if isinstance(strategies, dict) else {}

    def strategy(self, collection: str) -> str:
        return self.strategies.get(collection, "lww")

    def merge(self, collection: str, stored: dict[str, Any],
              patch: dict[str, Any]) -> dict[str, Any]:
        record = {**stored, **patch}
        if VERSION_FIELD not in patch:  # not from sync_update, which brings its own
            stamp, vector = parse_version(stored.get(VERSION_FIELD))
            try:
                now = self.hlc.update(stamp) if stamp is not None else self.hlc.now()
            except InvalidInputError:  # a stored clock far in the future: do not follow it
                now = self.hlc.now()
            record[VERSION_FIELD] = version(now, vector.increment(self.node))
        return record

    def check_filter(self, collection: str, node: Node) -> None:
        if VERSION_FIELD in _fields(node):
            raise InvalidFilterError(f"the field {VERSION_FIELD!r} is reserved for versions")

    async def decode(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        if VERSION_FIELD in record:
            record = {k: v for k, v in record.items() if k != VERSION_FIELD}
        return record

    def committed(self, database: str, changes: list[Change]) -> None:
        message = announcement([(c.collection, c.op, c.key,
                                 None if c.record is None else c.record.get(VERSION_FIELD))
                                for c in changes])
        self._post(message)

    def _post(self, message: dict[str, Any]) -> None:
        if not IN_PYODIDE:
            return
        import js
        from pyodide.ffi import to_js

        if self._channel is None:
            self._channel = js.BroadcastChannel.new(channel_name(self.database))
        self._channel.postMessage(to_js(message, dict_converter=js.Object.fromEntries))


register_hooks(SyncHooks)


def _sync_hooks(hooks: Sequence[Hooks]) -> SyncHooks:
    return next(h for h in hooks if isinstance(h, SyncHooks))


def sync_update(tx: Tx, collection: str, node: Node, patch: dict[str, Any], decider: Decider,
                replace: bool) -> Program:
    """Update the matching records each as ``decider`` allows; [(key, verdict, stored)]."""
    info = tx.store(collection)
    if info.key in patch:
        raise InvalidInputError(f"an update cannot change a record's key ({info.key!r})")
    p = tx.plan_for(info, node)
    if p.ranges == ():
        return []
    matched = _candidates(info, p, (yield _scan(collection, p)))
    outcomes = []
    batch: Batch = []
    for stored in matched:
        k = stored[info.key]
        verdict = decider(k, stored.get(VERSION_FIELD))
        outcomes.append((k, verdict, stored))
        if verdict.action != "apply":
            continue
        base = {info.key: k} if replace else stored
        record = tx.merge(collection, base, {**patch, VERSION_FIELD: verdict.version})
        check_indexed(record, info.indexes)
        batch += tx.write("update", collection, k, record, ["put", collection, record])
    if batch:
        yield batch
    return outcomes


def _stamp(value: Any) -> Timestamp:
    if not isinstance(value, str):
        raise InvalidInputError("sync_update needs the tab's HLC stamp")
    return Timestamp.decode(value)


def _bases(value: Any) -> dict[Any, VectorClock]:
    """[[key, vector clock], ...]: the versions of records the tab has seen."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise InvalidInputError("base must be a list of [key, vector clock] pairs")
    bases = {}
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise InvalidInputError("base must be a list of [key, vector clock] pairs")
        bases[key_of(check_key(pair[0]))] = VectorClock(pair[1])
    return bases


@operation("sync_update")
def update_synced(payload: dict[str, Any], sink: Sink) -> None:
    """The page's ``update``, stamped by its tab. {"n": records written, "resolved":
    [[key, "update" | "stored", reason]], "conflicts": [{"k", "value", "v"}],
    "versions": [[key, _v]] of the records written}."""
    entry = database(payload)
    coll = check_collection(payload.get("collection"))
    node = validate_filter(_native(payload.get("filter")))
    patch = entry.fields(payload.get("data"))
    stamp = _stamp(payload.get("hlc"))
    tab = stamp.node
    bases = _bases(_native(payload.get("base")))
    replace = payload.get("replace") is True
    conditional = payload.get("conditional") is True
    expect: Any = None
    written: dict[str, Any] | None = None
    if conditional:
        expect = payload.get("expect")
        given = _native(payload.get("version"))
        given_stamp, given_vector = parse_version(given)
        if given_stamp is None or (expect is not None and not isinstance(expect, str)):
            raise InvalidInputError("a conditional update needs expect and version")
        written = version(given_stamp, given_vector)

    async def job() -> dict[str, Any]:
        hooks = _sync_hooks(entry.hooks.hooks)
        strategy = hooks.strategy(coll)

        def decider(key: Any, stored: Any) -> Verdict:
            if conditional:
                now, _ = parse_version(stored)
                if (None if now is None else now.encode()) == expect:
                    return Verdict("apply", False, "the stored version is the one merged",
                                   written)
                return Verdict("conflict", True, "the stored version moved on")
            return decide(strategy, stamp, tab, bases.get(key_of(key)), stored)

        fields = await entry.encode(coll, patch)
        outcomes, _, _ = await entry.transact(
            [coll], True, lambda tx: sync_update(tx, coll, node, fields, decider, replace),
            "update")
        written_n = sum(1 for _, v, _ in outcomes if v.action == "apply")
        conflicts = []
        for k, v, stored in outcomes:
            if v.action == "conflict":
                conflicts.append({"k": k, "v": stored.get(VERSION_FIELD),
                                  "value": await entry.decode(coll, stored)})
        versions = [[k, v.version] for k, v, _ in outcomes if v.action == "apply"]
        return {"n": written_n,
                "resolved": [[k, "update" if v.action == "apply" else "stored", v.reason]
                             for k, v, _ in outcomes if v.conflict and v.action != "conflict"],
                "conflicts": conflicts,
                "versions": versions if len(versions) <= MAX_KEYS_ANNOUNCED else []}

    entry.queue.put("other", job, sink)
