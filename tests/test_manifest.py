"""Chunk metadata: sizes and counts checked, malformed metadata refused with typed errors."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from workerbridge import InvalidInputError, InvalidTypeError
from workerbridge.channels.manifest import (
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    Manifest,
    check_manifest,
    chunk_count,
)


def manifest_of(data: bytes, chunk_size: int) -> dict[str, Any]:
    parts = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    return Manifest("a.bin", len(data), chunk_size, len(parts), [len(p) for p in parts],
                    [hashlib.sha256(p).hexdigest() for p in parts],
                    hashlib.sha256(data).hexdigest()).as_dict()


def test_chunk_count_and_its_bounds():
    assert chunk_count(0, 10) == 0
    assert chunk_count(10, 10) == 1
    assert chunk_count(11, 10) == 2
    assert chunk_count(MAX_CHUNKS, 1) == MAX_CHUNKS
    with pytest.raises(InvalidInputError, match="limit"):
        chunk_count(MAX_CHUNKS + 1, 1)
    for bad in (0, -5, MAX_CHUNK_SIZE + 1):
        with pytest.raises(InvalidInputError):
            chunk_count(10, bad)
    for wrong in (1.5, "4", None, True):
        with pytest.raises(InvalidTypeError):
            chunk_count(10, wrong)


def test_a_manifest_round_trips():
    meta = manifest_of(b"x" * 25, 10)
    assert meta["count"] == 3 and meta["sizes"] == [10, 10, 5]
    assert meta["version"] == 1 and meta["algorithm"] == "SHA-256"
    checked = check_manifest(meta)
    assert checked.as_dict() == meta
    upper = dict(meta, hash=meta["hash"].upper())
    assert check_manifest(upper).hash == meta["hash"]


@pytest.mark.parametrize("change", [
    {"version": 2}, {"algorithm": "SHA-1"}, {"count": 2}, {"count": "3"},
    {"sizes": [10, 10, 6]}, {"sizes": [10, 10, -5]}, {"sizes": [10, 10, 5.0]},
    {"size": 26}, {"chunk_size": 0}, {"file_name": 5}, {"hash": "00"},
    {"chunk_hashes": ["zz" * 32] * 3}, {"chunk_hashes": None},
])
def test_malformed_manifests_are_refused(change: dict[str, Any]):
    meta = dict(manifest_of(b"x" * 25, 10), **change)
    with pytest.raises(InvalidInputError):
        check_manifest(meta)


def test_a_manifest_must_be_a_dict():
    with pytest.raises(InvalidTypeError):
        check_manifest([1, 2])
