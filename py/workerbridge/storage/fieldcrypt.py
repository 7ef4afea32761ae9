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
the host; in the browser each is one JS call running SubtleCrypto AES-GCM over a whole
batch, made before the IndexedDB transaction opens (nothing may be awaited inside one) and
after it completes. Every field of every record of a batch goes in one call: in Pyodide
each await of a JS promise is a trip through the browser's scheduler. A message is
``(nonce, data, aad)``:

    encrypt(messages) -> one ciphertext with tag per message
    decrypt(messages) -> one plaintext per message, None where it failed authentication

Nonces are 96 random bits per field write (never the reserved one); under one key, stay
below 2**32 field writes (NIST SP 800-38D's bound for random nonces).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from workerbridge.core.errors import (
    IntegrityError,
    InvalidFilterError,
    InvalidInputError,
    InvalidTypeError,
)

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
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
# json.dumps builds an encoder per call; these are built once (same output).
_json_value = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_str = json.encoder.encode_basestring  # what _json_value does for a str
_json_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"),
                                   ensure_ascii=False).encode

Message = tuple[bytes, bytes, bytes]  # nonce, plaintext or ciphertext with tag, aad
Encrypt = Callable[[list[Message]], Awaitable[Sequence[bytes]]]
Decrypt = Callable[[list[Message]], Awaitable[Sequence[bytes | None]]]
Protected = Iterable[str]
MacKey = Callable[[], Awaitable[bytes]]


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
    if type(value) in _JSON_SCALARS or not isinstance(value, Mapping):  # scalars: quickly
        return False
    keys = value.keys()
    if keys != _SEALED_KEYS and keys != _BOUND_KEYS:
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


def _plaintext(field: str, value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return b"B" + bytes(value)
    kind = type(value)
    if kind is str:
        text = _json_str(cast(str, value))
    elif kind is int:
        text = int.__repr__(cast(int, value))
    else:
        if kind not in _JSON_SCALARS:
            _check_json(field, value, 0)
        text = _json_value(value)
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


class _Place:
    """``associated_data`` of one record's fields, made without a json.dumps per field:
    canonical JSON orders the keys collection, field, id, v, so only the id varies."""

    __slots__ = ("collection", "id_json")

    def __init__(self, collection: str, record_id: object) -> None:
        try:
            text = _json_str(record_id) if type(record_id) is str else \
                _json_canonical(record_id)
            self.id_json = text.encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError):
            raise InvalidInputError("the record id must be a str or a number") from None
        self.collection = collection

    def aad(self, field: str) -> bytes:
        head, tail = _place_parts(self.collection, field)
        return head + self.id_json + tail


@functools.lru_cache(maxsize=1024)
def _place_parts(collection: str, field: str) -> tuple[bytes, bytes]:
    try:
        head = json.dumps({"collection": collection, "field": field}, separators=(",", ":"),
                          ensure_ascii=False)[:-1].encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("the record id must be a str or a number") from None
    return head + b',"id":', b',"v":%d}' % FORMAT


def _nonces(count: int) -> list[bytes]:
    """``count`` random nonces, never the reserved one (one draw for the lot: in Pyodide
    each draw is a call out to the browser)."""
    pool = secrets.token_bytes(NONCE_BYTES * count) if count > 1 else b""
    out = []
    for i in range(count):
        nonce = pool[i * NONCE_BYTES:(i + 1) * NONCE_BYTES]
        while len(nonce) != NONCE_BYTES or nonce == MAC_KEY_NONCE:
            nonce = secrets.token_bytes(NONCE_BYTES)
        out.append(nonce)
    return out


