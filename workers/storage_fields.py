"""Field encryption for the ``storage`` channel: classified fields sealed with AES-GCM at rest.

The page's "fields" setting (``storage.classify_data``, ``storage.set_encryption_key``)::

    {"collections": {name: {"key": key field, "levels": {field: level}}},
     "key": 32 bytes | an AES-GCM CryptoKey | None}

PII and SENSITIVE fields are sealed by ``storage.fieldcrypt`` with SubtleCrypto: in
``encode_all``, before the write's transaction opens, and opened in ``decode_all``, after
the read's transaction completed — nothing is awaited inside one. All the fields of a
batch (a group of creates or gets, a bulk call, a read) go through one JS call. An
update by filter learns its records' ids only inside the transaction, so its ciphertexts
are bound to each record there, synchronously, by a mac (``merge``). Filters on a
protected field are refused (``check_filter``): its stored form is noise under a random
nonce.

Its page half: ``workerbridge.storage.storage_fields``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, cast

from workerbridge.core.errors import InvalidInputError
from workerbridge.storage.fieldcrypt import (
    TAG_BYTES,
    Classification,
    Message,
    Sealing,
    bind_record,
    check_filter,
    derive_mac_key,
    is_sealed,
    open_records,
)
from workerbridge.storage.query import Node, unparse
from workerbridge.storage.txn import Hooks

from .storage import register_hooks

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
    from workerbridge.core.jsconv import bytes_to_js
    from workerbridge.core.platform import type_tag

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


# Runs a batch's AES-GCM messages together and gathers the outputs in one buffer; in a
# worker SubtleCrypto settles them on this thread, so Python awaits once per batch. The
# inputs are views into three buffers (nonces are 12 bytes each, the others sized by the
# Uint32Arrays). Failed authentication is a result (the failing indexes), not an error.
_BATCH_JS = """
return async (op, key, nonces, data, sizes, aads, aadSizes) => {
  const jobs = new Array(sizes.length);
  let d = 0, a = 0;
  for (let i = 0; i < sizes.length; i++) {
    const params = { name: "AES-GCM", iv: nonces.subarray(i * 12, i * 12 + 12),
                     additionalData: aads.subarray(a, a + aadSizes[i]) };
    jobs[i] = crypto.subtle[op](params, key, data.subarray(d, d + sizes[i])).then(
      (out) => new Uint8Array(out),
      (err) => {
        if (op === "decrypt" && err.name === "OperationError") return null;
        throw new Error(err.name || "Error");
      });
    d += sizes[i];
    a += aadSizes[i];
  }
  const outs = await Promise.all(jobs);
  let total = 0;
  for (const o of outs) if (o) total += o.length;
  const all = new Uint8Array(total);
  const failed = [];
  let w = 0;
  outs.forEach((o, i) => {
    if (o) { all.set(o, w); w += o.length; } else failed.push(i);
  });
  return [all.buffer, failed];
};
"""

_batch: Any = None


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

    async def _encrypt(self, messages: list[Message]) -> list[bytes]:
        # Only a decrypt fails by authentication: an encrypt has no None among its outputs.
        return cast(list[bytes], await self._gcm("encrypt", messages))

    async def _decrypt(self, messages: list[Message]) -> list[bytes | None]:
        return await self._gcm("decrypt", messages)

    async def _gcm(self, op: str, messages: list[Message]) -> list[bytes | None]:
        """One JS call for the whole batch: the inputs packed in three buffers, the
        outputs back in one (None where a decrypt failed authentication)."""
        import js
        from pyodide.ffi import JsException

        from workerbridge.core.jsconv import bytes_to_js

        global _batch
        key = await self._crypto_key()
        if _batch is None:
            _batch = js.Function.new(_BATCH_JS)()
        sizes = array("I", [len(m[1]) for m in messages])
        aad_sizes = array("I", [len(m[2]) for m in messages])
        try:
            result = await _batch(
                op, key, js.Uint8Array.new(bytes_to_js(b"".join(m[0] for m in messages))),
                js.Uint8Array.new(bytes_to_js(b"".join(m[1] for m in messages))),
                js.Uint32Array.new(bytes_to_js(memoryview(sizes))),
                js.Uint8Array.new(bytes_to_js(b"".join(m[2] for m in messages))),
                js.Uint32Array.new(bytes_to_js(memoryview(aad_sizes))))
        except JsException as exc:
            raise InvalidInputError(f"the browser refused the {op} ({exc.message})") from None
        data = result[0].to_bytes()
        failed = set(result[1].to_py()) if result[1].length else set()
        change = TAG_BYTES if op == "encrypt" else -TAG_BYTES
        out: list[bytes | None] = []
        at = 0
        for i, size in enumerate(sizes):
            if i in failed:
                out.append(None)
                continue
            out.append(data[at:at + size + change])
            at += size + change
        return out

    async def _mac(self) -> bytes:
        if self._mac_key is None:
            self._mac_key = await derive_mac_key(self._encrypt)
        return self._mac_key

    # --- hooks ---------------------------------------------------------------------------------

    async def encode(self, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
        return (await self.encode_all(collection, [fields]))[0]

    async def encode_all(self, collection: str,
                         records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entry = self.collections.get(collection)
        if entry is None or all(entry.protected.isdisjoint(r) for r in records):
            return records
        sealing = Sealing(entry.protected, collection=collection, id_field=entry.key)
        patches = False
        for fields in records:
            if entry.key in fields:  # a record to create, or one change of bulk_update
                sealing.record(fields, keep_sealed=False)
            else:
                sealing.patch(fields)
                patches = patches or not entry.protected.isdisjoint(fields)
        if patches:
            await self._mac()  # merge() binds the patch to each record, synchronously
        return await sealing.run(self._encrypt)

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
        return (await self.decode_all(collection, [record]))[0]

    async def decode_all(self, collection: str,
                         records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entry = self.collections.get(collection)
        if entry is None:
            return records
        # Without a key, the first sealed field raises NO_KEY (from _crypto_key).
        return await open_records(records, entry.protected, self._decrypt,
                                  collection=collection, id_field=entry.key,
                                  mac_key=self._mac)


def _pending(value: Any) -> bool:
    return is_sealed(value) and "mac" in value and value["mac"] is None


register_hooks(lambda database: FieldHooks())
