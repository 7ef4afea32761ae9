"""The page side of the storage audit log (``storage.verify_audit_log``, ``query_audit_logs``).

The log is off until ``enable_audit_log`` (a setting of the current database, sent to the
worker and again to a worker that restarted). The page keeps the newest head a
verification found: an anchor outside IndexedDB, so records later cut from the tail of
the stored chain are missed at the next verification, even after the worker restarted.

Its worker half: ``workers/storage_audit.py``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workerbridge.core.errors import (
    InvalidFilterError,
    InvalidInputError,
    InvalidTypeError,
    UnknownCollectionError,
)
from workerbridge.storage.audit import _bounds
from workerbridge.storage.schema import check_key

if TYPE_CHECKING:
    from workerbridge.storage.storage import StorageCore as _Base
else:
    _Base = object

SETTING = "audit"
MAX_ACTOR = 256  # characters
FILTER_FIELDS = ("operation", "collection", "record_id", "actor", "seq")

# bridge -> database -> the newest head a verification found ({"seq", "hash"})
_ANCHORS: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = \
    weakref.WeakKeyDictionary()


def _check_actor(actor: Any) -> str | None:
    if actor is None:
        return None
    if not isinstance(actor, str):
        raise InvalidTypeError(f"actor must be a str or None, not {type(actor).__name__}")
    if not actor or len(actor) > MAX_ACTOR:
        raise InvalidInputError(f"actor must be 1 to {MAX_ACTOR} characters")
    try:
        actor.encode("utf-8")
    except UnicodeEncodeError:  # the hash covers the actor's UTF-8 bytes
        raise InvalidInputError("actor must be valid Unicode text") from None
    return actor


def _check_filter(flt: Any) -> dict[str, Any]:
    if flt is None:
        return {}
    if not isinstance(flt, Mapping):
        raise InvalidTypeError("filter must be a dict of audit fields, or None")
    unknown = sorted(str(k) for k in flt if k not in FILTER_FIELDS)
    if unknown:
        raise InvalidFilterError(f"audit records cannot be filtered on {', '.join(unknown)[:80]}"
                                 f" (only {', '.join(FILTER_FIELDS)})")
    out = dict(flt)
    for name in ("operation", "collection"):
        if name in out and not isinstance(out[name], str):
            raise InvalidTypeError(f"filter[{name!r}] must be a str")
    if "actor" in out:
        _check_actor(out["actor"])
    if "record_id" in out:
        check_key(out["record_id"], "filter['record_id']")
    if "seq" in out and (isinstance(out["seq"], bool) or not isinstance(out["seq"], int)):
        raise InvalidTypeError("filter['seq'] must be an int")
    return out


def _check_head(head: Any) -> dict[str, Any] | None:
    if head is None:
        return None
    if not isinstance(head, Mapping):
        raise InvalidTypeError("expected_head must be {'seq': int, 'hash': str} or None")
    seq, digest = head.get("seq"), head.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1 \
            or not isinstance(digest, str) or len(digest) != 64:
        raise InvalidInputError("expected_head must be {'seq': int >= 1, 'hash': SHA-256 hex}")
    return {"seq": seq, "hash": digest}


class AuditAPI(_Base):
    """The audit log: the methods ``StorageNamespace`` gets."""

    def _database(self) -> str:
        database = self._s.database
        if database is None:
            raise UnknownCollectionError("no database is defined: call storage.define() first")
        return database

    async def enable_audit_log(self, actor: str | None = None) -> None:
        """Log every later write to the current database (this page's calls) in a
        hash-chained audit log, each record naming ``actor`` when given."""
        await self._configure(SETTING, {"actor": _check_actor(actor)})

    async def disable_audit_log(self) -> None:
        """Stop logging this page's writes (the log kept so far stays and still verifies)."""
        await self._configure(SETTING, None)

    async def set_actor(self, actor: str | None) -> None:
        """Name ``actor`` (None: nobody) in the audit records of the writes that follow;
        the log must be on (InvalidInputError otherwise)."""
        checked = _check_actor(actor)
        self._database()
        if not self._s.settings.get(SETTING):
            raise InvalidInputError("the audit log is off: call enable_audit_log() first")
        await self._configure(SETTING, {"actor": checked})

    def audit_anchor(self) -> dict[str, Any] | None:
        """The newest head a verification of the current database found in this session
        ({"seq", "hash"}), or None: keep it outside the browser to check later sessions."""
        database = self._s.database
        return None if database is None else _ANCHORS.get(self._bridge, {}).get(database)

    async def verify_audit_log(self, *, expected_head: Mapping[str, Any] | None = None
                               ) -> dict[str, Any]:
        """Check the current database's audit chain; a report, never an exception for a
        broken chain: {"ok", "checked" (records read), "first_bad_seq" (None when ok),
        "reason", "head" ({"seq", "hash"} of the newest record; None unless ok),
        "anchored" (a head kept outside IndexedDB was checked too)}.

        Anchors: ``expected_head`` (one you kept, e.g. from an earlier session), this
        session's last verified head, and the worker's newest write. Without any, records
        cut from the tail cannot be told from a shorter log."""
        with self._measure("verify_audit_log", None):
            given = _check_head(expected_head)
            database = self._database()
            anchors = _ANCHORS.setdefault(self._bridge, {})
            kept = anchors.get(database)
            report = dict(await self._send(
                "verify_audit_log", {"anchors": [a for a in (given, kept) if a is not None]},
                False))
            if report["ok"] and report["head"] is not None:
                anchors[database] = dict(report["head"])
            return report

    async def query_audit_logs(self, filter: Mapping[str, Any] | None = None,
                               time_range: tuple[int | None, int | None] | None = None
                               ) -> list[dict[str, Any]]:
        """Audit records of the current database, oldest first: each {"seq", "operation",
        "collection", "record_id", "timestamp" (ms since the epoch), "actor",
        "prev_hash", "hash"}. ``filter``: fields that must be equal (operation,
        collection, record_id, actor, seq); ``time_range``: (start_ms, end_ms), both
        included, None for an open end (served by an index on the timestamp)."""
        with self._measure("query_audit_logs", None):
            self._database()
            wanted = _check_filter(filter)
            start, end = _bounds(time_range)
            bounds = None if time_range is None else [start, end]
            found = await self._send("query_audit_logs",
                                     {"filter": wanted, "time_range": bounds}, False)
            return [dict(r) for r in found]