class Sealing:
    """Records and patches to seal, then sealed together: every protected field of the
    lot is one message of a single ``encrypt`` call. Values are checked as they are added,
    so a bad one is refused before anything is encrypted."""

    def __init__(self, protected: Classification | Protected, *, collection: str,
                 id_field: str = "id") -> None:
        self.names = _protected_set(protected)
        if id_field in self.names:
            raise InvalidInputError(f"the key field {id_field!r} cannot be encrypted")
        self.collection = collection
        self.id_field = id_field
        self.outputs: list[dict[str, Any]] = []
        # One per message: (output, field, plaintext, place, pending a mac).
        self._slots: list[tuple[dict[str, Any], str, bytes, _Place, bool]] = []

    def record(self, record: Mapping[str, Any], *, keep_sealed: bool = True) -> None:
        """A record with its id. Values already sealed are kept as they are (unless not
        ``keep_sealed``), so a partial update re-encrypts only what changed."""
        place = _Place(self.collection, _record_id(record, self.id_field))
        out = dict(record)
        todo = [f for f in self.names if f in out and not (keep_sealed and is_sealed(out[f]))]
        self._add(out, todo, place, False)

    def patch(self, patch: Mapping[str, Any]) -> None:
        """An update's fields, for records not known yet: sealed under a null id and
        marked for ``bind_record`` (``"mac": None``)."""
        if not isinstance(patch, Mapping):
            raise InvalidTypeError("a patch must be a dict")
        out = dict(patch)
        self._add(out, [f for f in self.names if f in out], _Place(self.collection, None), True)

    def _add(self, out: dict[str, Any], todo: list[str], place: _Place, pending: bool) -> None:
        slots = [(out, f, _plaintext(f, out[f]), place, pending) for f in todo]
        self.outputs.append(out)  # only once every value passed
        self._slots += slots

    async def run(self, encrypt: Encrypt) -> list[dict[str, Any]]:
        """The records and patches as added, sealed."""
        slots = self._slots
        if slots:
            nonces = _nonces(len(slots))
            messages = [(nonce, plaintext, place.aad(field)) for nonce, (_, field, plaintext,
                        place, _) in zip(nonces, slots, strict=True)]
            cts = await encrypt(messages)
            if len(cts) != len(slots):
                raise InvalidTypeError("encrypt must return one ciphertext per message")
            for nonce, ct, (out, field, _, _, pending) in zip(nonces, cts, slots, strict=True):
                if not isinstance(ct, bytes | bytearray | memoryview):
                    raise InvalidTypeError("encrypt must return bytes")
                envelope = {"$enc": FORMAT, "alg": ALG, "nonce": nonce, "ct": bytes(ct)}
                out[field] = {**envelope, "mac": None} if pending else envelope
        self._slots = []
        return self.outputs


async def seal_records(records: Iterable[Mapping[str, Any]],
                       protected: Classification | Protected, encrypt: Encrypt, *,
                       collection: str, id_field: str = "id",
                       keep_sealed: bool = True) -> list[dict[str, Any]]:
    """Copies of ``records`` with every protected field encrypted, in one ``encrypt``
    call (see ``Sealing.record``)."""
    sealing = Sealing(protected, collection=collection, id_field=id_field)
    for record in records:
        sealing.record(record, keep_sealed=keep_sealed)
    return await sealing.run(encrypt)


async def seal_record(record: Mapping[str, Any], protected: Classification | Protected,
                      encrypt: Encrypt, *, collection: str, id_field: str = "id",
                      keep_sealed: bool = True) -> dict[str, Any]:
    """A copy of ``record`` with every protected field encrypted. Values already sealed
    are kept as they are (unless not ``keep_sealed``), so a partial update re-encrypts
    only what changed."""
    return (await seal_records([record], protected, encrypt, collection=collection,
                               id_field=id_field, keep_sealed=keep_sealed))[0]


async def seal_patch(patch: Mapping[str, Any], protected: Classification | Protected,
                     encrypt: Encrypt, *, collection: str) -> dict[str, Any]:
    """A copy of an update's fields, for records not known yet, with every protected
    field encrypted under a null id and marked for ``bind_record`` (``"mac": None``)."""
    sealing = Sealing(protected, collection=collection)
    sealing.patch(patch)
    return (await sealing.run(encrypt))[0]


async def derive_mac_key(encrypt: Encrypt) -> bytes:
    """The key of ``bind_record``'s macs: AES-GCM keystream under the reserved nonce (so a
    pseudo-random function of the AES key, which may itself be unreadable)."""
    out = (await encrypt([(MAC_KEY_NONCE, bytes(MAC_BYTES), MAC_KEY_AAD)]))[0]
    return bytes(out[:MAC_BYTES])


def _mac(mac_key: bytes, place: bytes, nonce: bytes, ct: bytes) -> bytes:
    message = len(place).to_bytes(4, "big") + place + nonce + ct  # nonce: fixed length
    return hmac.new(mac_key, message, hashlib.sha256).digest()


