"""Image dimensions from file headers (pure: stdlib only).

``image_size`` reads pixel dimensions of PNG, GIF, WebP and BMP from a file's first bytes;
``jpeg_size`` walks a JPEG's segments window by window, since its frame header may lie
past the first few KB.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from workerbridge.channels.magic import _u16be, _u32le


def _webp_size(b: bytes) -> tuple[int, int] | None:
    chunk = b[12:16]
    if chunk == b"VP8 " and b[23:26] == b"\x9d\x01\x2a" and len(b) >= 30:
        width, height = struct.unpack_from("<HH", b, 26)
        return width & 0x3FFF, height & 0x3FFF  # the top two bits are a scale
    if chunk == b"VP8L" and b[20:21] == b"\x2f" and len(b) >= 25:
        bits = _u32le(b, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(b) >= 30:
        width = int.from_bytes(b[24:27], "little") + 1
        return width, int.from_bytes(b[27:30], "little") + 1
    return None


def _bmp_size(b: bytes) -> tuple[int, int] | None:
    if _u32le(b, 14) == 12 and len(b) >= 22:  # OS/2 core header: 16-bit fields
        width, height = struct.unpack_from("<HH", b, 18)
        return width, height
    if len(b) >= 26:
        width, height = struct.unpack_from("<ii", b, 18)
        return abs(width), abs(height)  # a negative height means top-down rows
    return None


def image_size(kind: str, head: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels of a PNG, GIF, WebP, BMP or JPEG from its first bytes."""
    b = bytes(head)
    if kind == "png" and b[12:16] == b"IHDR" and len(b) >= 24:
        width, height = struct.unpack_from(">II", b, 16)
        return width, height
    if kind == "gif" and len(b) >= 10:
        width, height = struct.unpack_from("<HH", b, 6)
        return width, height
    if kind == "webp":
        return _webp_size(b)
    if kind == "bmp":
        return _bmp_size(b)
    if kind == "jpeg":
        found = jpeg_size(b)
        return found if isinstance(found, tuple) else None
    return None


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Go on reading at ``offset`` (bytes from the start of the file)."""

    offset: int


# SOF0-SOF15 carry the frame size, except C4 (DHT), C8 (reserved), CC (DAC).
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def jpeg_size(window: bytes, offset: int = 0) -> tuple[int, int] | NeedMore | None:
    """A JPEG's (width, height) from its frame header, skipping other segments.

    ``window`` holds the file's bytes from ``offset``: 0 to start, then the offset of a
    ``NeedMore`` this returned when the next segment lay beyond the window. None: not a
    JPEG, or the image data began before any frame header.
    """
    b = bytes(window)
    pos = 0
    if offset == 0:
        if b[:2] != b"\xff\xd8":
            return None
        pos = 2
    while True:
        if pos + 4 > len(b):
            return NeedMore(offset + pos)
        if b[pos] != 0xFF:
            return None
        if b[pos + 1] == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        marker = b[pos + 1]
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came
            return None
        length = _u16be(b, pos + 2)
        if length < 2:
            return None
        if marker in JPEG_SOF:
            if pos + 9 > len(b):
                return NeedMore(offset + pos)
            height, width = struct.unpack_from(">HH", b, pos + 5)
            return (width, height) if width and height else None
        pos += 2 + length
