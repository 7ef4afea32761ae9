"""A tamper-evident audit log: records chained by SHA-256, checked by `verify_chain`.

Each record holds the hash of the one before it, so changing, removing, inserting or
reordering a stored record breaks the chain where it happened. `next_record` is
synchronous (hashlib only): it runs inside an IndexedDB transaction, from a callback
where nothing may be awaited, so the audit record commits with the write it describes.

What a chain alone cannot show. Anyone who can write the store can also drop its last
records, or rewrite every record from some point on with fresh hashes: the remaining
chain is intact. Only a head kept somewhere the attacker cannot write reveals that — the
`AuditHead` of the newest record, held by the page in memory for the session, sent to a
server, or kept in another origin's storage. Pass it as `verify_chain(...,
expected_head=head)`; without it, truncation of the tail is undetectable.

Hash input (format 1): the record's fields except ``hash``, plus ``"v": 1``, as JSON
with sorted keys, no spaces, non-ASCII kept, encoded as UTF-8; the hash is its SHA-256
in lowercase hex. Any language with a JSON encoder and SHA-256 can re-check a chain.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workerbridge.core.errors import InvalidFilterError, InvalidInputError, InvalidTypeError

FORMAT = 1
GENESIS = "0" * 64  # prev_hash of the first record
FIRST_SEQ = 1

RecordId = str | int | float  # a record's key, as IndexedDB keys go
_FIELDS = ("seq", "operation", "collection", "record_id", "timestamp", "actor",
           "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited write. ``timestamp`` is in milliseconds since the epoch."""

    seq: int
    operation: str
    collection: str
    record_id: RecordId
    timestamp: int
    actor: str | None
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The stored form: a plain dict IndexedDB can hold."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Read a stored record back; raise InvalidInputError when its shape is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidTypeError("an audit record must be a mapping")
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise InvalidInputError(f"audit record lacks {', '.join(missing)}")
        _check_fields(data["seq"], data["operation"], data["collection"], data["record_id"],
                      data["timestamp"], data["actor"])
        for name in ("prev_hash", "hash"):
            if not _is_hex_digest(data[name]):
                raise InvalidInputError(f"audit record {name} is not a SHA-256 hex digest")
        return cls(*(data[name] for name in _FIELDS))

    @property
    def head(self) -> AuditHead:
        return AuditHead(self.seq, self.hash)


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest record's seq and hash: the anchor that makes truncation visible."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify_chain` found.

    ``checked``: records read (on failure, including the one where the break showed).
    ``first_bad_seq``: the lowest seq that cannot be trusted — altered, missing,
    duplicated or out of place; the records before it form an intact chain from genesis.
    """

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str


_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _is_hex_digest(value: object) -> bool:
    return isinstance(value, str) and _HEX_DIGEST.fullmatch(value) is not None


def _check_fields(seq: object, operation: object, collection: object, record_id: object,
                  timestamp: object, actor: object) -> None:
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < FIRST_SEQ:
        raise InvalidInputError("audit seq must be an int >= 1")
    for name, value in (("operation", operation), ("collection", collection)):
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"audit {name} must be a non-empty str")
    if isinstance(record_id, bool) or not isinstance(record_id, str | int | float):
        raise InvalidTypeError("audit record_id must be a str or a number")
    if isinstance(record_id, float) and not math.isfinite(record_id):
        raise InvalidInputError("audit record_id must be a finite number")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        raise InvalidInputError("audit timestamp must be an int of milliseconds >= 0")
    if actor is not None and not isinstance(actor, str):
        raise InvalidTypeError("audit actor must be a str or None")


def canonical_bytes(seq: int, operation: str, collection: str, record_id: RecordId,
                    timestamp: int, actor: str | None, prev_hash: str) -> bytes:
    """The exact bytes a record's hash covers (see the module docstring)."""
    body = {"v": FORMAT, "seq": seq, "operation": operation, "collection": collection,
            "record_id": record_id, "timestamp": timestamp, "actor": actor,
            "prev_hash": prev_hash}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form, so no stable hash
        raise InvalidInputError("audit fields must be valid Unicode text") from None


def _digest(rec: AuditRecord) -> str:
    data = canonical_bytes(rec.seq, rec.operation, rec.collection, rec.record_id,
                           rec.timestamp, rec.actor, rec.prev_hash)
    return hashlib.sha256(data).hexdigest()


def next_record(prev: AuditRecord | Mapping[str, Any] | None, operation: str,
                collection: str, record_id: RecordId, timestamp: int | float,
                actor: str | None = None) -> AuditRecord:
    """The record that follows ``prev`` (None: the first of a chain). Synchronous.

    ``prev``: the newest stored record, as an `AuditRecord` or its stored dict; read it
    inside the same readwrite transaction as the write, since other tabs append too.
    ``timestamp``: milliseconds since the epoch (a whole-number float such as JS
    ``Date.now()`` is accepted).
    """
    if isinstance(timestamp, float) and timestamp.is_integer():
        timestamp = int(timestamp)
    if isinstance(record_id, float) and record_id.is_integer():
        record_id = int(record_id)  # 1.0 and 1 are one IndexedDB key: one hash input
    if prev is not None and not isinstance(prev, AuditRecord):
        prev = AuditRecord.from_dict(prev)
    seq = FIRST_SEQ if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    _check_fields(seq, operation, collection, record_id, timestamp, actor)
    assert isinstance(timestamp, int)  # narrowed by _check_fields
    data = canonical_bytes(seq, operation, collection, record_id, timestamp, actor, prev_hash)
    return AuditRecord(seq, operation, collection, record_id, timestamp, actor, prev_hash,
                       hashlib.sha256(data).hexdigest())


