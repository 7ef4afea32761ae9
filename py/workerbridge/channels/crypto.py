"""The ``crypto`` channel's page half (its worker half: ``workers/crypto.py``): hashing,
AES-256-GCM, PBKDF2, HKDF and HMAC. Each method checks its arguments here, so bad input
fails at once with a typed error, then sends one request to the worker.

Its worker half: ``workers/crypto.py``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, NamedTuple

from workerbridge.channels.aead import (
    DEFAULT_CHUNK_SIZE,
    KEY_SIZE,
    check_chunk_size,
    check_nonce,
    chunk_count,
)
from workerbridge.channels.algorithms import normalize_hash
from workerbridge.channels.base import Namespace
from workerbridge.core.data import like_input, prepare
from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.core.platform import IN_PYODIDE, type_tag
from workerbridge.core.shared import SharedCancellation
from workerbridge.pool.connection import ProgressCallback


class CryptoNamespace(Namespace):
    channel = "crypto"

    async def hash_file(
        self,
        data: Any,
        algorithm: str = "SHA-256",
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> str:
        """Digest of ``data`` as lowercase hex; SHA-1, SHA-256, SHA-384 or SHA-512.

        ``data``: bytes, an ArrayBuffer (moved to the worker: yours is detached after the
        call), a typed array, or a Blob/File (read in chunks in the worker). Progress
        reports bytes hashed; cancelling the task or ``cancel`` stops the worker's work.
        """
        name = normalize_hash(algorithm)
        out = prepare(data)
        return str(await self._bridge.request(
            self.channel, "hash_file", {"data": out.value, "algorithm": name},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel))

    # --- AES-256-GCM ---------------------------------------------------------------------

    async def encrypt_file(
        self,
        data: Any,
        key: Any,
        nonce: bytes | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> Encrypted:
        """AES-256-GCM encryption of ``data`` with ``key`` (32 bytes or an AES-GCM
        CryptoKey); returns ``Encrypted(ciphertext, nonce)``.

        ``nonce``: 12 bytes, or None for a fresh random one (the safe choice). A key and
        nonce already used together in this bridge raise ``NonceReuseError``. Data up to
        ``chunk_size`` bytes is one AES-GCM message (ciphertext + 16-byte tag); larger
        data uses the chunked format described in docs/channels.md. The ciphertext is bytes
        when ``data`` is Python bytes, else a JS ArrayBuffer.
        """
        key_value, key_id = self._aes_key(key)
        nonce = os.urandom(12) if nonce is None else check_nonce(_small_bytes(nonce, "nonce"))
        chunk_size = check_chunk_size(chunk_size)
        out = prepare(data)
        records = chunk_count(out.size, chunk_size) if out.size > chunk_size else 1
        self._bridge.nonces.claim(key_id, nonce, records)
        result = await self._bridge.request(
            self.channel, "encrypt_file",
            {"data": out.value, "key": key_value, "nonce": _to_js(nonce),
             "chunk_size": chunk_size},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel)
        return Encrypted(like_input(result, data), nonce)

    async def decrypt_file(
        self,
        ciphertext: Any,
        key: Any,
        nonce: bytes,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> Any:
        """The plaintext of ``encrypt_file``'s ciphertext (bytes, or an ArrayBuffer when
        ``ciphertext`` is a JS object). Raises ``IntegrityError`` when the data was
        modified, truncated or reordered, or the key or nonce is wrong; no plaintext is
        returned then."""
        key_value, _ = self._aes_key(key)
        nonce = check_nonce(_small_bytes(nonce, "nonce"))
        out = prepare(ciphertext, "ciphertext")
        result = await self._bridge.request(
            self.channel, "decrypt_file",
            {"data": out.value, "key": key_value, "nonce": _to_js(nonce)},
            transfer=out.transfer, on_progress=on_progress, cancel=cancel)
        return like_input(result, ciphertext)

    def _aes_key(self, key: Any) -> tuple[Any, object]:
        """(what crosses to the worker, an identity for the nonce registry)."""
        if isinstance(key, bytes | bytearray | memoryview):
            raw = _small_bytes(key, "key")
            if len(raw) != KEY_SIZE:
                raise InvalidInputError(f"key must be {KEY_SIZE} bytes (AES-256), "
                                        f"not {len(raw)}")
            return _to_js(raw), ("raw", hashlib.sha256(raw).digest())
        if _is_crypto_key(key):
            return key, ("CryptoKey", self._bridge.key_id(key))
        raise InvalidTypeError("key must be 32 bytes or an AES-GCM CryptoKey")

    # --- key derivation and HMAC ---------------------------------------------------------

    async def derive_key(
        self,
        password: str | bytes,
        salt: bytes,
        iterations: int = 600_000,
        hash: str = "SHA-256",
        *,
        length: int = KEY_SIZE,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> bytes:
        """PBKDF2-HMAC: ``length`` key bytes from ``password`` (str as UTF-8, or bytes) and
        ``salt``. 600,000 iterations of SHA-256 is OWASP's 2023 advice. (Argon2 and
        scrypt are not available in browsers' WebCrypto.)"""
        if isinstance(password, str):
            password = password.encode()
        pw = _small_bytes(password, "password")
        salt_b = _small_bytes(salt, "salt")
        if not salt_b:
            raise InvalidInputError("salt must not be empty (use 16 random bytes)")
        if type(iterations) is not int or iterations < 1:
            raise InvalidInputError("iterations must be a positive integer")
        _check_length(length, 1024)
        result = await self._bridge.request(
            self.channel, "derive_key",
            {"password": _to_js(pw), "salt": _to_js(salt_b), "iterations": iterations,
             "hash": normalize_hash(hash), "length": length},
            on_progress=on_progress, cancel=cancel)
        return bytes(result)

    async def hkdf(
        self,
        key_material: bytes,
        salt: bytes = b"",
        info: bytes = b"",
        length: int = KEY_SIZE,
        hash: str = "SHA-256",
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> bytes:
        """HKDF (RFC 5869): ``length`` bytes from ``key_material``, ``salt`` and ``info``."""
        name = normalize_hash(hash)
        ikm = _small_bytes(key_material, "key_material")
        if not ikm:
            raise InvalidInputError("key_material must not be empty")
        _check_length(length, 255 * hashlib.new(name.replace("-", "").lower()).digest_size)
        result = await self._bridge.request(
            self.channel, "hkdf",
            {"key_material": _to_js(ikm), "salt": _to_js(_small_bytes(salt, "salt")),
             "info": _to_js(_small_bytes(info, "info")), "length": length, "hash": name},
            on_progress=on_progress, cancel=cancel)
        return bytes(result)

    async def hmac_sign(
        self,
        key: Any,
        data: Any,
        hash: str = "SHA-256",
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> bytes:
        """The HMAC tag of ``data`` under ``key`` (bytes or an HMAC CryptoKey)."""
        return bytes(await self._hmac("hmac_sign", key, data, hash, None, on_progress, cancel))

    async def hmac_verify(
        self,
        key: Any,
        data: Any,
        signature: bytes,
        hash: str = "SHA-256",
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> bool:
        """Whether ``signature`` is the HMAC tag of ``data`` (compared in constant time)."""
        sig = _small_bytes(signature, "signature")
        return bool(await self._hmac("hmac_verify", key, data, hash, sig, on_progress, cancel))

    async def _hmac(self, op: str, key: Any, data: Any, hash_name: str, signature: bytes | None,
                    on_progress: ProgressCallback | None,
                    cancel: SharedCancellation | None) -> Any:
        name = normalize_hash(hash_name)
        if _is_crypto_key(key):
            key_value = key
        else:
            raw = _small_bytes(key, "key")
            if not raw:
                raise InvalidInputError("key must not be empty")
            key_value = _to_js(raw)
        out = prepare(data)
        payload = {"key": key_value, "data": out.value, "hash": name}
        if signature is not None:
            payload["signature"] = _to_js(signature)
        return await self._bridge.request(self.channel, op, payload, transfer=out.transfer,
                                          on_progress=on_progress, cancel=cancel)


class Encrypted(NamedTuple):
    """What ``encrypt_file`` returns: keep the nonce with the ciphertext (it is not secret)."""

    ciphertext: Any
    nonce: bytes


def _small_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidTypeError(f"{what} must be bytes, not {type(value).__name__}")


def _check_length(length: int, most: int) -> None:
    if type(length) is not int or not 1 <= length <= most:
        raise InvalidInputError(f"length must be an integer from 1 to {most} bytes")


def _to_js(data: bytes) -> Any:
    """Small bytes as what the worker reads: an ArrayBuffer in a browser, bytes on a host."""
    if not IN_PYODIDE:
        return data
    from workerbridge.core.jsconv import bytes_to_js

    return bytes_to_js(data)


def _is_crypto_key(value: Any) -> bool:
    return IN_PYODIDE and not isinstance(value, bytes | bytearray | memoryview | str) \
        and type_tag(value) == "[object CryptoKey]"
