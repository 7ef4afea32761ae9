"""Names of the algorithms the built-in workers accept, shared by the page and the workers."""

from __future__ import annotations

from workerbridge.core.errors import InvalidInputError, InvalidTypeError, UnsupportedError

# The four digests SubtleCrypto offers, by their WebCrypto names -> hashlib names.
HASHES = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def normalize_hash(name: object) -> str:
    """'sha256', 'SHA256' or 'SHA-256' -> 'SHA-256'; anything else is InvalidInputError."""
    if isinstance(name, str):
        key = name.strip().upper().replace("_", "-")
        if key.startswith("SHA") and not key.startswith("SHA-"):
            key = "SHA-" + key[3:]
        if key in HASHES:
            return key
    raise InvalidInputError(f"unknown hash algorithm; use one of {', '.join(HASHES)}")


# Compression formats: CompressionStream's three (gzip, zlib-wrapped deflate, raw deflate)
# and zstd, which Pyodide's Python 3.14 builds in (compression.zstd). Value: the levels a
# caller may ask for.
COMPRESSIONS = {"gzip": range(10), "deflate": range(10), "deflate-raw": range(10),
                "zstd": range(1, 23)}
# Decompressed output past this many bytes is an error unless the caller says otherwise:
# a few KB of crafted input can expand to gigabytes.
DEFAULT_MAX_OUTPUT = 1 << 30
# Brotli has no engine here: Chromium's CompressionStream offers only the three formats
# above, and Pyodide's standard library has no brotli module.
_NO_ENGINE = {"br": "brotli", "brotli": "brotli"}


def normalize_compression(name: object) -> str:
    """'GZIP', 'deflate_raw', 'zstd' … -> a key of COMPRESSIONS; brotli is UnsupportedError,
    anything else InvalidInputError."""
    if isinstance(name, str):
        key = name.strip().lower().replace("_", "-")
        if key in COMPRESSIONS:
            return key
        if key in _NO_ENGINE:
            raise UnsupportedError(
                f"{_NO_ENGINE[key]} is not available: this browser's CompressionStream offers "
                "only gzip, deflate and deflate-raw, and Pyodide has no brotli module")
    raise InvalidInputError(f"unknown compression format; use one of {', '.join(COMPRESSIONS)}")


def compression_level(algorithm: str, level: object) -> int | None:
    """Check ``level`` (None: the engine's default) for a normalized ``algorithm``."""
    if level is None:
        return None
    if not isinstance(level, int) or isinstance(level, bool):
        raise InvalidTypeError(f"level must be an int or None, not {type(level).__name__}")
    levels = COMPRESSIONS[algorithm]
    if level not in levels:
        raise InvalidInputError(
            f"{algorithm} level must be {levels.start}-{levels.stop - 1}, not {level}")
    return level


def max_output_bytes(value: object) -> int:
    """Check a ``max_output`` argument: an int of 0 or more (bytes)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTypeError(f"max_output must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidInputError("max_output must be 0 or more bytes")
    return value
