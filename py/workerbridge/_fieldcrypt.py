"""Field encryption by classification: which fields are sealed, and how they are stored.

A collection's fields are classified PII, SENSITIVE, INTERNAL or PUBLIC; PII and SENSITIVE
fields are *protected*: encrypted at rest, one AES-GCM message per field, with the record
id and every other field left in the clear so IndexedDB can still key and index them.

Stored form of a protected field (format 1)::

    {"$enc": 1, "alg": "A256GCM", "nonce": <12 bytes>, "ct": <ciphertext || 16-byte tag>}
    {"$enc": 1, "alg": "A256GCM", "nonce": ..., "ct": ..., "mac": <32 bytes>}

The plaintext is one type byte and the value: ``b"J"`` + the value as UTF-8 JSON (so
str, int, float, bool, None, lists and dicts come back as they went in; tuples come back
as lists), or ``b"B"`` + raw bytes for a bytes value. The associated data binds each
ciphertext to its place — collection, record id and field, as canonical JSON — so a
ciphertext copied into another record or field fails to open.

An update by filter is encrypted before its transaction finds the records it changes, so
it cannot know their ids: its ciphertexts are bound to collection and field with the id
left null (`seal_patch`), and inside the transaction, where only synchronous work is
allowed, each copy written gets a "mac": HMAC-SHA256 over its place (with the record's
id), nonce and ciphertext (`bind_record`). Opening checks the mac first, so such a
ciphertext moved elsewhere fails too. The mac key is derived from the AES key by
encrypting zeros under the reserved all-zero nonce (`MAC_KEY_NONCE`), which no field is
ever encrypted under.

Filtering, sorting or indexing on a protected field is refused (`InvalidFilterError`):
ciphertexts under random nonces compare as noise, and a deterministic or blind-index
scheme would leak equality. Only ``{"field": {"$exists": ...}}`` is allowed: presence is
visible in the clear anyway.

The cipher is injected, as two async callables, so this module stays pure and testable on
the host; in the browser they are SubtleCrypto AES-GCM calls made before the IndexedDB
transaction opens (nothing may be awaited inside one) and after it completes:

    encrypt(field, nonce, plaintext, aad) -> ciphertext with tag
    decrypt(field, nonce, ciphertext, aad) -> plaintext; raises IntegrityError on failure

Nonces are 96 random bits per field write (never the reserved one); under one key, stay
below 2**32 field writes (NIST SP 800-38D's bound for random nonces).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ._errors import IntegrityError, InvalidFilterError, InvalidInputError, InvalidTypeError

LEVELS = ("PII", "SENSITIVE", "INTERNAL", "PUBLIC")
PROTECTED_LEVELS = frozenset({"PII", "SENSITIVE"})
FORMAT = 1
ALG = "A256GCM"
NONCE_BYTES = 12
TAG_BYTES = 16
MAC_BYTES = 32
MAC_KEY_NONCE = bytes(NONCE_BYTES)  # reserved: derives the mac key, never seals a field
MAC_KEY_AAD = b"workerbridge field encryption: mac key, format 1"
_SEALED_KEYS = frozenset({"$enc", "alg", "nonce", "ct"})
_BOUND_KEYS = _SEALED_KEYS | {"mac"}
_MAX_FILTER_DEPTH = 64

Encrypt = Callable[[str, bytes, bytes, bytes], Awaitable[bytes]]
Decrypt = Callable[[str, bytes, bytes, bytes], Awaitable[bytes]]
Protected = Iterable[str]


class Classification:
    """A collection's ``{field: level}``; levels are case-insensitive on input.

    Classified names are top-level fields. The record's key field (``id_field``) cannot be
    protected: IndexedDB needs it in the clear.
    """

    def __init__(self, levels: Mapping[str, str], *, id_field: str = "id") -> None:
        if not isinstance(levels, Mapping):
            raise InvalidTypeError("a classification is a mapping of field to level")
        normal: dict[str, str] = {}
        for field, level in levels.items():
            if not isinstance(field, str) or not isinstance(level, str):
                raise InvalidTypeError("classification fields and levels must be str")
            if not field or "." in field or field.startswith("$"):
                raise InvalidInputError(f"{field!r} is not a top-level field name")
            upper = level.upper()
            if upper not in LEVELS:
                raise InvalidInputError(f"unknown classification {level!r}; "
                                        f"use one of {', '.join(LEVELS)}")
            if field == id_field and upper in PROTECTED_LEVELS:
                raise InvalidInputError(f"the key field {field!r} cannot be encrypted")
            normal[field] = upper
        self._levels = normal

    @property
    def levels(self) -> dict[str, str]:
        return dict(self._levels)

    def level(self, field: str) -> str | None:
        """The field's level, or None when it is not classified (stored in the clear)."""
        return self._levels.get(field)

    def protected_fields(self) -> frozenset[str]:
        """The PII and SENSITIVE fields: the ones encrypted at rest."""
        return frozenset(f for f, lvl in self._levels.items() if lvl in PROTECTED_LEVELS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Classification) and self._levels == other._levels

    def __hash__(self) -> int:
        return hash(frozenset(self._levels.items()))

    def __repr__(self) -> str:
        return f"Classification({self._levels!r})"


