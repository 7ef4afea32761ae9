"""Storage arguments checked alike on the page and in the worker (pure): schemas,
collection names, keys, records, and ``transaction()``'s operations."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError, UnknownCollectionError
from workerbridge.storage.query import MAX_SAFE_INTEGER, check_sort, clean_value, validate_filter

OPS = ("create", "update", "delete", "get", "read", "count")
DEFAULT_KEY = "id"
BLOCKED_TIMEOUT = 5.0  # seconds an upgrade waits for other tabs before giving up


def _path(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{what} must be a non-empty field name")
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        raise InvalidInputError(f"{what} must be dot-separated identifiers (an IndexedDB "
                                "key path)")
    if "length" in parts[1:]:
        raise InvalidInputError(f"{what}: IndexedDB reads '.length' of strings and lists, "
                                "so a key path cannot go through it")
    return name


def _index(name: str, spec: Any, coll: str) -> dict[str, Any]:
    what = f"index {name[:40]!r} of {coll[:40]!r}"
    unique = multi = False
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"fields", "unique", "multi_entry"}
        if unknown:
            raise InvalidInputError(f"{what}: unknown option {sorted(unknown)[0][:40]!r}")
        unique, multi = spec.get("unique", False), spec.get("multi_entry", False)
        if not isinstance(unique, bool) or not isinstance(multi, bool):
            raise InvalidTypeError(f"{what}: unique and multi_entry must be bool")
        spec = spec.get("fields", name)
    if isinstance(spec, str):
        fields = [_path(spec, what)]
    elif isinstance(spec, list | tuple) and len(spec) >= 2:
        fields = [_path(f, what) for f in spec]
    else:
        raise InvalidInputError(f"{what}: fields must be a field name or a list of two or "
                                "more (a compound index)")
    if multi and len(fields) > 1:
        raise InvalidInputError(f"{what}: a compound index cannot be multi-entry")
    return {"path": fields[0] if len(fields) == 1 else fields, "unique": unique,
            "multi": multi}


def normalize_schema(collections: Any) -> dict[str, Any]:
    """``{name: {"key": "id", "indexes": {...}}}`` in the form the worker's upgrade takes:
    ``{"stores": {name: {"key": field, "indexes": {name: {"path", "unique", "multi"}}}}}``.

    An index is a field name, a list of fields (compound), or ``{"fields": ...,
    "unique": bool, "multi_entry": bool}``; ``"indexes"`` may also be a list of fields
    and field lists, named after their fields ("a", "a+b").
    """
    if not isinstance(collections, Mapping) or not collections:
        raise InvalidTypeError("collections must be a non-empty dict: name -> options")
    stores = {}
    for coll, options in collections.items():
        check_collection(coll)
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise InvalidTypeError(f"options of {coll[:40]!r} must be a dict")
        unknown = set(options) - {"key", "indexes"}
        if unknown:
            raise InvalidInputError(f"{coll[:40]!r}: unknown option {sorted(unknown)[0][:40]!r}")
        key = options.get("key", DEFAULT_KEY)
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInputError(f"{coll[:40]!r}: key must be a field name (an identifier)")
        declared = options.get("indexes", {})
        if isinstance(declared, list | tuple):
            declared = {f if isinstance(f, str) else "+".join(map(str, f)): f for f in declared}
        if not isinstance(declared, Mapping):
            raise InvalidTypeError(f"indexes of {coll[:40]!r} must be a dict or a list")
        indexes = {}
        for name, spec in declared.items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"{coll[:40]!r}: index names must be non-empty str")
            indexes[name] = _index(name, spec, coll)
        stores[coll] = {"key": key, "indexes": indexes}
    return {"stores": stores}


def check_database(name: Any, version: Any) -> tuple[str, int]:
    if not isinstance(name, str) or not name:
        raise InvalidInputError("database must be a non-empty str")
    if isinstance(version, bool) or not isinstance(version, int) \
            or not 1 <= version <= MAX_SAFE_INTEGER:
        raise InvalidInputError("version must be a positive integer")
    return name, version


def check_count(value: Any, what: str, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{what} must be a non-negative integer")
    return value


def check_op(op: Any, keys: Mapping[str, str]) -> dict[str, Any]:
    """One operation of ``transaction()``, checked; a create gets its key filled in.
    ``keys``: collection -> key field."""
    if not isinstance(op, Mapping):
        raise InvalidTypeError("each transaction operation must be a dict")
    kind = op.get("op", op.get("type"))  # "type": the seed's spelling of the same key
    if "op" in op and "type" in op and op["op"] != op["type"]:
        raise InvalidInputError("an operation names both 'op' and 'type', and they differ")
    if kind not in OPS:
        raise InvalidInputError(f"op (or type) must be one of {', '.join(OPS)}")
    coll = check_collection(op.get("collection"))
    if coll not in keys:
        raise UnknownCollectionError(f"no collection {coll[:60]!r} in the schema")
    out: dict[str, Any] = {"op": kind, "collection": coll}
    if kind == "create":
        out["data"] = prepare_record(op.get("data"), keys[coll])
    elif kind == "get":
        out["id"] = check_key(op.get("id"))
    else:
        validate_filter(op.get("filter"))
        out["filter"] = op.get("filter")
        if kind == "update":
            out["data"] = check_fields(op.get("data"))
        elif kind == "read":
            check_sort(op.get("sort"))
            out["sort"] = op.get("sort")
            out["limit"] = check_count(op.get("limit"), "limit", True)
            out["offset"] = check_count(op.get("offset", 0) or 0, "offset", False)
    return out


def check_collection(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidTypeError(f"a collection name must be a str, not {type(name).__name__}")
    if not name or name.startswith("_"):
        raise InvalidInputError("a collection name must be non-empty and not start with '_' "
                                "(reserved for internal stores)")
    return name


def check_key(value: Any, what: str = "id") -> Any:
    """A record key: a str or a finite number (IndexedDB keys; booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInputError(f"{what} must be a str or a number, not "
                                f"{type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number")
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        raise InvalidInputError(f"{what} is an integer beyond 2**53")
    return value


def check_fields(data: Any, what: str = "data",
                 foreign: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A record or a partial record as storable data (see ``clean_value``); field names
    must not start with "$". ``foreign`` converts JS values (in a worker)."""
    if not isinstance(data, dict):
        if foreign is not None and data is not None:
            data = foreign(data)
        if not isinstance(data, dict):
            raise InvalidTypeError(f"{what} must be a dict, not {type(data).__name__}")
    clean: dict[str, Any] = clean_value(data, what, fields=True, foreign=foreign)
    return clean


def prepare_record(data: Any, key: str, *, checked: bool = False) -> dict[str, Any]:
    """A record ready to create: checked (unless ``checked``), with its key (a new UUID4
    string if absent)."""
    record = data if checked else check_fields(data)
    if key in record:
        check_key(record[key], key)
        return record
    return {key: str(uuid.uuid4()), **record}
