"""Host unit tests of the AES-GCM file format's pure parts and the nonce registry."""

from __future__ import annotations

import os

import pytest

from gcm_reference import seal
from workerbridge import IntegrityError, InvalidInputError, NonceReuseError
from workerbridge.channels.aead import (
    HEADER_SIZE,
    NonceRegistry,
    chunk_count,
    header,
    plaintext_size,
    read_header,
    record_sizes,
)


def test_layout_matches_the_reference_implementation():
    key, nonce = os.urandom(32), os.urandom(12)
    for size in (1025, 2048, 2049, 5000):
        blob = seal(key, nonce, os.urandom(size), 1024)
        assert read_header(blob) == 1024
        assert sum(record_sizes(len(blob), 1024)) == len(blob) - HEADER_SIZE
        assert plaintext_size(len(blob), 1024) == size
        assert len(record_sizes(len(blob), 1024)) == chunk_count(size, 1024)
    assert blob[:HEADER_SIZE] == header(1024)


def test_impossible_lengths_and_headers_are_integrity_errors():
    with pytest.raises(IntegrityError):
        record_sizes(HEADER_SIZE + 1024 + 16 + 10, 1024)  # a last record shorter than a tag
    with pytest.raises(IntegrityError):
        record_sizes(HEADER_SIZE, 1024)  # no records at all
    with pytest.raises(IntegrityError):
        read_header(b"WBGCM\x02" + (1024).to_bytes(4, "big"))
    assert read_header(b"not a chunked file") is None


def test_registry_refuses_reuse_and_overlapping_record_nonces():
    reg = NonceRegistry()
    n = bytes(11) + b"\x00"
    reg.claim("k", n, 4)  # nonces ...00, 01, 02, 03
    with pytest.raises(NonceReuseError):
        reg.claim("k", n, 1)
    with pytest.raises(NonceReuseError):
        reg.claim("k", bytes(11) + b"\x03", 1)  # record 3 of the first file
    reg.claim("k", bytes(11) + b"\x04", 1)  # untouched
    reg.claim("other key", n, 4)  # another key may use the same nonce
    with pytest.raises(InvalidInputError):
        reg.claim("k", b"short", 1)
    assert issubclass(NonceReuseError, InvalidInputError)
