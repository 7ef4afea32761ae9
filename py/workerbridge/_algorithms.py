"""Names of the algorithms the built-in workers accept, shared by the page and the workers."""

from __future__ import annotations

from ._errors import InvalidInputError

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
