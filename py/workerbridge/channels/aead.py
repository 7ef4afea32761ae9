"""AES-256-GCM file format and nonce bookkeeping: pure logic, shared by page and worker.

Data up to one chunk is sealed as plain AES-GCM — ``ciphertext || 16-byte tag`` under the
caller's 96-bit nonce, readable by any AES-GCM library. Larger data uses the chunked
format, version 1::

    header   = b"WBGCM" || version (1 byte, 1) || chunk_size (4 bytes, big-endian)
    record i = AES-GCM(key, nonce_i, plaintext[i*chunk_size : (i+1)*chunk_size], aad_i)
    file     = header || record 0 || record 1 || ... || record n-1

    nonce_i  = nonce XOR i            (i as a 96-bit big-endian integer)
    aad_i    = header || i (8 bytes, big-endian) || final (1 byte: 1 on record n-1, else 0)

Every record but the last holds exactly ``chunk_size`` plaintext bytes (``chunk_size + 16``
on the wire); the last holds 1..chunk_size. Binding the index and the final flag into each
record's associated data makes reordering, dropping, duplicating, truncating at a record
boundary and appending all fail authentication, as does any change to the header.
The record loop itself runs in JS (``gcm_records``).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable

from workerbridge.core.errors import IntegrityError, InvalidInputError, NonceReuseError

MAGIC = b"WBGCM"
VERSION = 1
HEADER = struct.Struct(">5sBI")
HEADER_SIZE = HEADER.size  # 10
TAG_SIZE = 16
NONCE_SIZE = 12
KEY_SIZE = 32
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
_NONCE_SPACE = 1 << (8 * NONCE_SIZE)


def check_chunk_size(chunk_size: int) -> int:
    if type(chunk_size) is not int or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidInputError(
            f"chunk_size must be an integer from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
    return chunk_size


def check_nonce(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise InvalidInputError(f"nonce must be {NONCE_SIZE} bytes (96 bits), not {len(nonce)}")
    return nonce


def header(chunk_size: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, chunk_size)


def read_header(data: bytes) -> int | None:
    """The chunk size of a chunked ciphertext's header, or None if ``data`` has none."""
    if len(data) < HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
        return None
    _, version, chunk_size = HEADER.unpack_from(data)
    if version != VERSION:
        raise IntegrityError(f"unknown encrypted format version {version}")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise IntegrityError("the encrypted header is damaged")
    return int(chunk_size)


def chunk_count(size: int, chunk_size: int) -> int:
    """Records needed for ``size`` plaintext bytes (at least one)."""
    return max(1, -(-size // chunk_size))


def record_sizes(total: int, chunk_size: int) -> list[int]:
    """Wire sizes of the records in a chunked ciphertext of ``total`` bytes (header
    included); IntegrityError when no valid file has that length."""
    body = total - HEADER_SIZE
    record = chunk_size + TAG_SIZE
    full, rest = divmod(body, record)
    if rest == 0 and full > 0:
        return [record] * full
    if rest > TAG_SIZE:
        return [record] * full + [rest]
    raise IntegrityError("the encrypted data is truncated or has a damaged length")


def plaintext_size(total: int, chunk_size: int) -> int:
    return sum(r - TAG_SIZE for r in record_sizes(total, chunk_size))


class NonceRegistry:
    """Every (key, nonce) this session has encrypted with, to refuse a second use.

    ``key_id`` identifies a key without holding it (a digest of raw bytes, or an id given
    to a CryptoKey object). A chunked encryption uses ``nonce XOR i`` for each record i,
    so each of those is claimed: two files whose nonces are close cannot overlap.
    """

    def __init__(self) -> None:
        self._used: dict[Hashable, set[int]] = {}

    def claim(self, key_id: Hashable, nonce: bytes, records: int) -> None:
        """Claim the nonces of ``records`` records from ``nonce``; NonceReuseError (and
        nothing claimed) if any was used before with this key."""
        base = int.from_bytes(check_nonce(nonce), "big")
        wanted = {base ^ i for i in range(records)}
        used = self._used.setdefault(key_id, set())
        if not used.isdisjoint(wanted):
            raise NonceReuseError(
                "this key was already used with this nonce in this session; AES-GCM must "
                "never reuse a nonce with a key (omit nonce= to get a fresh random one)")
        used |= wanted
