"""File types by magic numbers (pure: stdlib only).

``detect(head)`` looks at the first bytes of a file (``HEAD_SIZE``; a ZIP may need up to
``ZIP_HEAD_SIZE`` to tell an Office document from a plain archive) and names its type.
Pixel dimensions are read by ``imagesize``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HEAD_SIZE = 4096
ZIP_HEAD_SIZE = 64 * 1024

# An extension alone (no signature matched) is a weak hint: this is its confidence.
HINT_CONFIDENCE = 0.2


@dataclass(frozen=True, slots=True)
class Detection:
    type: str
    mime_type: str
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "mime_type": self.mime_type,
                "confidence": round(self.confidence, 3)}


UNKNOWN = Detection("unknown", "application/octet-stream", 0.0)

MIME = {
    "png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
    "bmp": "image/bmp", "tiff": "image/tiff", "ico": "image/vnd.microsoft.icon",
    "psd": "image/vnd.adobe.photoshop", "heic": "image/heic", "heif": "image/heif",
    "avif": "image/avif", "svg": "image/svg+xml",
    "pdf": "application/pdf", "zip": "application/zip", "gzip": "application/gzip",
    "bzip2": "application/x-bzip2", "xz": "application/x-xz",
    "7z": "application/x-7z-compressed", "rar": "application/vnd.rar",
    "tar": "application/x-tar",
    "mp3": "audio/mpeg", "mp4": "video/mp4", "m4a": "audio/mp4", "mov": "video/quicktime",
    "3gp": "video/3gpp", "wav": "audio/wav", "avi": "video/x-msvideo", "ogg": "audio/ogg",
    "flac": "audio/flac", "webm": "video/webm", "mkv": "video/x-matroska",
    "elf": "application/x-elf", "exe": "application/vnd.microsoft.portable-executable",
    "macho": "application/x-mach-binary", "class": "application/java-vm",
    "wasm": "application/wasm", "sqlite": "application/vnd.sqlite3",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "epub": "application/epub+zip", "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "jar": "application/java-archive", "apk": "application/vnd.android.package-archive",
    "json": "application/json", "xml": "application/xml", "html": "text/html",
    "text": "text/plain", "csv": "text/csv", "tsv": "text/tab-separated-values",
    "markdown": "text/markdown", "javascript": "text/javascript", "css": "text/css",
}

EXTENSIONS = {
    "png": "png", "jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "gif": "gif", "webp": "webp",
    "bmp": "bmp", "tif": "tiff", "tiff": "tiff", "ico": "ico", "psd": "psd", "heic": "heic",
    "heif": "heif", "avif": "avif", "svg": "svg", "pdf": "pdf", "zip": "zip", "gz": "gzip",
    "tgz": "gzip", "bz2": "bzip2", "xz": "xz", "7z": "7z", "rar": "rar", "tar": "tar",
    "mp3": "mp3", "mp4": "mp4", "m4v": "mp4", "m4a": "m4a", "mov": "mov", "3gp": "3gp",
    "wav": "wav", "avi": "avi", "ogg": "ogg", "oga": "ogg", "opus": "ogg", "flac": "flac",
    "webm": "webm", "mkv": "mkv", "so": "elf", "exe": "exe", "dll": "exe", "dylib": "macho",
    "class": "class", "wasm": "wasm", "sqlite": "sqlite", "sqlite3": "sqlite", "db": "sqlite",
    "docx": "docx", "xlsx": "xlsx", "pptx": "pptx", "epub": "epub", "odt": "odt",
    "ods": "ods", "odp": "odp", "jar": "jar", "apk": "apk", "json": "json", "xml": "xml",
    "html": "html", "htm": "html", "txt": "text", "csv": "csv", "tsv": "tsv",
    "md": "markdown", "js": "javascript", "mjs": "javascript", "css": "css",
}

# Types an extension may narrow a weaker, more general detection down to.
REFINES = {
    "csv": "text", "tsv": "text", "markdown": "text", "javascript": "text", "css": "text",
    "docx": "zip", "xlsx": "zip", "pptx": "zip", "epub": "zip", "odt": "zip", "ods": "zip",
    "odp": "zip", "jar": "zip", "apk": "zip", "svg": "xml",
}


def _found(kind: str, confidence: float) -> Detection:
    return Detection(kind, MIME[kind], confidence)


def _u16be(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 2], "big")


def _u32be(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "big")


def _u32le(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "little")


# --- signatures that need more than a fixed prefix ----------------------------------------

def _riff(b: bytes) -> Detection | None:
    form = {b"WAVE": "wav", b"WEBP": "webp", b"AVI ": "avi"}.get(b[8:12])
    if b[:4] != b"RIFF" or form is None:
        return None
    return _found(form, 0.95)


FTYP_BRANDS = {
    b"qt  ": "mov", b"M4A ": "m4a", b"M4B ": "m4a", b"heic": "heic", b"heix": "heic",
    b"heim": "heic", b"heis": "heic", b"mif1": "heif", b"msf1": "heif", b"avif": "avif",
    b"avis": "avif",
}


def _ftyp(b: bytes) -> Detection | None:
    """ISO base media (MP4 and kin): an ``ftyp`` box first, naming a major brand."""
    if b[4:8] != b"ftyp" or len(b) < 12:
        return None
    brand = b[8:12]
    kind = FTYP_BRANDS.get(brand) or ("3gp" if brand.startswith(b"3g") else "mp4")
    if kind == "heif" and b"avif" in b[16:_u32be(b, 0)]:
        kind = "avif"
    return _found(kind, 0.9)


def _ebml_vint(b: bytes, i: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``i``: (value, length in bytes)."""
    if i >= len(b) or b[i] == 0:
        return None
    length = 9 - b[i].bit_length()
    if i + length > len(b):
        return None
    value = b[i] if keep_marker else b[i] & (0xFF >> length)
    for k in range(1, length):
        value = (value << 8) | b[i + k]
    return value, length


