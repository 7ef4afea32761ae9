"""Change events written to storage: the work of a pipeline's writer stage (pure).

A change event names a record by its channel (``{"app", "model", "id", "user"?}``; the
model is the collection) and says what happened to it, in the seed's words:

- ``model_created`` with ``data``: the record's fields;
- ``model_updated`` with ``patch``: RFC 6902 JSON Patch operations, applied to the
  stored record (by the ``jsonpatch`` package: the caller passes its ``apply``);
- ``model_deleted``.

``write_change`` applies one as one transaction program: the record and the change's
idempotency mark (in the internal ``_changes`` store) are written together, so the
change is applied exactly once however often the event is delivered. A second delivery
finds the mark and returns the change as first written, writing nothing. Marks are kept
for ``KEEP_MS`` (7 days); each write removes a few expired ones. A patch that
does not apply (a missing path, a failed ``test``) raises ``InvalidInputError`` inside the
transaction: nothing is written, and the record is as it was.

The result is the change as published to subscribers (``jobs.subscriptions``): its
``event``, ``key`` (the idempotency key), ``channel``, the ``record`` as changed (None
after a deletion) and, for an update, its ``patch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workerbridge.core.errors import (
    ConstraintError,
    InvalidInputError,
    InvalidTypeError,
    PackageNotFoundError,
)
from workerbridge.storage.plan import UNBOUNDED, KeyRange, check_indexed
from workerbridge.storage.schema import (
    check_collection,
    check_database,
    check_fields,
    check_key,
)
from workerbridge.storage.txn import Program, Tx

EVENTS = ("model_created", "model_updated", "model_deleted")
PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")
CHANNEL_KEYS = ("app", "user", "model", "id")
STORE = "_changes"
SPEC = {"key": "key", "indexes": {"at": {"path": "at", "unique": False, "multi": False}}}
MAX_KEY = 200
KEEP_MS = 7 * 24 * 3600 * 1000  # how long a change's mark is kept (its re-runs are no-ops)
PRUNE = 32  # expired marks each write removes, at most

Patcher = Callable[[dict[str, Any], list[dict[str, Any]]], Any]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A checked change event."""

    event: str
    database: str
    version: int
    channel: dict[str, Any]
    key: str
    data: dict[str, Any] | None = None
    patch: tuple[dict[str, Any], ...] = ()

    @property
    def collection(self) -> str:
        return str(self.channel["model"])

    @property
    def id(self) -> Any:
        return self.channel["id"]


def check_patch(patch: Any) -> list[dict[str, Any]]:
    """JSON Patch operations in their RFC 6902 shape (whether they apply is for the
    record to say)."""
    if not isinstance(patch, list) or not patch:
        raise InvalidInputError("an update's patch is a non-empty list of JSON Patch "
                                "operations")
    out = []
    for n, op in enumerate(patch):
        if not isinstance(op, Mapping) or op.get("op") not in PATCH_OPS:
            raise InvalidInputError(f"JSON Patch operation {n} has no valid 'op' (one of "
                                    f"{', '.join(PATCH_OPS)})")
        path = op.get("path")
        if not isinstance(path, str) or (path and not path.startswith("/")):
            raise InvalidInputError(f"JSON Patch operation {n}: 'path' is a JSON Pointer "
                                    "('' or starting with '/')")
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise InvalidInputError(f"JSON Patch operation {n} ({op['op']}) needs a 'value'")
        if op["op"] in ("move", "copy") and not isinstance(op.get("from"), str):
            raise InvalidInputError(f"JSON Patch operation {n} ({op['op']}) needs 'from'")
        out.append(dict(op))
    return out


def check_event(event: Any, default_key: str | None) -> ChangeEvent:
    """A writer stage's event, checked; ``default_key`` (the job's id) is its
    idempotency key unless it brings its own ``key``."""
    if not isinstance(event, Mapping):
        raise InvalidTypeError("a change event is a dict: event, database, version, "
                               "channel, and data or patch")
    kind = event.get("event")
    if kind not in EVENTS:
        raise InvalidInputError(f"a change event's 'event' is one of {', '.join(EVENTS)}")
    database, version = check_database(event.get("database"), event.get("version"))
    channel = event.get("channel")
    if not isinstance(channel, Mapping):
        raise InvalidTypeError("a change event's channel is a dict: app, model, id, user")
    unknown = sorted(str(k)[:40] for k in channel if k not in CHANNEL_KEYS)
    if unknown:
        raise InvalidInputError(f"a channel has no key {unknown[0]!r}")
    for name in ("app", "model", "id"):
        if channel.get(name) is None:
            raise InvalidInputError(f"a change event's channel needs {name!r}")
    check_collection(channel["model"])
    check_key(channel["id"], "the channel's id")
    for name in ("app", "user"):
        value = channel.get(name)
        if value is not None and (not isinstance(value, str) or not value or "/" in value):
            raise InvalidInputError(f"a channel's {name!r} is a non-empty string without '/'")
    key = event.get("key")
    if key is None:
        key = default_key
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise InvalidInputError(f"a change's idempotency key is a non-empty string of at "
                                f"most {MAX_KEY} characters")
    data = None
    patch: list[dict[str, Any]] = []
    if kind == "model_created":
        data = check_fields(event.get("data"), "a created record's data")
    elif kind == "model_updated":
        patch = check_patch(event.get("patch"))
    clean = {k: channel[k] for k in CHANNEL_KEYS if channel.get(k) is not None}
    return ChangeEvent(kind, database, version, clean, key, data, tuple(patch))


