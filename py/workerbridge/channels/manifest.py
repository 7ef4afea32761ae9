"""The metadata ``file.chunk_file`` returns and ``file.merge_chunks`` verifies (pure).

Shared by the page, which checks arguments before sending, and the worker, which cannot
trust what arrives.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

from workerbridge.core.errors import InvalidInputError, InvalidTypeError

VERSION = 1
ALGORITHM = "SHA-256"
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024  # bytes
MAX_CHUNK_SIZE = 1024 * 1024 * 1024
# Each chunk is its own ArrayBuffer and list entry: beyond this, ask for larger chunks.
MAX_CHUNKS = 10_000

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def chunk_count(size: int, chunk_size: object) -> int:
    """How many chunks of ``chunk_size`` bytes ``size`` bytes make; checks both."""
    if not _is_int(chunk_size):
        raise InvalidTypeError(f"chunk_size must be an int, not {type(chunk_size).__name__}")
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidInputError(f"chunk_size must be 1 to {MAX_CHUNK_SIZE} bytes")
    count = -(-size // chunk_size)
    if count > MAX_CHUNKS:
        raise InvalidInputError(
            f"{size} bytes in chunks of {chunk_size} would make {count} chunks; the limit "
            f"is {MAX_CHUNKS}: use a larger chunk_size")
    return count


@dataclass(frozen=True, slots=True)
class Manifest:
    file_name: str | None
    size: int
    chunk_size: int
    count: int
    sizes: list[int]
    chunk_hashes: list[str]
    hash: str
    algorithm: str = ALGORITHM
    version: int = VERSION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hex(value: object, what: str) -> str:
    if isinstance(value, str) and _HEX64.fullmatch(value.lower()):
        return value.lower()
    raise InvalidInputError(f"metadata {what} must be a SHA-256 digest in hex")


def check_manifest(meta: object) -> Manifest:
    """``meta`` (as ``chunk_file`` made it) checked for shape and self-consistency."""
    if not isinstance(meta, dict):
        raise InvalidTypeError(f"metadata must be a dict, not {type(meta).__name__}")
    if meta.get("version") != VERSION:
        raise InvalidInputError(f"metadata version must be {VERSION}")
    if meta.get("algorithm") != ALGORITHM:
        raise InvalidInputError(f"metadata algorithm must be {ALGORITHM}")
    count, sizes, hashes = meta.get("count"), meta.get("sizes"), meta.get("chunk_hashes")
    if not _is_int(count) or not isinstance(sizes, list) or not isinstance(hashes, list):
        raise InvalidInputError("metadata needs count (int), sizes and chunk_hashes (lists)")
    if not 0 <= count <= MAX_CHUNKS or len(sizes) != count or len(hashes) != count:
        raise InvalidInputError("metadata count, sizes and chunk_hashes disagree")
    if not all(_is_int(s) and s >= 0 for s in sizes):
        raise InvalidInputError("metadata sizes must be non-negative ints")
    size, chunk_size, name = meta.get("size"), meta.get("chunk_size"), meta.get("file_name")
    if not _is_int(size) or size != sum(sizes):
        raise InvalidInputError("metadata size is not the sum of its sizes")
    if not _is_int(chunk_size) or chunk_size <= 0:
        raise InvalidInputError("metadata chunk_size must be a positive int")
    if name is not None and not isinstance(name, str):
        raise InvalidInputError("metadata file_name must be a str or None")
    return Manifest(name, size, chunk_size, count, list(sizes),
                    [_hex(h, f"chunk_hashes[{i}]") for i, h in enumerate(hashes)],
                    _hex(meta.get("hash"), "hash"))