def _protected_set(protected: Classification | Protected) -> frozenset[str]:
    if isinstance(protected, Classification):
        return protected.protected_fields()
    if isinstance(protected, str) or not isinstance(protected, Iterable):
        raise InvalidTypeError("protected must be a Classification or a collection of names")
    return frozenset(protected)


# --- filters ---------------------------------------------------------------------------------


def check_filter(where: Mapping[str, Any] | None,
                 protected: Classification | Protected) -> None:
    """Raise InvalidFilterError if the filter (through any $and/$or) reads a protected
    field other than by ``$exists``. Operators stay the query engine's to validate."""
    if where is None:
        return
    _walk(where, _protected_set(protected), 0)


def _walk(node: object, protected: frozenset[str], depth: int) -> None:
    if depth > _MAX_FILTER_DEPTH:
        raise InvalidFilterError(f"a filter may nest at most {_MAX_FILTER_DEPTH} levels")
    if not isinstance(node, Mapping):
        raise InvalidFilterError("a filter must be a dict")
    for key, cond in node.items():
        if not isinstance(key, str):
            raise InvalidFilterError("filter keys must be str")
        if key in ("$and", "$or"):
            if not isinstance(cond, list | tuple):
                raise InvalidFilterError(f"{key} takes a list of filters")
            for sub in cond:
                _walk(sub, protected, depth + 1)
        elif key.startswith("$"):
            # Not ours to accept or refuse; look inside so no field hides behind it.
            for sub in cond if isinstance(cond, list | tuple) else [cond]:
                if isinstance(sub, Mapping):
                    _walk(sub, protected, depth + 1)
        elif key.split(".", 1)[0] in protected and not _only_exists(cond):
            raise InvalidFilterError(
                f"cannot filter on {key!r}: the field is encrypted at rest "
                "(only $exists is allowed on it)")


def _only_exists(cond: object) -> bool:
    return isinstance(cond, Mapping) and len(cond) > 0 and set(cond) == {"$exists"}


def check_fields(fields: Iterable[str], protected: Classification | Protected, *,
                 purpose: str = "sort") -> None:
    """Raise InvalidFilterError if any field (a sort key, an index key path) is protected."""
    names = _protected_set(protected)
    for field in fields:
        if not isinstance(field, str):
            raise InvalidFilterError(f"{purpose} fields must be str")
        if field.split(".", 1)[0] in names:
            raise InvalidFilterError(f"cannot {purpose} by {field!r}: it is encrypted at rest")


# --- sealing ---------------------------------------------------------------------------------