def json_patch() -> Patcher:
    """RFC 6902 by the ``jsonpatch`` package, which the workers load from the bundle
    (``WorkerBridge(packages=["jsonpatch"])``). A patch that does not apply raises
    ``InvalidInputError`` naming the failure's kind, never the record's values."""
    try:
        import jsonpatch
    except ImportError:
        raise PackageNotFoundError(
            "the writer stage applies JSON Patch with the jsonpatch package: start the "
            "bridge with packages=['jsonpatch'] (a bundle carries it after `python -m "
            "workerbridge bundle OUT --package jsonpatch`)") from None

    def apply(record: dict[str, Any], patch: list[dict[str, Any]]) -> Any:
        try:
            return jsonpatch.apply_patch(record, patch, in_place=False)
        except Exception as exc:  # JsonPatchConflict, JsonPatchTestFailed, JsonPointerException...
            raise InvalidInputError(f"the JSON Patch does not apply to the record "
                                    f"({type(exc).__name__})") from None

    return apply


def write_change(tx: Tx, change: ChangeEvent, apply: Patcher,
                 reserved: frozenset[str] = frozenset(), now_ms: int = 0) -> Program:
    """Apply ``change`` and mark it applied, in one transaction; the change as published
    (the first run's, when the mark was there already)."""
    info = tx.store(change.collection)
    expired = KeyRange(UNBOUNDED, now_ms - KEEP_MS, upper_open=True).to_wire()
    mark, stored, old = yield [["get", STORE, change.key],
                               ["get", change.collection, change.id],
                               ["all", STORE, "at", expired, PRUNE]]
    if mark is not None:
        done: dict[str, Any] = mark["change"]
        return done
    record: dict[str, Any] | None
    if change.event == "model_created":
        if stored is not None:
            raise ConstraintError(f"{change.collection[:60]!r} already has a record with "
                                  "this id")
        data = dict(change.data or {})
        if info.key in data and data[info.key] != change.id:
            raise InvalidInputError(f"a created record's {info.key!r} differs from the "
                                    "channel's id")
        record = {info.key: change.id, **data}
        _refuse_reserved(record, reserved)
        check_indexed(record, info.indexes)
        batch = tx.write("create", change.collection, change.id, record,
                         ["add", change.collection, record])
    elif change.event == "model_updated":
        if stored is None:
            raise InvalidInputError(f"no record with this id in {change.collection[:60]!r} "
                                    "to update")
        visible = {k: v for k, v in stored.items() if k not in reserved}
        patched = apply(visible, list(change.patch))
        if not isinstance(patched, dict):
            raise InvalidInputError("the JSON Patch does not leave a record (a dict)")
        patched = check_fields(patched, "the patched record")
        if patched.get(info.key) != stored[info.key]:
            raise InvalidInputError(f"a JSON Patch cannot change the record's key "
                                    f"({info.key!r})")
        _refuse_reserved(patched, reserved)
        merged = tx.merge(change.collection, stored, patched)
        record = {k: v for k, v in merged.items() if k in patched or k in reserved}
        check_indexed(record, info.indexes)
        batch = tx.write("update", change.collection, change.id, record,
                         ["put", change.collection, record])
    else:
        record = None
        batch = [] if stored is None else tx.write(
            "delete", change.collection, change.id, None, ["del", change.collection, change.id])
    out = {"event": change.event, "key": change.key, "channel": change.channel,
           "record": None if record is None else
           {k: v for k, v in record.items() if k not in reserved},
           "patch": list(change.patch)}
    # Marks older than KEEP_MS go, a few with each write, so the store stays bounded.
    prune = [["del", STORE, m["key"]] for m in old]
    yield [*batch, *prune, ["put", STORE, {"key": change.key, "change": out, "at": now_ms}]]
    return out


def _refuse_reserved(record: dict[str, Any], reserved: frozenset[str]) -> None:
    if reserved and not reserved.isdisjoint(record):
        name = min(reserved.intersection(record))
        raise InvalidInputError(f"the field {name!r} is reserved (by storage itself)")
