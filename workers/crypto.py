"""The ``crypto`` channel: hashing, AES-256-GCM, key derivation and HMAC inside a worker.

The browser's SubtleCrypto does the work wherever it can. It runs on the calling thread
here and cannot be interrupted, so large one-shot calls go to a terminable helper worker
(``runtime.engines``) and AES-GCM over large data is cut into records (``aead``), each a short
call with a cancellation check between them.

Its page half: ``workerbridge.channels.crypto``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from workerbridge.channels.aead import (
    HEADER_SIZE,
    TAG_SIZE,
    chunk_count,
    header,
    plaintext_size,
    read_header,
)
from workerbridge.channels.algorithms import HASHES, normalize_hash
from workerbridge.core.data import chunks, js_read, native_input, size_of
from workerbridge.core.errors import IntegrityError, InvalidInputError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.runtime.dispatch import Context, handler

# Data between these sizes is hashed by the browser's SubtleCrypto in one call, in a
# helper worker so a cancel can stop it (a Blob/File is read whole there). SubtleCrypto
# holds its whole input in memory and reports no progress: larger inputs, and calls that
# ask for progress, stream through hashlib in bounded memory; smaller ones are hashed at
# once, sparing the helper's round trip.
ONE_SHOT_MIN = 4 * 1024 * 1024
ONE_SHOT_MAX = 256 * 1024 * 1024


def _subtle() -> Any:
    import js

    return js.crypto.subtle


def _obj(**fields: Any) -> Any:
    """A plain JS object (SubtleCrypto's algorithm parameters)."""
    import js
    from pyodide.ffi import to_js

    return to_js(fields, dict_converter=js.Object.fromEntries, create_pyproxies=False)


def _buf(data: bytes) -> Any:
    if not IN_PYODIDE:  # a fleet worker (CPython): bytes go as they are
        return bytes(data)
    from workerbridge.core.jsconv import bytes_to_js

    return bytes_to_js(data)


def _py_bytes(value: Any) -> bytes:
    """A small binary payload field (nonce, salt …) as Python bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return bytes(value.to_bytes())


async def digest(ctx: Context, data: Any, algorithm: str) -> str:
    """Hex digest of ``data`` (as received by a worker) with a normalized ``algorithm``,
    reporting progress in bytes to ``ctx``."""
    total = size_of(data)
    ctx.set_total(total)
    whole = native_input(data)
    if whole is not None and ONE_SHOT_MIN <= total <= ONE_SHOT_MAX \
            and not ctx.wants_progress:
        from workerbridge.runtime.engines import movable, subtle_call

        whole = movable(whole)
        out = await subtle_call("digest", [algorithm, whole], move=whole)
        ctx.progress(total)
        return str(out.to_bytes().hex())
    h = hashlib.new(HASHES[algorithm])
    done = 0
    async for chunk in chunks(data):
        h.update(chunk)
        done += len(chunk)
        ctx.progress(done)
        await ctx.checkpoint()
    return h.hexdigest()


@handler("crypto", "hash_file")
async def hash_file(ctx: Context, payload: dict[str, Any]) -> str:
    """Hex digest of ``payload['data']``."""
    algorithm = normalize_hash(payload.get("algorithm", "SHA-256"))
    return await digest(ctx, payload.get("data"), algorithm)


# --- AES-256-GCM -----------------------------------------------------------------------------

async def _aes_key(key: Any) -> Any:
    """A CryptoKey for AES-256-GCM from raw key bytes or a CryptoKey (checked)."""
    from workerbridge.core.platform import type_tag

    if type_tag(key) == "[object CryptoKey]":
        algorithm = key.algorithm
        if str(algorithm.name) != "AES-GCM" or int(algorithm.length) != 256:
            raise InvalidInputError("key must be an AES-GCM CryptoKey of 256 bits")
        return key
    return await _subtle().importKey("raw", key, "AES-GCM", False, ["encrypt", "decrypt"])


async def _gcm(op: str, key: Any, nonce: bytes, data: Any) -> Any:
    """One AES-GCM message (data up to one chunk; larger data goes to ``gcm_records``)."""
    from pyodide.ffi import JsException

    params = _obj(name="AES-GCM", iv=_buf(nonce))
    try:
        return await getattr(_subtle(), op)(params, key, data)
    except JsException as exc:
        if op == "decrypt" and exc.name == "OperationError":
            raise IntegrityError("decryption failed: wrong key or nonce, or the data was "
                                 "modified") from None
        raise InvalidInputError(f"the browser refused the {op} ({exc.name})") from None


@handler("crypto", "encrypt_file")
async def encrypt_file(ctx: Context, payload: dict[str, Any]) -> Any:
    """AES-256-GCM: one sealed message up to ``chunk_size`` bytes, the chunked format
    (``workerbridge.channels.aead``) above it. Progress in plaintext bytes."""
    if not IN_PYODIDE:
        return await _host_gcm(ctx, "encrypt", payload)
    key = await _aes_key(payload["key"])
    nonce = _py_bytes(payload["nonce"])
    data, chunk_size = payload["data"], int(payload["chunk_size"])
    total = size_of(data)
    ctx.set_total(total)
    if total <= chunk_size:
        out = await _gcm("encrypt", key, nonce, await js_read(data))
        ctx.progress(total)
        return ctx.hand_over(out)
    from workerbridge.channels.gcm_records import gcm_records

    records = chunk_count(total, chunk_size)
    out = await gcm_records(ctx, "encrypt", key, nonce, header(chunk_size), data, chunk_size,
                            total, HEADER_SIZE + total + TAG_SIZE * records)
    return ctx.hand_over(out)


@handler("crypto", "decrypt_file")
async def decrypt_file(ctx: Context, payload: dict[str, Any]) -> Any:
    """The inverse of ``encrypt_file``; IntegrityError names the first record that fails."""
    if not IN_PYODIDE:
        return await _host_gcm(ctx, "decrypt", payload)
    key = await _aes_key(payload["key"])
    nonce = _py_bytes(payload["nonce"])
    data = payload["data"]
    total = size_of(data)
    ctx.set_total(total)
    if total < TAG_SIZE:
        raise IntegrityError("the encrypted data is too short to hold an authentication tag")
    chunk_size = read_header(bytes((await js_read(data, 0, HEADER_SIZE)).to_bytes()))
    if chunk_size is None:
        out = await _gcm("decrypt", key, nonce, await js_read(data))
        ctx.progress(total)
        return ctx.hand_over(out)
    from workerbridge.channels.gcm_records import gcm_records

    out = await gcm_records(ctx, "decrypt", key, nonce, header(chunk_size), data, chunk_size,
                            total, plaintext_size(total, chunk_size))
    return ctx.hand_over(out)


async def _host_gcm(ctx: Context, op: str, payload: dict[str, Any]) -> bytes:
    """AES-256-GCM on a fleet worker (CPython), through the ``cryptography`` package: the
    same formats, byte for byte, as the browser's SubtleCrypto path (``channels.aead``)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = _py_bytes(payload["key"])
    if len(key) != 32:
        raise InvalidInputError("key must be 32 bytes (AES-256) on a fleet worker")
    aes = AESGCM(key)
    nonce = _py_bytes(payload["nonce"])
    data = _py_bytes(payload["data"])
    total = len(data)
    ctx.set_total(total)
    base = int.from_bytes(nonce, "big")

    def record(i: int, head: bytes, count: int, piece: bytes) -> bytes:
        iv = (base ^ i).to_bytes(len(nonce), "big")
        aad = head + i.to_bytes(8, "big") + bytes([i == count - 1])
        if op == "encrypt":
            return aes.encrypt(iv, piece, aad)
        try:
            return aes.decrypt(iv, piece, aad)
        except InvalidTag:
            raise IntegrityError(f"record {i} of {count} failed authentication: the data "
                                 "was modified, truncated or reordered, or the key or nonce "
                                 "is wrong") from None

    if op == "encrypt":
        chunk_size = int(payload["chunk_size"])
        if total <= chunk_size:
            ctx.progress(total)
            return aes.encrypt(nonce, data, None)
        head, count = header(chunk_size), chunk_count(total, chunk_size)
        parts = [head]
        for i in range(count):
            parts.append(record(i, head, count, data[i * chunk_size:(i + 1) * chunk_size]))
            ctx.progress(min(total, (i + 1) * chunk_size))
            await ctx.checkpoint()
        return b"".join(parts)
    if total < TAG_SIZE:
        raise IntegrityError("the encrypted data is too short to hold an authentication tag")
    chunk_size_or_none = read_header(data[:HEADER_SIZE])
    if chunk_size_or_none is None:
        try:
            plain = aes.decrypt(nonce, data, None)
        except InvalidTag:
            raise IntegrityError("decryption failed: wrong key or nonce, or the data was "
                                 "modified") from None
        ctx.progress(total)
        return plain
    from workerbridge.channels.aead import record_sizes

    head = header(chunk_size_or_none)
    sizes = record_sizes(total, chunk_size_or_none)
    parts, offset = [], HEADER_SIZE
    for i, size in enumerate(sizes):
        parts.append(record(i, head, len(sizes), data[offset:offset + size]))
        offset += size
        ctx.progress(offset)
        await ctx.checkpoint()
    return b"".join(parts)


# --- key derivation and HMAC ----------------------------------------------------------------

@handler("crypto", "derive_key")
async def derive_key(ctx: Context, payload: dict[str, Any]) -> Any:
    """PBKDF2: ``length`` bytes from a password and salt (in a helper worker: a cancel
    stops even 600,000 iterations)."""
    if not IN_PYODIDE:
        return hashlib.pbkdf2_hmac(HASHES[normalize_hash(payload["hash"])],
                                   _py_bytes(payload["password"]), _py_bytes(payload["salt"]),
                                   int(payload["iterations"]), int(payload["length"]))
    from workerbridge.runtime.engines import subtle_call

    base = await _subtle().importKey("raw", payload["password"], "PBKDF2", False,
                                     ["deriveBits"])
    params = _obj(name="PBKDF2", salt=payload["salt"], iterations=int(payload["iterations"]),
                  hash=normalize_hash(payload["hash"]))
    return await subtle_call("deriveBits", [params, base, int(payload["length"]) * 8])


@handler("crypto", "hkdf")
async def hkdf(ctx: Context, payload: dict[str, Any]) -> Any:
    """HKDF (RFC 5869): ``length`` bytes from input key material, salt and info."""
    if not IN_PYODIDE:
        return _host_hkdf(payload)
    base = await _subtle().importKey("raw", payload["key_material"], "HKDF", False,
                                     ["deriveBits"])
    params = _obj(name="HKDF", salt=payload["salt"], info=payload["info"],
                  hash=normalize_hash(payload["hash"]))
    return await _subtle().deriveBits(params, base, int(payload["length"]) * 8)


def _host_hkdf(payload: dict[str, Any]) -> bytes:
    """HKDF with hmac alone (extract, then expand), for a fleet worker."""
    name = HASHES[normalize_hash(payload["hash"])]
    length = int(payload["length"])
    salt = _py_bytes(payload["salt"]) or bytes(hashlib.new(name).digest_size)
    prk = hmac.new(salt, _py_bytes(payload["key_material"]), name).digest()
    info, block, out = _py_bytes(payload["info"]), b"", b""
    for i in range(1, -(-length // len(prk)) + 1):
        block = hmac.new(prk, block + info + bytes([i]), name).digest()
        out += block
    return out[:length]


async def _hmac_tag(ctx: Context, payload: dict[str, Any]) -> bytes:
    from workerbridge.core.platform import type_tag

    algorithm = normalize_hash(payload["hash"])
    key, data = payload["key"], payload["data"]
    total = size_of(data)
    ctx.set_total(total)
    whole = native_input(data)
    is_crypto_key = IN_PYODIDE and type_tag(key) == "[object CryptoKey]"
    if whole is not None and (is_crypto_key or (total <= ONE_SHOT_MAX
                                                and not ctx.wants_progress)):
        if total > ONE_SHOT_MAX:
            raise InvalidInputError("HMAC with a CryptoKey is limited to 256 MB of data; "
                                    "pass the key as bytes to stream larger data")
        if not is_crypto_key:
            params = _obj(name="HMAC", hash=algorithm)
            key = await _subtle().importKey("raw", key, params, False, ["sign"])
        elif str(key.algorithm.name) != "HMAC":
            raise InvalidInputError("key must be an HMAC CryptoKey or bytes")
        if total < ONE_SHOT_MIN:
            tag = await _subtle().sign("HMAC", key, whole)
        else:
            from workerbridge.runtime.engines import subtle_call

            tag = await subtle_call("sign", ["HMAC", key, whole])
        ctx.progress(total)
        return bytes(tag.to_bytes())
    mac = hmac.new(_py_bytes(key), digestmod=HASHES[algorithm])
    done = 0
    async for chunk in chunks(data):
        mac.update(chunk)
        done += len(chunk)
        ctx.progress(done)
        await ctx.checkpoint()
    return mac.digest()


@handler("crypto", "hmac_sign")
async def hmac_sign(ctx: Context, payload: dict[str, Any]) -> Any:
    """The HMAC tag of ``data``."""
    return _buf(await _hmac_tag(ctx, payload))


@handler("crypto", "hmac_verify")
async def hmac_verify(ctx: Context, payload: dict[str, Any]) -> bool:
    """Whether ``signature`` is the HMAC tag of ``data`` (compared in constant time)."""
    return hmac.compare_digest(await _hmac_tag(ctx, payload), _py_bytes(payload["signature"]))