def _ebml(b: bytes) -> Detection | None:
    """Matroska and WebM share EBML; the header's DocType element tells them apart."""
    if b[:4] != b"\x1a\x45\xdf\xa3":
        return None
    size = _ebml_vint(b, 4, keep_marker=False)
    if size is None:
        return _found("mkv", 0.6)
    pos = 4 + size[1]
    end = min(len(b), pos + size[0])
    while pos < end:
        eid = _ebml_vint(b, pos, keep_marker=True)
        if eid is None:
            break
        elen = _ebml_vint(b, pos + eid[1], keep_marker=False)
        if elen is None:
            break
        start = pos + eid[1] + elen[1]
        if eid[0] == 0x4282:  # DocType
            doctype = b[start:start + elen[0]].rstrip(b"\x00")
            if doctype == b"webm":
                return _found("webm", 0.95)
            return _found("mkv", 0.95 if doctype == b"matroska" else 0.6)
        pos = start + elen[0]
    return _found("mkv", 0.6)


OOXML_PARTS = {"word/": "docx", "xl/": "xlsx", "ppt/": "pptx"}
ODF_MIMETYPES = {
    b"application/epub+zip": "epub",
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
    b"application/vnd.oasis.opendocument.presentation": "odp",
}


def _zip_entries(b: bytes) -> list[tuple[str, bytes]]:
    """(name, first bytes of stored data) of the ZIP local file headers found in ``b``."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos + 30 <= len(b) and b[pos:pos + 4] == b"PK\x03\x04":
        flags, method = struct.unpack_from("<HH", b, pos + 6)
        csize, _, nlen, xlen = struct.unpack_from("<IIHH", b, pos + 18)
        name_end = pos + 30 + nlen
        if name_end > len(b):
            break
        name = b[pos + 30:name_end].decode("utf-8", "replace")
        data = name_end + xlen
        out.append((name, b[data:data + min(csize, 80)] if method == 0 else b""))
        if flags & 0x08 and csize == 0:
            # Sizes follow the data (a streamed archive): look for the next header instead.
            nxt = b.find(b"PK\x03\x04", data)
            if nxt < 0:
                break
            pos = nxt
        else:
            pos = data + csize
    return out


def _zip(b: bytes) -> Detection | None:
    if b[:4] in (b"PK\x05\x06", b"PK\x07\x08"):  # empty or spanned archive
        return _found("zip", 0.8)
    if b[:4] != b"PK\x03\x04":
        return None
    entries = _zip_entries(b)
    if entries and entries[0][0] == "mimetype" and entries[0][1] in ODF_MIMETYPES:
        return _found(ODF_MIMETYPES[entries[0][1]], 0.95)
    names = {name for name, _ in entries}
    manifest = "[Content_Types].xml" in names or "_rels/.rels" in names
    for prefix, kind in OOXML_PARTS.items():
        if any(n.startswith(prefix) for n in names):
            return _found(kind, 0.95 if manifest else 0.6)
    if "META-INF/MANIFEST.MF" in names:
        return _found("jar", 0.7)
    return _found("zip", 0.9)


def _tar(b: bytes) -> Detection | None:
    return _found("tar", 0.95) if b[257:262] == b"ustar" else None


MP3_KBPS = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),      # MPEG-2
}
MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frame_length(b: bytes, i: int) -> int | None:
    """Length in bytes of the MPEG audio Layer III frame whose header is at ``i``."""
    if i + 4 > len(b):
        return None
    h = _u32be(b, i)
    version, layer = (h >> 19) & 3, (h >> 17) & 3
    rate_index, bitrate = (h >> 10) & 3, (h >> 12) & 0xF
    if h >> 21 != 0x7FF or version == 1 or layer != 1 or bitrate in (0, 15) or rate_index == 3:
        return None
    kbps = MP3_KBPS[3 if version == 3 else 2][bitrate]
    per_frame = 144 if version == 3 else 72
    return per_frame * kbps * 1000 // MP3_RATES[version][rate_index] + ((h >> 9) & 1)


def _mp3(b: bytes) -> Detection | None:
    if b[:3] == b"ID3" and len(b) >= 10 and b[3] in (2, 3, 4):
        # An ID3 tag may precede other audio: look past it when it fits in the head.
        tag = 10 + sum((b[6 + k] & 0x7F) << (7 * (3 - k)) for k in range(4))
        if b[tag:tag + 4] == b"fLaC":
            return _found("flac", 0.9)
        return _found("mp3", 0.9)
    first = mp3_frame_length(b, 0)
    if first is None:
        return None
    # A bare frame sync is 11 set bits: a second frame where the first one ends confirms it.
    return _found("mp3", 0.8 if mp3_frame_length(b, first) is not None else 0.4)


def _exe(b: bytes) -> Detection | None:
    if b[:2] != b"MZ" or len(b) < 64:
        return None
    pe = _u32le(b, 0x3C)
    if b[pe:pe + 4] == b"PE\x00\x00":
        return _found("exe", 0.95)
    return None if _text(b, complete=False) else _found("exe", 0.4)  # DOS, or text


MACHO = (b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe",
         b"\xca\xfe\xba\xbf", b"\xbf\xba\xfe\xca", b"\xbe\xba\xfe\xca")


def _macho(b: bytes) -> Detection | None:
    if b[:4] in MACHO:
        return _found("macho", 0.95)
    if b[:4] == b"\xca\xfe\xba\xbe" and len(b) >= 8:
        # Shared with Java classes: a fat binary counts its architectures next (a few),
        # a class file its version (major version 45 or more).
        return _found("macho", 0.9) if 0 < _u32be(b, 4) < 45 else _found("class", 0.9)
    return None


def _bmp(b: bytes) -> Detection | None:
    if b[:2] == b"BM" and len(b) >= 18 and b[6:10] == b"\x00" * 4 \
            and _u32le(b, 14) in (12, 40, 52, 56, 64, 108, 124):
        return _found("bmp", 0.9)
    return None


def _ico(b: bytes) -> Detection | None:
    if b[:4] == b"\x00\x00\x01\x00" and len(b) >= 22 and b[4:6] != b"\x00\x00" \
            and b[9] == 0 and b[10] in (0, 1) and b[11] == 0:
        return _found("ico", 0.8)
    return None


def _pdf(b: bytes) -> Detection | None:
    at = b.find(b"%PDF-", 0, 1024)  # readers accept leading junk within the first KB
    return None if at < 0 else _found("pdf", 0.95 if at == 0 else 0.7)


def _bzip2(b: bytes) -> Detection | None:
    if b[:3] != b"BZh" or len(b) < 4 or b[3] not in b"123456789":
        return None
    # A block (pi in BCD) or the end of stream (sqrt(pi)) follows the header.
    block = b[4:10] in (b"1AY&SY", b"\x17rE8P\x90")
    return _found("bzip2", 0.95 if block else 0.5)


# Fixed prefixes: (bytes at offset 0, type, confidence). Longer signatures earn more trust.
PREFIXES: tuple[tuple[bytes, str, float], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png", 1.0),
    (b"\xff\xd8\xff", "jpeg", 0.95),
    (b"GIF87a", "gif", 1.0),
    (b"GIF89a", "gif", 1.0),
    (b"II*\x00", "tiff", 0.9),
    (b"MM\x00*", "tiff", 0.9),
    (b"II+\x00", "tiff", 0.9),  # BigTIFF
    (b"MM\x00+", "tiff", 0.9),
    (b"8BPS\x00\x01", "psd", 0.95),
    (b"8BPS\x00\x02", "psd", 0.95),  # large-document variant
    (b"\x1f\x8b\x08", "gzip", 0.95),
    (b"\xfd7zXZ\x00", "xz", 1.0),
    (b"7z\xbc\xaf\x27\x1c", "7z", 1.0),
    (b"Rar!\x1a\x07\x00", "rar", 1.0),
    (b"Rar!\x1a\x07\x01\x00", "rar", 1.0),
    (b"OggS\x00", "ogg", 0.95),
    (b"fLaC", "flac", 0.95),
    (b"\x7fELF", "elf", 0.95),
    (b"\x00asm\x01\x00\x00\x00", "wasm", 1.0),
    (b"SQLite format 3\x00", "sqlite", 1.0),
)

CHECKS: tuple[Callable[[bytes], Detection | None], ...] = (
    _riff, _ftyp, _ebml, _zip, _tar, _macho, _exe, _bmp, _ico, _pdf, _bzip2, _mp3,
)


# --- text family ----------------------------------------------------------------------------

def _decode(b: bytes, complete: bool) -> str | None:
    """``b`` as UTF-8 text, or None if it looks binary; a character cut at the end of a
    partial head is forgiven."""
    b = b.removeprefix(b"\xef\xbb\xbf")
    if not b or b"\x00" in b:
        return None
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError as exc:
        if complete or exc.start < len(b) - 3:
            return None
        text = b[:exc.start].decode("utf-8")
    if not text:
        return None
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f\v\b\x1b")
    return None if controls > len(text) // 100 else text


def _markup(text: str) -> Detection | None:
    s = text.lstrip()
    prolog = s.startswith("<?xml")
    if prolog:
        end = s.find("?>")
        s = s[end + 2:].lstrip() if end >= 0 else ""
    while s.startswith("<!--"):
        end = s.find("-->")
        s = s[end + 3:].lstrip() if end >= 0 else ""
    low = s[:64].lower()
    if low.startswith(("<!doctype html", "<html")):
        return _found("html", 0.9)
    if low.startswith(("<head", "<body", "<meta", "<title", "<div", "<p>", "<script")):
        return _found("html", 0.6)
    if low.startswith(("<svg", "<!doctype svg")):
        return _found("svg", 0.9 if prolog else 0.8)
    if prolog:
        return _found("xml", 0.9)
    if low[:1] == "<" and (low[1:2].isalpha() or low[1:2] in ("_", "!")):
        return _found("xml", 0.5)
    return None


def _json(text: str, complete: bool) -> Detection | None:
    s = text.strip()
    if s[:1] not in ("{", "["):
        return None
    if complete:
        try:
            json.loads(s)
        except ValueError:
            return None
        return _found("json", 0.9)
    nxt = s[1:].lstrip()[:1]  # cut short: judge by how it opens
    if (s[0] == "{" and nxt in ('"', "}")) or (s[0] == "[" and nxt and nxt in '{["-]0123456789tfn'):
        return _found("json", 0.6)
    return None


def _text(b: bytes, complete: bool) -> Detection | None:
    text = _decode(b, complete)
    if text is None:
        return None
    return _json(text, complete) or _markup(text) or _found("text", 0.5)


# --- entry points ---------------------------------------------------------------------------

def by_magic(head: bytes, complete: bool = True) -> Detection | None:
    """The type ``head``'s signature names, or None; ``complete``: head is the whole file."""
    for magic, kind, confidence in PREFIXES:
        if head.startswith(magic):
            return _found(kind, confidence)
    for check in CHECKS:
        found = check(head)
        if found is not None:
            return found
    return _text(head, complete)