def bind_record(record: Mapping[str, Any], mac_key: bytes, *, collection: str,
                id_field: str = "id") -> dict[str, Any]:
    """``record`` with each of ``seal_patch``'s envelopes bound to it by a mac
    (synchronous: this runs inside the transaction that writes the record)."""
    place = _Place(collection, _record_id(record, id_field))
    out = dict(record)
    for field, value in record.items():
        if is_sealed(value) and "mac" in value and value["mac"] is None:
            nonce, ct = bytes(value["nonce"]), bytes(value["ct"])
            out[field] = {**value, "mac": _mac(mac_key, place.aad(field), nonce, ct)}
    return out


class _Opening:
    """One record being opened: its copy, and the first error met (the record's own)."""

    __slots__ = ("error", "out")

    def __init__(self, out: dict[str, Any]) -> None:
        self.out = out
        self.error: IntegrityError | None = None


async def open_records(records: Iterable[Mapping[str, Any]],
                       protected: Classification | Protected, decrypt: Decrypt, *,
                       collection: str, id_field: str = "id",
                       mac_key: bytes | MacKey | None = None) -> list[dict[str, Any]]:
    """Copies of ``records`` with every sealed field decrypted (protected or not, so a
    field reclassified as PUBLIC still reads), in one ``decrypt`` call. A protected field
    stored in the clear raises IntegrityError: someone wrote around the encryption.
    ``mac_key`` opens the fields an update by filter wrote (or an async callable giving
    it, called only if such a field is found). When records fail to open,
    the first one's error is raised (a caller may retry the others without it)."""
    names = _protected_set(protected)
    openings: list[_Opening] = []
    # One per message: (opening, field).
    slots: list[tuple[_Opening, str]] = []
    messages: list[Message] = []
    for record in records:
        place = _Place(collection, _record_id(record, id_field))
        opening = _Opening(dict(record))
        openings.append(opening)
        out = opening.out
        try:
            found = [(f, v) for f, v in out.items() if is_sealed(v)]
            if len(found) < len(names):
                sealed = {f for f, _ in found}
                for field in names:
                    if field in out and field not in sealed:
                        raise IntegrityError(f"field {field!r} should be encrypted but is "
                                             "stored in the clear")
            if mac_key is not None and not isinstance(mac_key, bytes) \
                    and any("mac" in v for _, v in found):
                mac_key = await mac_key()
            bound = mac_key if isinstance(mac_key, bytes) else None
            todo = [(f, _message(f, v, place, collection, bound)) for f, v in found]
        except IntegrityError as exc:
            opening.error = exc
            continue
        for field, message in todo:
            slots.append((opening, field))
            messages.append(message)
    plaintexts = await decrypt(messages) if messages else []
    if len(plaintexts) != len(messages):
        raise InvalidTypeError("decrypt must return one plaintext or None per message")
    for (opening, field), plaintext in zip(slots, plaintexts, strict=True):
        if opening.error is not None:
            continue
        if plaintext is None:
            opening.error = IntegrityError(
                f"field {field!r} failed to open: wrong key, or the value was modified or "
                "moved from another record")
            continue
        try:
            opening.out[field] = _value(field, plaintext)
        except IntegrityError as exc:
            opening.error = exc
    for opening in openings:
        if opening.error is not None:
            raise opening.error
    return [opening.out for opening in openings]


def _message(field: str, envelope: Mapping[str, Any], place: _Place, collection: str,
             mac_key: bytes | None) -> Message:
    """What opens one envelope, its mac checked first (raises IntegrityError)."""
    nonce, ct = bytes(envelope["nonce"]), bytes(envelope["ct"])
    if envelope["alg"] != ALG or len(nonce) != NONCE_BYTES or len(ct) < TAG_BYTES:
        raise IntegrityError(f"field {field!r} is not a valid {ALG} envelope")
    if "mac" not in envelope:
        return nonce, ct, place.aad(field)
    mac = envelope["mac"]
    if mac is None or mac_key is None:
        raise IntegrityError(f"field {field!r} is not bound to its record")
    expected = _mac(mac_key, place.aad(field), nonce, ct)
    if not hmac.compare_digest(expected, bytes(mac)):
        raise IntegrityError(f"field {field!r} does not belong to this record, or "
                             "the key is wrong")
    head, tail = _place_parts(collection, field)
    return nonce, ct, head + b"null" + tail  # sealed before the record was known


async def open_record(record: Mapping[str, Any], protected: Classification | Protected,
                      decrypt: Decrypt, *, collection: str, id_field: str = "id",
                      mac_key: bytes | None = None) -> dict[str, Any]:
    """``open_records`` of one record."""
    return (await open_records([record], protected, decrypt, collection=collection,
                               id_field=id_field, mac_key=mac_key))[0]


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
