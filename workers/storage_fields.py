"""Field encryption for the ``storage`` channel: classified fields sealed with AES-GCM at rest.

The page's "fields" setting (``storage.classify_data``, ``storage.set_encryption_key``)::

    {"collections": {name: {"key": key field, "levels": {field: level}}},
     "key": 32 bytes | an AES-GCM CryptoKey | None}

PII and SENSITIVE fields are sealed by ``_fieldcrypt`` with SubtleCrypto: in ``encode``,
before the write's transaction opens, and opened in ``decode``, after the read's
transaction completed — nothing is awaited inside one. An update by filter learns its
records' ids only inside the transaction, so its ciphertexts are bound to each record
there, synchronously, by a mac (``merge``). Filters on a protected field are refused
(``check_filter``): its stored form is noise under a random nonce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workerbridge.workers.storage import register_hooks

from workerbridge._errors import IntegrityError, InvalidInputError
from workerbridge._fieldcrypt import (
    Classification,
    bind_record,
    check_filter,
    derive_mac_key,
    is_sealed,
    open_record,
    seal_patch,
    seal_record,
)
from workerbridge._query import Node, unparse
from workerbridge._txn import Hooks

KEY_BYTES = 32
NO_KEY = ("no encryption key is set for this database: call "
          "storage.set_encryption_key() before writing or reading protected fields")


@dataclass(frozen=True, slots=True)
class _Collection:
    key: str  # the key field: it binds each ciphertext to its record
    protected: frozenset[str]


def _subtle() -> Any:
    import js

    return js.crypto.subtle


async def _import_key(given: Any) -> Any:
    """A non-extractable AES-GCM CryptoKey from 32 raw bytes, or the CryptoKey given."""
    from workerbridge._jsconv import bytes_to_js
    from workerbridge._platform import type_tag

    tag = "" if isinstance(given, bytes) else type_tag(given)
    if tag == "[object CryptoKey]":
        usages = {str(u) for u in given.usages}
        if str(given.algorithm.name) != "AES-GCM" or int(given.algorithm.length) != 256 \
                or not {"encrypt", "decrypt"} <= usages:
            raise InvalidInputError("the key must be an AES-GCM CryptoKey of 256 bits that "
                                    "may encrypt and decrypt")
        return given
    raw = given if isinstance(given, bytes) else bytes(given.to_bytes())
    if len(raw) != KEY_BYTES:
        raise InvalidInputError(f"the key must be {KEY_BYTES} bytes (AES-256)")
    return await _subtle().importKey("raw", bytes_to_js(raw), "AES-GCM", False,
                                     ["encrypt", "decrypt"])


class FieldHooks(Hooks):
    """One database's field encryption, as the page configured it."""

    def __init__(self) -> None:
        self.collections: dict[str, _Collection] = {}
        self.given_key: Any = None
        self._key: Any = None  # the CryptoKey, imported on first use
        self._mac_key: bytes | None = None

    def configure(self, settings: dict[str, Any]) -> None:
        fields = settings.get("fields") or {}
        collections = {}
        for name, spec in (fields.get("collections") or {}).items():
            key = spec["key"]
            levels = Classification(spec["levels"], id_field=key)
            collections[name] = _Collection(key, levels.protected_fields())
        self.collections = collections
        self.given_key = fields.get("key")
        self._key = self._mac_key = None

    @property
    def active(self) -> bool:
        return bool(self.collections)

    def check_filter(self, collection: str, node: Node) -> None:
        entry = self.collections.get(collection)
        if entry is not None and entry.protected:
            check_filter(unparse(node), entry.protected)

    # --- the cipher: SubtleCrypto, outside transactions ----------------------------------------

    async def _crypto_key(self) -> Any:
        if self._key is None:
            if self.given_key is None:
                raise InvalidInputError(NO_KEY)
            self._key = await _import_key(self.given_key)
        return self._key

    async def _encrypt(self, field: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return await self._gcm("encrypt", field, nonce, plaintext, aad)

    async def _decrypt(self, field: str, nonce: bytes, ct: bytes, aad: bytes) -> bytes:
        return await self._gcm("decrypt", field, nonce, ct, aad)

    async def _gcm(self, op: str, field: str, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        import js
        from pyodide.ffi import JsException, to_js

        from workerbridge._jsconv import bytes_to_js

        key = await self._crypto_key()
        params = to_js({"name": "AES-GCM", "iv": bytes_to_js(nonce),
                        "additionalData": bytes_to_js(aad)},
                       dict_converter=js.Object.fromEntries, create_pyproxies=False)
        try:
            out = await getattr(_subtle(), op)(params, key, bytes_to_js(data))
        except JsException as exc:
            if op == "decrypt" and exc.name == "OperationError":
                raise IntegrityError(f"field {field!r} failed to open: wrong key, or the "
                                     "value was modified or moved from another record") \
                    from None
            raise InvalidInputError(f"the browser refused the {op} ({exc.name})") from None
        return bytes(out.to_bytes())

    async def _mac(self) -> bytes:
        if self._mac_key is None:
            self._mac_key = await derive_mac_key(self._encrypt)
        return self._mac_key

    # --- hooks ---------------------------------------------------------------------------------

    async def encode(self, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
        entry = self.collections.get(collection)
        if entry is None or entry.protected.isdisjoint(fields):
            return fields
        if entry.key in fields:  # a record to create, or one change of bulk_update
            return await seal_record(fields, entry.protected, self._encrypt,
                                     collection=collection, id_field=entry.key,
                                     keep_sealed=False)
        await self._mac()  # merge() binds the patch to each record, synchronously
        return await seal_patch(fields, entry.protected, self._encrypt, collection=collection)

    def merge(self, collection: str, stored: dict[str, Any],
              patch: dict[str, Any]) -> dict[str, Any]:
        record = {**stored, **patch}
        entry = self.collections.get(collection)
        if entry is None or not any(_pending(v) for v in patch.values()):
            return record
        if self._mac_key is None:  # encode() derived it; a patch without it is not ours
            raise InvalidInputError("an encrypted patch reached the transaction unprepared")
        return bind_record(record, self._mac_key, collection=collection, id_field=entry.key)

    async def decode(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        entry = self.collections.get(collection)
        if entry is None:
            return record
        sealed = [v for v in record.values() if is_sealed(v)]
        if not sealed and entry.protected.isdisjoint(record):
            return record
        if sealed and self.given_key is None:
            raise InvalidInputError(NO_KEY)
        mac_key = await self._mac() if any("mac" in v for v in sealed) else None
        return await open_record(record, entry.protected, self._decrypt,
                                 collection=collection, id_field=entry.key, mac_key=mac_key)


def _pending(value: Any) -> bool:
    return is_sealed(value) and "mac" in value and value["mac"] is None


register_hooks(lambda database: FieldHooks())