def is_sealed(value: object) -> bool:
    """Whether a stored value has the shape of an encrypted field (format 1)."""
    if not isinstance(value, Mapping) or set(value) not in (_SEALED_KEYS, _BOUND_KEYS):
        return False
    version = value["$enc"]
    mac = value.get("mac")
    return (type(version) is int and version == FORMAT and isinstance(value["alg"], str)
            and isinstance(value["nonce"], bytes | bytearray | memoryview)
            and isinstance(value["ct"], bytes | bytearray | memoryview)
            and (mac is None or isinstance(mac, bytes | bytearray | memoryview)))


def associated_data(collection: str, record_id: object, field: str) -> bytes:
    """What each ciphertext is bound to: its collection, record id and field (a null id
    for an update by filter's, which a mac then binds to the record)."""
    body = {"v": FORMAT, "collection": collection, "id": record_id, "field": field}
    try:
        return json.dumps(body, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        raise InvalidInputError("the record id must be a str or a number") from None


def check_value(field: str, value: object) -> None:
    """Raise InvalidTypeError if ``value`` cannot be encrypted so that it round-trips."""
    if not isinstance(value, bytes | bytearray | memoryview):
        _check_json(field, value, 0)


def _mac(mac_key: bytes, collection: str, record_id: object, field: str,
         nonce: bytes, ct: bytes) -> bytes:
    place = associated_data(collection, record_id, field)
    message = len(place).to_bytes(4, "big") + place + nonce + ct  # nonce: fixed length
    return hmac.new(mac_key, message, hashlib.sha256).digest()


def _plaintext(field: str, value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return b"B" + bytes(value)
    _check_json(field, value, 0)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return b"J" + text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"field {field!r} holds text that is not valid Unicode") from None


def _check_json(field: str, value: object, depth: int) -> None:
    # json.dumps would quietly turn {1: x} into {"1": x}; refuse what would not round-trip.
    if depth > _MAX_FILTER_DEPTH:
        raise InvalidInputError(f"field {field!r} nests too deeply")
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(field, item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidTypeError(f"field {field!r} holds a dict with a non-str key")
            _check_json(field, item, depth + 1)
    else:
        raise InvalidTypeError(f"field {field!r} holds a {type(value).__name__}, "
                               "which cannot be encrypted (use JSON types or bytes)")


def _record_id(record: Mapping[str, Any], id_field: str) -> object:
    if not isinstance(record, Mapping):
        raise InvalidTypeError("a record must be a dict")
    if id_field not in record:
        raise InvalidInputError(f"a record needs its {id_field!r} before sealing or opening")
    return record[id_field]


def _nonce() -> bytes:
    while True:
        nonce = secrets.token_bytes(NONCE_BYTES)
        if nonce != MAC_KEY_NONCE:
            return nonce


async def _seal(out: dict[str, Any], todo: list[str], encrypt: Encrypt, collection: str,
                record_id: object, pending: bool) -> dict[str, Any]:
    plaintexts = {f: _plaintext(f, out[f]) for f in todo}  # all checked before any await

    async def seal(field: str) -> None:
        nonce = _nonce()
        aad = associated_data(collection, record_id, field)
        ct = await encrypt(field, nonce, plaintexts[field], aad)
        if not isinstance(ct, bytes | bytearray | memoryview):
            raise InvalidTypeError("encrypt must return bytes")
        envelope = {"$enc": FORMAT, "alg": ALG, "nonce": nonce, "ct": bytes(ct)}
        out[field] = {**envelope, "mac": None} if pending else envelope

    await asyncio.gather(*(seal(f) for f in todo))
    return out


async def seal_record(record: Mapping[str, Any], protected: Classification | Protected,
                      encrypt: Encrypt, *, collection: str, id_field: str = "id",
                      keep_sealed: bool = True) -> dict[str, Any]:
    """A copy of ``record`` with every protected field encrypted. Values already sealed
    are kept as they are (unless not ``keep_sealed``), so a partial update re-encrypts
    only what changed."""
    names = _protected_set(protected)
    if id_field in names:
        raise InvalidInputError(f"the key field {id_field!r} cannot be encrypted")
    record_id = _record_id(record, id_field)
    out = dict(record)
    todo = [f for f in names if f in out and not (keep_sealed and is_sealed(out[f]))]
    return await _seal(out, todo, encrypt, collection, record_id, False)


async def seal_patch(patch: Mapping[str, Any], protected: Classification | Protected,
                     encrypt: Encrypt, *, collection: str) -> dict[str, Any]:
    """A copy of an update's fields, for records not known yet, with every protected
    field encrypted under a null id and marked for ``bind_record`` (``"mac": None``)."""
    if not isinstance(patch, Mapping):
        raise InvalidTypeError("a patch must be a dict")
    out = dict(patch)
    todo = [f for f in _protected_set(protected) if f in out]
    return await _seal(out, todo, encrypt, collection, None, True)


async def derive_mac_key(encrypt: Encrypt) -> bytes:
    """The key of ``bind_record``'s macs: AES-GCM keystream under the reserved nonce (so a
    pseudo-random function of the AES key, which may itself be unreadable)."""
    out = await encrypt("", MAC_KEY_NONCE, bytes(MAC_BYTES), MAC_KEY_AAD)
    return bytes(out[:MAC_BYTES])


def bind_record(record: Mapping[str, Any], mac_key: bytes, *, collection: str,
                id_field: str = "id") -> dict[str, Any]:
    """``record`` with each of ``seal_patch``'s envelopes bound to it by a mac
    (synchronous: this runs inside the transaction that writes the record)."""
    record_id = _record_id(record, id_field)
    out = dict(record)
    for field, value in record.items():
        if is_sealed(value) and "mac" in value and value["mac"] is None:
            nonce, ct = bytes(value["nonce"]), bytes(value["ct"])
            out[field] = {**value, "mac": _mac(mac_key, collection, record_id, field,
                                               nonce, ct)}
    return out


async def open_record(record: Mapping[str, Any], protected: Classification | Protected,
                      decrypt: Decrypt, *, collection: str, id_field: str = "id",
                      mac_key: bytes | None = None) -> dict[str, Any]:
    """A copy of ``record`` with every sealed field decrypted (protected or not, so a
    field reclassified as PUBLIC still reads). A protected field stored in the clear
    raises IntegrityError: someone wrote around the encryption. ``mac_key`` opens the
    fields an update by filter wrote."""
    names = _protected_set(protected)
    record_id = _record_id(record, id_field)
    out = dict(record)
    for field in names:
        if field in out and not is_sealed(out[field]):
            raise IntegrityError(f"field {field!r} should be encrypted but is stored in the "
                                 "clear")
    sealed = [f for f, value in out.items() if is_sealed(value)]

    async def unseal(field: str) -> None:
        envelope = out[field]
        nonce, ct = bytes(envelope["nonce"]), bytes(envelope["ct"])
        if envelope["alg"] != ALG or len(nonce) != NONCE_BYTES or len(ct) < TAG_BYTES:
            raise IntegrityError(f"field {field!r} is not a valid {ALG} envelope")
        bound_id = record_id
        if "mac" in envelope:
            mac = envelope["mac"]
            if mac is None or mac_key is None:
                raise IntegrityError(f"field {field!r} is not bound to its record")
            expected = _mac(mac_key, collection, record_id, field, nonce, ct)
            if not hmac.compare_digest(expected, bytes(mac)):
                raise IntegrityError(f"field {field!r} does not belong to this record, or "
                                     "the key is wrong")
            bound_id = None
        aad = associated_data(collection, bound_id, field)
        out[field] = _value(field, await decrypt(field, nonce, ct, aad))

    await asyncio.gather(*(unseal(f) for f in sealed))
    return out


def _value(field: str, plaintext: object) -> object:
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        raise InvalidTypeError("decrypt must return bytes")
    data = bytes(plaintext)
    if data[:1] == b"B":
        return data[1:]
    if data[:1] == b"J":
        try:
            return json.loads(data[1:].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise IntegrityError(f"field {field!r} decrypted to something that is not format 1")
