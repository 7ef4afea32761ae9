"""The page side of field encryption by classification (``storage.classify_data``).

The classification and the key are the database's "fields" setting: the worker gets them
before its next call and again after it restarted (``_calls.StorageState.configure``).
Everything that can be checked here is, before anything is sent: a filter or sort on a
protected field, a protected value that would not round-trip, a protected field written
with no key set. The worker checks filters again (``workers/storage_fields.py``).

Its worker half: ``workers/storage_fields.py``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.core.platform import IN_PYODIDE, js_global, type_tag
from workerbridge.storage.fieldcrypt import Classification, check_fields, check_filter, check_value
from workerbridge.storage.query import check_sort

if TYPE_CHECKING:
    from workerbridge.storage.storage import StorageCore as _Base
else:
    _Base = object

KEY_BYTES = 32
NO_KEY = ("no encryption key is set for this database: call "
          "storage.set_encryption_key() before writing protected fields")

_NONE: frozenset[str] = frozenset()
# Per bridge: (the "fields" setting it was worked out from, {collection: fields}).
_PROTECTED: weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, frozenset[str]]]] = \
    weakref.WeakKeyDictionary()


class FieldsAPI(_Base):
    """Field encryption: the methods ``StorageNamespace`` gets."""

    # --- settings ---------------------------------------------------------------------------

    async def classify_data(self, collection: str,
                            levels: Mapping[str, str]) -> dict[str, str]:
        """Classify ``collection``'s top-level fields as "PII", "SENSITIVE", "INTERNAL" or
        "PUBLIC" (case-insensitive; replaces its previous classification). PII and
        SENSITIVE fields are AES-GCM encrypted at rest from then on and cannot be filtered
        or sorted on. Returns the classification."""
        coll, key = self._key(collection)
        classification = Classification(levels, id_field=key)
        for fields in self._s.indexed.get(coll, []):
            check_fields(fields, classification, purpose="index")
        current = self._fields_setting()
        entry = {"key": key, "levels": classification.levels}
        await self._configure("fields", {**current, "collections": {
            **current["collections"], coll: entry}})
        return classification.levels

    async def set_encryption_key(self, key: Any) -> None:
        """The key of this database's protected fields: 32 bytes (e.g. from
        ``WorkerBridge.crypto.derive_key``; imported here as a non-extractable CryptoKey)
        or an AES-GCM CryptoKey of 256 bits with "encrypt" and "decrypt" usages. None
        forgets it. Kept by this page, and given again to a worker that restarted."""
        value: Any
        if key is None:
            value = None
        elif isinstance(key, bytes | bytearray | memoryview):
            raw = bytes(key)
            if len(raw) != KEY_BYTES:
                raise InvalidInputError(f"key must be {KEY_BYTES} bytes (AES-256), "
                                        f"not {len(raw)}")
            value = await _import_raw(raw)
        elif IN_PYODIDE and type_tag(key) == "[object CryptoKey]":
            usages = {str(u) for u in key.usages}
            if str(key.algorithm.name) != "AES-GCM" or int(key.algorithm.length) != 256 \
                    or not {"encrypt", "decrypt"} <= usages:
                raise InvalidInputError("key must be an AES-GCM CryptoKey of 256 bits that "
                                        "may encrypt and decrypt")
            value = key
        else:
            raise InvalidTypeError("key must be 32 bytes, an AES-GCM CryptoKey, or None")
        await self._configure("fields", {**self._fields_setting(), "key": value})

    def classification(self, collection: str) -> dict[str, str]:
        """``collection``'s classification ({} when it has none)."""
        coll, _ = self._key(collection)
        entry = self._fields_setting()["collections"].get(coll)
        return dict(entry["levels"]) if entry else {}

    def _fields_setting(self) -> dict[str, Any]:
        current = self._s.settings.get("fields")
        return dict(current) if current else {"collections": {}, "key": None}

    def _protected(self, collection: Any) -> frozenset[str]:
        # Asked once per record of a bulk call: worked out once per settings object.
        current = self._s.settings.get("fields")
        cached = _PROTECTED.get(self._bridge)
        if cached is None or cached[0] is not current:
            entries = current["collections"] if current else {}
            cached = (current, {name: Classification(e["levels"], id_field=e["key"])
                                .protected_fields() for name, e in entries.items()})
            _PROTECTED[self._bridge] = cached
        return cached[1].get(collection, _NONE) if isinstance(collection, str) else _NONE

    # --- checks made before a call leaves ---------------------------------------------------

    def _check_query(self, collection: str, flt: Any, sort: Any = None) -> None:
        super()._check_query(collection, flt, sort)
        protected = self._protected(collection)
        if protected:
            if isinstance(flt, Mapping):
                check_filter(flt, protected)
            spec = check_sort(sort)
            check_fields((".".join(parts) for parts, _ in spec), protected, purpose="sort")

    def _check_write(self, collection: str, data: Any) -> None:
        super()._check_write(collection, data)
        protected = self._protected(collection)
        if not protected or not isinstance(data, Mapping):
            return
        present = protected.intersection(data)
        if present and self._fields_setting()["key"] is None:
            raise InvalidInputError(NO_KEY)
        for field in present:
            check_value(field, data[field])

    def _check_define(self, database: str, spec: dict[str, Any]) -> None:
        super()._check_define(database, spec)
        if self._s.database != database:
            return  # another database: its classification starts empty
        for name, store in spec["stores"].items():
            for w in store["indexes"].values():
                fields = tuple(w["path"]) if isinstance(w["path"], list) else (w["path"],)
                check_fields(fields, self._protected(name), purpose="index")


async def _import_raw(raw: bytes) -> Any:
    """Raw key bytes as a non-extractable AES-GCM CryptoKey (the page keeps no copy of the
    bytes); on the host, where no worker could use it anyway, the bytes."""
    if not IN_PYODIDE:
        return raw
    from workerbridge.core.jsconv import bytes_to_js

    subtle = js_global().crypto.subtle
    return await subtle.importKey("raw", bytes_to_js(raw), "AES-GCM", False,
                                  ["encrypt", "decrypt"])
