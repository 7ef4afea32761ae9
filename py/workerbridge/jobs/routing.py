"""Which subscribers a change reaches: channel patterns and filters (pure).

A change to a record names its channel: the app, the model (its collection), the record's
id and, when it has one, the user who owns it. A subscription names a pattern over the
same keys (``{"app": "myapp", "model": "task"}``: every task of the app; add ``"user"``
for one user's tasks, ``"id"`` for one record) and, optionally, a filter in the storage
query language, tested on the record as changed (``{"priority": {"$eq": "high"}}``).

Matching goes the other way round, so that it costs the same whatever the number of
subscriptions: a change is expanded into the few patterns that could match it
(``change_patterns``: the whole app's model, the owner's view of it, the record, and the
owner's view of the record), and only the subscriptions filed under those patterns'
keys are looked at; of those, a filtered one matches when its filter matches the record.
A deleted record has no state to filter on: only unfiltered subscriptions hear of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workerbridge.core.errors import InvalidFilterError, InvalidInputError, InvalidTypeError
from workerbridge.storage.query import Node, matches, validate_filter

KEYS = ("app", "user", "model", "id")
REQUIRED = ("app", "model")
MAX_PART = 200


def check_pattern(pattern: Any) -> dict[str, str]:
    """A subscription's pattern, checked: ``app`` and ``model``, with ``user`` and ``id``
    optional, each a non-empty string without ``/``."""
    if not isinstance(pattern, Mapping):
        raise InvalidTypeError("a pattern is a dict: {'app': ..., 'model': ..., "
                               "'user': ..., 'id': ...}")
    unknown = sorted(str(k)[:40] for k in pattern if k not in KEYS)
    if unknown:
        raise InvalidInputError(f"a pattern has no key {unknown[0]!r}; its keys are "
                                f"{', '.join(KEYS)}")
    out = {}
    for key in KEYS:
        if key not in pattern or pattern[key] is None:
            if key in REQUIRED:
                raise InvalidInputError(f"a pattern needs {key!r}")
            continue
        value = pattern[key]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidTypeError(f"a pattern's {key!r} is a string")
        value = str(value)
        if not value or "/" in value or len(value) > MAX_PART:
            raise InvalidInputError(f"a pattern's {key!r} is a non-empty string without '/'")
        out[key] = value
    return out


def channel_key(pattern: Mapping[str, str]) -> str:
    """The key a pattern is filed under: ``app/user/model/id``, ``*`` for a key left
    out (every user, every record)."""
    return "/".join(pattern.get(k, "*") for k in KEYS)


def change_patterns(channel: Mapping[str, Any]) -> list[dict[str, str]]:
    """The patterns a change to the record ``channel`` ({app, model, id, user?}) can
    match: the app's model, the owner's view of it, the record, the owner's view of the
    record (the seed's fan-out scopes)."""
    base = check_pattern(channel)
    if "id" not in base:
        raise InvalidInputError("a change names its record's 'id'")
    scopes = [{"app": base["app"], "model": base["model"]},
              {"app": base["app"], "model": base["model"], "id": base["id"]}]
    if "user" in base:
        scopes.insert(1, {"app": base["app"], "user": base["user"], "model": base["model"]})
        scopes.append(dict(base))
    return scopes


@dataclass(frozen=True, slots=True)
class Subscription:
    """One subscription, as the router keeps it."""

    id: str
    pattern: dict[str, str]
    filter: Node | None = None
    owner: str = ""  # the tab (or port) it delivers to

    @property
    def key(self) -> str:
        return channel_key(self.pattern)


def subscription(sub_id: str, pattern: Any, flt: Any = None, owner: str = "") -> Subscription:
    """A checked subscription (InvalidInputError / InvalidFilterError otherwise)."""
    checked = check_pattern(pattern)
    node = None
    if flt is not None:
        if not isinstance(flt, Mapping):
            raise InvalidFilterError("a filter is a dict in the storage query language")
        node = validate_filter(flt) if flt else None
    return Subscription(sub_id, checked, node, owner)


def route(channel: Mapping[str, Any], record: Any,
          subscriptions: Iterable[Subscription]) -> dict[str, list[str]]:
    """The subscriptions a change reaches: {subscription id: [matching channel keys]}.
    ``record``: the record as changed, for the filters (None for a deletion: only
    unfiltered subscriptions match)."""
    keys = {channel_key(p) for p in change_patterns(channel)}
    out: dict[str, list[str]] = {}
    for sub in subscriptions:
        key = sub.key
        if key not in keys:
            continue
        if sub.filter is not None and (record is None or not matches(sub.filter, record)):
            continue
        out.setdefault(sub.id, []).append(key)
    return out
