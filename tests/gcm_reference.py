"""An independent reading of the AES-GCM chunked format in docs/channels.md, on the host's
`cryptography` package: what browser ciphertexts are checked against."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HEADER = struct.Struct(">5sBI")


def nonce_for(nonce: bytes, i: int) -> bytes:
    return (int.from_bytes(nonce, "big") ^ i).to_bytes(12, "big")


def aad_for(head: bytes, i: int, final: bool) -> bytes:
    return head + struct.pack(">Q", i) + (b"\x01" if final else b"\x00")


def seal(key: bytes, nonce: bytes, data: bytes, chunk_size: int) -> bytes:
    gcm = AESGCM(key)
    if len(data) <= chunk_size:
        return gcm.encrypt(nonce, data, None)
    head = HEADER.pack(b"WBGCM", 1, chunk_size)
    pieces = [data[o:o + chunk_size] for o in range(0, len(data), chunk_size)]
    return head + b"".join(
        gcm.encrypt(nonce_for(nonce, i), p, aad_for(head, i, i == len(pieces) - 1))
        for i, p in enumerate(pieces))


def open_sealed(key: bytes, nonce: bytes, blob: bytes) -> bytes:
    gcm = AESGCM(key)
    if blob[:5] != b"WBGCM":
        return gcm.decrypt(nonce, blob, None)
    _, version, chunk_size = HEADER.unpack_from(blob)
    assert version == 1
    head, body, record = blob[:HEADER.size], blob[HEADER.size:], chunk_size + 16
    records = [body[o:o + record] for o in range(0, len(body), record)]
    return b"".join(
        gcm.decrypt(nonce_for(nonce, i), r, aad_for(head, i, i == len(records) - 1))
        for i, r in enumerate(records))
