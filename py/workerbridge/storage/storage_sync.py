"""The page side of live queries and sync between tabs (``storage.watch``).

Each tab listens on its database's BroadcastChannel, where every worker of the origin
announces what it committed (``workers/storage_sync.py``). What it hears moves the tab's
hybrid logical clock on, records which versions of records the tab has seen (for vector
clocks), and wakes the live queries of the collections that changed: each reads its
records again, so it sees them decrypted by the read path like any other read.

``update`` is stamped here, when it is called, and the worker applies it as the
collection's strategy allows. A merge function runs here, on the page that registered it:
the worker hands back a concurrent record instead of writing it, and the page writes the
merged record on condition that the stored version has not moved on meanwhile.

Its worker half: ``workers/storage_sync.py``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError, StorageError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.storage.hlc import (
    HLC,
    ORIGIN,
    VERSION_FIELD,
    MergeFn,
    MergeRegistry,
    Timestamp,
    VectorClock,
    Versioned,
    channel_name,
    parse_version,
    resolve,
    strategy_kind,
    version,
)
from workerbridge.storage.query import key_of, validate_filter
from workerbridge.storage.schema import check_fields

if TYPE_CHECKING:
    from workerbridge.storage.storage import StorageCore as _Base
else:
    _Base = object

log = logging.getLogger("workerbridge.storage")

COALESCE_S = 0.05  # commits heard within this long wake a live query once
MAX_MERGE_ROUNDS = 8  # a record that keeps changing under a merge gives up after this
MAX_KNOWN = 100_000  # record versions remembered per collection (vector clocks)
Records = list[dict[str, Any]]
Known = dict[Any, tuple[Any, VectorClock]]  # key_of(key) -> (key, the versions seen)


@dataclass(eq=False, slots=True)
class _Watch:
    database: str
    collection: str
    filter: Any
    callback: Callable[[Records], Any]
    last: Records | None = None
    dirty: bool = True
    closed: bool = False
    task: asyncio.Future[Any] | None = None


@dataclass(slots=True)
class _SyncState:
    """One bridge's clock, merge functions, live queries and channels."""

    node: str = field(default_factory=lambda: "t" + secrets.token_hex(6))
    hlc: HLC = field(init=False)
    merges: MergeRegistry = field(default_factory=MergeRegistry)
    watches: list[_Watch] = field(default_factory=list)
    known: dict[tuple[str, str], Known] = field(default_factory=dict)
    channels: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # db -> channel, proxy

    def __post_init__(self) -> None:
        self.hlc = HLC(self.node)

    def hear(self, stamp: Timestamp | None) -> None:
        if stamp is not None:
            try:
                self.hlc.update(stamp)
            except InvalidInputError:  # a tab whose clock runs far ahead: not followed
                log.warning("ignored a clock %s ms ahead", stamp.wall_ms)

    def learn(self, database: str, collection: str, key: Any, vector: VectorClock | None) -> None:
        """Remember that this tab has seen ``vector`` of a record (None: it was deleted)."""
        known = self.known.setdefault((database, collection), {})
        k = key_of(key)
        if vector is None:
            known.pop(k, None)
            return
        if k not in known and len(known) >= MAX_KNOWN:
            known.pop(next(iter(known)))  # forgotten: a later update counts as concurrent
        known[k] = (key, known[k][1].merge(vector) if k in known else vector)


_STATES: weakref.WeakKeyDictionary[Any, _SyncState] = weakref.WeakKeyDictionary()