def by_extension(file_name: str | None) -> Detection | None:
    if not file_name:
        return None
    ext = os.path.splitext(file_name)[1].lower().lstrip(".")
    kind = EXTENSIONS.get(ext)
    return _found(kind, HINT_CONFIDENCE) if kind else None


def detect(head: bytes, file_name: str | None = None, complete: bool = True) -> Detection:
    """The type of a file from its first bytes (``head``).

    Signatures decide. ``file_name``'s extension is only a hint: it narrows a general
    finding (text -> csv, zip -> jar), nudges up the confidence of a matching one, and
    alone (no signature matched) names a type at confidence ``HINT_CONFIDENCE``.
    ``complete`` says ``head`` is the whole file (JSON is then parsed, not guessed).
    """
    found = by_magic(bytes(head), complete)
    hint = by_extension(file_name)
    if found is None:
        return hint or UNKNOWN
    if hint is None:
        return found
    if hint.type == found.type:
        return Detection(found.type, found.mime_type, min(1.0, found.confidence + 0.1))
    if REFINES.get(hint.type) == found.type:
        return Detection(hint.type, hint.mime_type, min(found.confidence, 0.6))
    return found


def needs_more(head: bytes) -> bool:
    """Whether a longer head could change ``detect``'s answer (a ZIP's later entries)."""
    return head[:4] == b"PK\x03\x04"