def verify_chain(records: Iterable[AuditRecord | Mapping[str, Any]], *,
                 expected_head: AuditHead | AuditRecord | None = None) -> Verification:
    """Check a whole chain, oldest first, stopping at the first break.

    ``records`` may be `AuditRecord`s or their stored dicts, from any iterable (a
    cursor's pages streamed in). ``expected_head``: a head recorded earlier; the chain
    must still hold it unchanged, so records missing from the tail, or a rewritten
    prefix, are found. Records after it are checked by their links only.
    """
    if isinstance(expected_head, AuditRecord):
        expected_head = expected_head.head
    if expected_head is not None and not isinstance(expected_head, AuditHead):
        raise InvalidTypeError("expected_head must be an AuditHead, an AuditRecord or None")
    prev_hash, expected_seq, checked = GENESIS, FIRST_SEQ, 0

    def bad(seq: int, reason: str) -> Verification:
        return Verification(False, checked, seq, reason)

    for item in records:
        checked += 1
        try:
            rec = item if isinstance(item, AuditRecord) else AuditRecord.from_dict(item)
        except InvalidInputError:
            return bad(expected_seq, f"the record in place of seq {expected_seq} is malformed")
        if rec.hash != _digest(rec):
            # The content no longer matches its own hash: this record was edited.
            return bad(rec.seq, f"record {rec.seq} was altered (its hash does not match)")
        if rec.seq > expected_seq:
            return bad(expected_seq, f"record {expected_seq} is missing "
                                     f"(found {rec.seq} next)")
        if rec.seq < expected_seq:
            return bad(rec.seq, f"record {rec.seq} appears again or out of order "
                                f"(expected {expected_seq})")
        if rec.prev_hash != prev_hash:
            # Both records are self-consistent but do not link: the earlier one was
            # rewritten with a fresh hash, or this one was forged. Trust neither.
            first = max(FIRST_SEQ, rec.seq - 1)
            return bad(first, f"record {rec.seq} does not link to the record before it")
        if expected_head is not None and rec.seq == expected_head.seq \
                and rec.hash != expected_head.hash:
            # The chain is intact but ends elsewhere than the anchor: rewritten from some
            # unknown point on, so no record up to here can be trusted.
            return bad(FIRST_SEQ, f"record {rec.seq} differs from the anchored head: "
                                  "the chain was rewritten")
        prev_hash, expected_seq = rec.hash, expected_seq + 1
    if expected_head is not None and expected_seq <= expected_head.seq:
        return bad(expected_seq, f"records {expected_seq}..{expected_head.seq} are missing "
                                 "(the tail was truncated)")
    reason = "intact" if checked else "empty chain"
    if expected_head is not None and expected_seq - 1 > expected_head.seq:
        reason += (f"; records {expected_head.seq + 1}..{expected_seq - 1} came after the "
                   "anchored head and are checked by their links only")
    return Verification(True, checked, None, reason)


AuditFilter = Callable[[AuditRecord], bool] | Mapping[str, Any]


def query(records: Iterable[AuditRecord | Mapping[str, Any]],
          filter_fn: AuditFilter | None = None,
          time_range: tuple[int | None, int | None] | None = None) -> list[AuditRecord]:
    """Records that pass ``filter_fn`` and fall in ``time_range``, in input order.

    ``filter_fn``: a predicate on `AuditRecord`, or a mapping of field to the value it must
    equal (``{"collection": "users", "operation": "update"}``). ``time_range``: (start,
    end) in milliseconds, both ends included as with ``IDBKeyRange.bound``; None for an
    open end.
    """
    predicate = _predicate(filter_fn)
    start, end = _bounds(time_range)
    out = []
    for item in records:
        rec = item if isinstance(item, AuditRecord) else AuditRecord.from_dict(item)
        if start is not None and rec.timestamp < start:
            continue
        if end is not None and rec.timestamp > end:
            continue
        if predicate(rec):
            out.append(rec)
    return out


def _predicate(filter_fn: AuditFilter | None) -> Callable[[AuditRecord], bool]:
    if filter_fn is None:
        return lambda rec: True
    if isinstance(filter_fn, Mapping):
        wanted = dict(filter_fn)
        unknown = sorted(str(k) for k in wanted if k not in _FIELDS)
        if unknown:
            raise InvalidFilterError(f"audit records have no field {', '.join(unknown)}")
        return lambda rec: all(getattr(rec, k) == v for k, v in wanted.items())
    if callable(filter_fn):
        return filter_fn
    raise InvalidTypeError("filter_fn must be a callable, a mapping or None")


def _bounds(time_range: tuple[int | None, int | None] | None) -> tuple[int | None, int | None]:
    if time_range is None:
        return None, None
    if not isinstance(time_range, tuple | list) or len(time_range) != 2:
        raise InvalidTypeError("time_range must be a (start, end) pair")
    start, end = time_range
    for value in (start, end):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, int | float)):
            raise InvalidTypeError("time_range ends must be numbers of milliseconds or None")
    if start is not None and end is not None and start > end:
        raise InvalidInputError("time_range starts after it ends")
    return start, end
