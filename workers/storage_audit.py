"""The ``storage`` channel's audit log: a hash-chained record of every write, kept in
the write's own transaction.

Off until the page enables it for a database (``storage.enable_audit_log``): then every
read-write transaction also takes the ``_audit`` store, reads the chain's head first and
adds one record per record written, hashed with ``_audit.next_record`` (hashlib,
synchronous) from IndexedDB's own callbacks. The records commit or vanish with the write.

The worker remembers the head of the last chain it wrote or verified: a place the stored
chain's editor cannot reach, so ``verify_audit_log`` also finds records cut from the tail.

Its page half: ``workerbridge.storage.storage_audit``.
"""

from __future__ import annotations

import time
from typing import Any

from workerbridge.core.errors import IntegrityError, InvalidInputError
from workerbridge.storage.audit import (
    AuditHead,
    AuditRecord,
    Verification,
    next_record,
    query,
    verify_chain,
)
from workerbridge.storage.idb import run
from workerbridge.storage.serial import Sink
from workerbridge.storage.txn import Batch, Change, Final, Hooks, Program

from .storage import database, operation, register_hooks, require_stores

STORE = "_audit"
SPEC = {"key": "seq", "indexes": {"timestamp": {"path": "timestamp", "unique": False,
                                                "multi": False}}}


class AuditHooks(Hooks):
    """One database's audit log (the page's "audit" setting: {"actor"} when enabled)."""

    internal_stores = {STORE: SPEC}  # noqa: RUF012 - created by define() even while off

    def __init__(self) -> None:
        self.enabled = False
        self.actor: str | None = None
        self.prev: AuditRecord | None = None  # the chain's head within one transaction
        self.head: AuditHead | None = None  # the newest record known to be committed

    def configure(self, settings: dict[str, Any]) -> None:
        audit = settings.get("audit")
        self.enabled = isinstance(audit, dict)
        actor = audit.get("actor") if isinstance(audit, dict) else None
        self.actor = actor if isinstance(actor, str) else None

    @property
    def active(self) -> bool:
        return self.enabled

    def scope(self, collections: Any) -> list[str]:
        return [STORE]

    def begin(self) -> Batch:
        # Read inside the write's transaction: another tab may have appended since.
        return [["last", STORE, None, None]]

    def started(self, results: list[Any]) -> None:
        head = results[0]
        try:
            self.prev = None if head is None else AuditRecord.from_dict(head)
        except InvalidInputError:
            # Nothing sound to chain onto: refuse the write (the transaction aborts) rather
            # than start a second chain that would hide where the first was damaged.
            raise IntegrityError("the audit log's newest record is malformed; "
                                 "verify_audit_log() shows where the log was damaged") from None

    def on_write(self, change: Change) -> Batch:
        rec = next_record(self.prev, change.op, change.collection, change.key,
                          int(time.time() * 1000), self.actor)
        self.prev = rec
        return [["add", STORE, rec.to_dict()]]

    def committed(self, database: str, changes: list[Change]) -> None:
        if self.prev is not None:
            self.head = self.prev.head


def _hooks(entry: Any) -> AuditHooks:
    return next(h for h in entry.hooks.hooks if isinstance(h, AuditHooks))


register_hooks(lambda database: AuditHooks())


def _head(value: Any) -> AuditHead | None:
    if value is None:
        return None
    if not isinstance(value, dict) or isinstance(value.get("seq"), bool) \
            or not isinstance(value.get("seq"), int) or value["seq"] < 1 \
            or not isinstance(value.get("hash"), str):
        raise InvalidInputError("a head must be {'seq': int, 'hash': str}")
    return AuditHead(value["seq"], value["hash"])


def _all(index: str | None, bounds: dict[str, Any] | None) -> Program:
    return (yield Final([["all", STORE, index, bounds, None]]))[0]


def _check_anchor(records: list[dict[str, Any]], anchor: AuditHead) -> Verification | None:
    """A lower anchor than the one the chain was verified against, found unchanged in it
    (the chain is intact and numbered from 1, so seq n is the n-th record)."""
    if anchor.seq <= len(records) and records[anchor.seq - 1]["hash"] == anchor.hash:
        return None
    return Verification(False, len(records), 1, f"record {anchor.seq} differs from an "
                                                "anchored head: the chain was rewritten")


@operation("verify_audit_log")
def verify(payload: dict[str, Any], sink: Sink) -> None:
    """Check the whole chain, and that it still holds every head the page gave
    ("anchors") and the newest this worker wrote or verified."""
    entry = database(payload)
    given = payload.get("anchors") or []
    if not isinstance(given, list):
        raise InvalidInputError("anchors must be a list of heads")
    heads = [_head(h) for h in given]

    async def job() -> dict[str, Any]:
        hooks = _hooks(entry)
        db = await entry.connection()
        require_stores(db, [STORE], "verify_audit_log")
        records, _ = await run(db, [STORE], "readonly", _all(None, None), "verify_audit_log")
        anchors = sorted({h for h in (*heads, hooks.head) if h is not None},
                         key=lambda h: h.seq)
        result = verify_chain(records, expected_head=anchors[-1] if anchors else None)
        for lower in anchors[:-1]:
            result = (_check_anchor(records, lower) if result.ok else None) or result
        head = None
        if result.ok and records:
            head = AuditHead(records[-1]["seq"], records[-1]["hash"])
            hooks.head = head  # verified (it holds every anchor): trusted from now on
        return {"ok": result.ok, "checked": result.checked,
                "first_bad_seq": result.first_bad_seq, "reason": result.reason,
                "head": None if head is None else {"seq": head.seq, "hash": head.hash},
                "anchored": bool(anchors)}

    entry.queue.put("other", job, sink)


@operation("query_audit_logs")
def query_logs(payload: dict[str, Any], sink: Sink) -> None:
    """Audit records matching a field filter and a time range, oldest first."""
    entry = database(payload)
    wanted = payload.get("filter") or {}
    time_range = payload.get("time_range")
    if not isinstance(wanted, dict) or (time_range is not None and
                                        not isinstance(time_range, list)):
        raise InvalidInputError("query_audit_logs needs a filter dict and a time range list")
    bounds = None if time_range is None else tuple(time_range)
    query([], wanted, bounds)  # refuses a bad filter or range before anything runs

    async def job() -> list[dict[str, Any]]:
        db = await entry.connection()
        require_stores(db, [STORE], "query_audit_logs")
        index, key_range = (None, None) if bounds is None else ("timestamp", _range(*bounds))
        records, _ = await run(db, [STORE], "readonly", _all(index, key_range),
                               "query_audit_logs")
        found = query(records, wanted, bounds)
        found.sort(key=lambda r: r.seq)  # the timestamp index gives time order
        return [r.to_dict() for r in found]

    entry.queue.put("other", job, sink)


def _range(start: float | None, end: float | None) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if start is not None:
        out.update(lo=start, lo_open=False)
    if end is not None:
        out.update(hi=end, hi_open=False)
    return out or None