class SyncAPI(_Base):
    """Live queries and sync between tabs: the methods ``StorageNamespace`` gets."""

    def _sync(self) -> _SyncState:
        state = _STATES.get(self._bridge)
        if state is None:
            state = _STATES[self._bridge] = _SyncState()
        return state

    def _strategies(self) -> dict[str, str]:
        mine = self._s.settings.get("sync") or {}
        return dict(mine.get("strategies") or {})

    # --- conflict strategies ------------------------------------------------------------

    def register_merge_function(self, name: str, fn: MergeFn) -> None:
        """Register ``fn(older, newer) -> merged record`` under ``name`` on this page.
        It gets two whole records (older first by HLC) and must be deterministic."""
        self._sync().merges.register(name, fn)

    async def set_conflict_strategy(self, collection: str, strategy: str) -> None:
        """How concurrent updates of ``collection``'s records resolve: "lww" (the
        default: the later hybrid logical clock wins), "vector" (the causally later
        update wins; concurrent ones by LWW) or a registered merge function's name
        (concurrent ones are merged by it). Kept with the database's settings."""
        coll, _ = self._key(collection)
        if not isinstance(strategy, str):
            raise InvalidTypeError("strategy must be a str")
        if strategy not in ("lww", "vector") and strategy not in self._sync().merges:
            raise InvalidInputError(f"no merge function is registered as {strategy[:60]!r}")
        self._listen()
        await self._configure("sync", {"strategies": {**self._strategies(), coll: strategy}})

    def get_conflict_strategy(self, collection: str) -> str:
        coll, _ = self._key(collection)
        return self._strategies().get(coll, "lww")

    # --- live queries -------------------------------------------------------------------

    def watch(self, collection: str, filter: Any,
              callback: Callable[[Records], Any]) -> Callable[[], None]:
        """Call ``callback(records)`` with the records of ``collection`` matching
        ``filter`` now, and again whenever a committed change in any tab of this origin
        changes them (bursts of commits give one call). A coroutine function is
        scheduled. Returns a function that stops the calls."""
        coll, _ = self._key(collection)
        validate_filter(filter)
        if not callable(callback):
            raise InvalidTypeError("callback must be callable")
        database = self._s.database
        assert database is not None
        sync = self._sync()
        self._listen()
        watch = _Watch(database, coll, filter, callback)
        sync.watches.append(watch)
        self._wake(watch, delay=0.0)

        def unsubscribe() -> None:
            watch.closed = True
            if watch in sync.watches:
                sync.watches.remove(watch)
            if watch.task is not None:
                watch.task.cancel()

        return unsubscribe

    def _wake(self, watch: _Watch, delay: float = COALESCE_S) -> None:
        watch.dirty = True
        if watch.task is None and not watch.closed:
            watch.task = asyncio.ensure_future(self._refresh(watch, delay))

    async def _refresh(self, watch: _Watch, delay: float) -> None:
        try:
            await asyncio.sleep(delay)  # let a burst of commits arrive
            while watch.dirty and not watch.closed and self._s.database == watch.database:
                watch.dirty = False
                records = list(await self._send("read", {
                    "collection": watch.collection, "filter": watch.filter, "sort": None,
                    "limit": None, "offset": 0}, False))
                if watch.closed or records == watch.last:
                    continue
                watch.last = records
                try:
                    result = watch.callback([dict(r) for r in records])
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("a storage watch callback raised")
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. the database was dropped: the next change tries again
            log.exception("a storage watch could not read its records")
        finally:
            watch.task = None

    # --- the channel --------------------------------------------------------------------

    def _listen(self) -> None:
        """Listen on the current database's channel (once per bridge and database)."""
        database = self._s.database
        sync = self._sync()
        if database is None or database in sync.channels or not IN_PYODIDE:
            return
        import js
        from pyodide.ffi import create_proxy

        from workerbridge.storage.idb import from_js

        ref = weakref.ref(self)

        def on_message(event: Any) -> None:
            me = ref()
            if me is not None:
                me._heard(database, from_js(event.data))

        channel = js.BroadcastChannel.new(channel_name(database))
        proxy = create_proxy(on_message)
        channel.onmessage = proxy
        sync.channels[database] = (channel, proxy)

    def _heard(self, database: str, message: Any) -> None:
        """A worker of this origin committed changes to ``database``."""
        if not isinstance(message, dict):
            return
        sync = self._sync()
        tracked = {c for c, s in self._strategies().items() if s != "lww"} \
            if self._s.database == database else set()
        for change in message.get("changes") or ():
            stamp, vector = parse_version(change.get("v"))
            sync.hear(stamp)
            if change.get("c") in tracked:
                deleted = change.get("op") == "delete"
                sync.learn(database, change["c"], change.get("k"), None if deleted else vector)
        changed = message.get("collections") or {}
        for watch in list(sync.watches):
            if watch.database == database and watch.collection in changed:
                self._wake(watch)

    # --- updates ------------------------------------------------------------------------

    def _check_write(self, collection: str, data: Any) -> None:
        super()._check_write(collection, data)
        if isinstance(data, Mapping) and VERSION_FIELD in data:
            raise InvalidInputError(f"the field {VERSION_FIELD!r} is reserved for versions")

    async def _send_update(self, coll: str, key: str, filter: Any,
                           patch: dict[str, Any]) -> int:
        """``update``, stamped with this tab's HLC when it is made. A record another tab
        changed concurrently resolves by the collection's conflict strategy (see
        ``set_conflict_strategy``); a resolved conflict emits "conflict-resolved"."""
        self._listen()
        sync = self._sync()
        database = self._s.database
        assert database is not None
        strategy = self._strategies().get(coll, "lww")
        stamp = sync.hlc.now()
        # What this tab had seen when the update was made (a merge needs it later).
        known = _relevant(sync.known.get((database, coll), {}), filter, key) \
            if strategy != "lww" else {}
        out = await self._send("sync_update", {
            "collection": coll, "filter": filter, "data": patch, "hlc": stamp.encode(),
            "base": [[k, v.to_dict()] for k, v in known.values()]}, True)
        n = int(out["n"])
        self._learned(database, coll, out)
        for k, winner, reason in out["resolved"]:
            self._resolved(coll, k, strategy, winner, reason)
        for conflict in out["conflicts"]:
            base = known.get(key_of(conflict["k"]), (None, VectorClock()))[1]
            n += await self._merge(coll, key, strategy, conflict, patch, stamp, base)
        return n

    def _learned(self, database: str, collection: str, out: dict[str, Any]) -> None:
        sync = self._sync()
        for k, v in out.get("versions") or ():
            stamp, vector = parse_version(v)
            sync.hear(stamp)
            sync.learn(database, collection, k, vector)

    def _resolved(self, collection: str, key: Any, strategy: str, winner: str,
                  reason: str) -> None:
        self.emit("conflict-resolved", {
            "database": self._s.database, "collection": collection, "id": key,
            "strategy": strategy, "winner": winner, "reason": reason})

    async def _merge(self, collection: str, key_field: str, strategy: str,
                     conflict: dict[str, Any], patch: dict[str, Any], stamp: Timestamp,
                     seen: VectorClock) -> int:
        """Merge a concurrent record with this page's function and write the result,
        on condition that the stored version is still the one merged (else again)."""
        sync = self._sync()
        database = self._s.database
        assert database is not None
        fn_registry = sync.merges
        for _ in range(MAX_MERGE_ROUNDS):
            key, current = conflict["k"], dict(conflict["value"])
            stored_stamp, stored_vector = parse_version(conflict["v"])
            sync.hear(stored_stamp)
            mine = Versioned({**current, **patch}, stamp, seen.increment(sync.node))
            theirs = Versioned(current, stored_stamp or ORIGIN, stored_vector)
            if strategy_kind(strategy) != "merge" or strategy not in fn_registry:
                raise StorageError(f"no merge function {strategy[:60]!r} is registered on "
                                   "this page")
            result = resolve(mine, theirs, strategy, registry=fn_registry)
            merged = {f: v for f, v in check_fields(result.value, "a merged record").items()
                      if f not in (key_field, VERSION_FIELD)}
            written = version(sync.hlc.now(), stored_vector.merge(seen).increment(sync.node))
            out = await self._send("sync_update", {
                "collection": collection, "filter": {key_field: key}, "data": merged,
                "hlc": written["h"], "replace": True, "conditional": True,
                "expect": None if stored_stamp is None else stored_stamp.encode(),
                "version": written}, True)
            self._learned(database, collection, out)
            if out["conflicts"]:
                conflict = out["conflicts"][0]
                continue
            if out["n"]:
                winner = {"merged": "merged", "local": "update", "remote": "stored"}[result.kind]
                self._resolved(collection, key, strategy, winner, result.reason)
            return int(out["n"])
        raise StorageError("a record kept changing while it was being merged; try again")


def _relevant(known: Known, filter: Any, key_field: str) -> Known:
    """The versions an update with ``filter`` may need: one record's for a filter on
    its key alone (the common case), else every record's this tab knows."""
    if isinstance(filter, dict) and list(filter) == [key_field]:
        wanted = filter[key_field]
        if isinstance(wanted, dict) and list(wanted) == ["$eq"]:
            wanted = wanted["$eq"]
        k = key_of(wanted)
        if k is not None:
            return {k: known[k]} if k in known else {}
    return dict(known)
