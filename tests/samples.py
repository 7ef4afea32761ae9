"""Real minimal files of many formats, built with the stdlib, for the type-detection and
metadata tests."""

from __future__ import annotations

import io
import sqlite3
import struct
import tarfile
import wave
import zipfile
import zlib
from pathlib import Path


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # Each row: filter type 0, then RGB pixels.
    rows = b"".join(b"\x00" + bytes((x * 40 + y * 60 + c) % 256 for x in range(width)
                                    for c in range(3)) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def gif(width: int = 5, height: int = 3) -> bytes:
    """A real GIF89a: 2-colour table, LZW data of literal codes with a clear code every
    two so the code width stays at 3 bits."""
    codes: list[int] = []
    pixels = [(x + y) % 2 for y in range(height) for x in range(width)]
    for i in range(0, len(pixels), 2):
        codes += [4, *pixels[i:i + 2]]
    codes.append(5)
    bits = value = 0
    packed = bytearray()
    for code in codes:
        value |= code << bits
        bits += 3
        while bits >= 8:
            packed.append(value & 0xFF)
            value >>= 8
            bits -= 8
    if bits:
        packed.append(value)
    blocks = b"".join(bytes([len(packed[i:i + 255])]) + packed[i:i + 255]
                      for i in range(0, len(packed), 255))
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
            + b"\xff\xff\xff\x00\x00\x00"
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
            + b"\x02" + blocks + b"\x00;")


def bmp(width: int = 3, height: int = 2, top_down: bool = False) -> bytes:
    row = (bytes([10, 20, 30]) * width).ljust((3 * width + 3) // 4 * 4, b"\x00")
    pixels = row * height
    info = struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height, 1, 24, 0,
                       len(pixels), 2835, 2835, 0, 0)
    head = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return head + info + pixels


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(width: int = 640, height: int = 480, sof: int = 0xC0, padding: int = 0) -> bytes:
    """A baseline (or other SOFn) JPEG stream: JFIF, optional large APPn segments, DQT,
    SOF, DHT, SOS, a few bytes of scan data, EOI."""
    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    fillers = b""
    while padding > 0:
        size = min(padding, 60000)
        fillers += segment(0xE1, b"Exif\x00\x00" + bytes(size))
        padding -= size
    dqt = segment(0xDB, b"\x00" + bytes(range(1, 65)))
    frame = segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    dht = segment(0xC4, b"\x00" + bytes([0, 1] + [0] * 14) + b"\x00")
    sos = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"\xff\xd8" + app0 + fillers + dqt + frame + dht + sos + b"\x12\x34\x56" + b"\xff\xd9"


def riff(form: bytes, body: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + form + body


def webp(kind: str, width: int, height: int) -> bytes:
    if kind == "VP8 ":
        data = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(8)
    elif kind == "VP8L":
        bits = (width - 1) | (height - 1) << 14 | 1 << 28
        data = b"\x2f" + struct.pack("<I", bits) + bytes(8)
    else:
        data = b"\x10\x00\x00\x00" + (width - 1).to_bytes(3, "little") \
            + (height - 1).to_bytes(3, "little")
    return riff(b"WEBP", kind.encode() + struct.pack("<I", len(data)) + data)


def zipped(names: list[str], big_first: int = 0) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        if big_first:  # incompressible bytes push the later entries past the first KBs
            z.writestr("media/blob.bin", bytes((i * 7919) % 251 for i in range(big_first)),
                       compress_type=zipfile.ZIP_STORED)
        for name in names:
            z.writestr(name, f"<x>{name}</x>")
    return buf.getvalue()


def ooxml(part: str, big_first: int = 0) -> bytes:
    return zipped(["[Content_Types].xml", "_rels/.rels", f"{part}/document.xml"], big_first)


def ebml(doctype: bytes) -> bytes:
    def element(eid: bytes, body: bytes) -> bytes:
        return eid + bytes([0x80 | len(body)]) + body

    header = element(b"\x42\x86", b"\x01") + element(b"\x42\xf7", b"\x01") \
        + element(b"\x42\x82", doctype) + element(b"\x42\x87", b"\x04")
    return element(b"\x1a\x45\xdf\xa3", header) + b"\x18\x53\x80\x67\x01" + bytes(16)


def mp3_frames(n: int = 3) -> bytes:
    # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417-byte frames.
    return (b"\xff\xfb\x90\x64" + bytes(413)) * n


def wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(200))
    return buf.getvalue()


def sqlite_db(tmp_path: Path) -> bytes:
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("create table t (x)")
    con.execute("insert into t values (1)")
    con.commit()
    con.close()
    return path.read_bytes()


def tarball(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        data = png()  # a PNG inside must not win over the archive around it
        info = tarfile.TarInfo("image.png")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pe() -> bytes:
    dos = bytearray(b"MZ" + bytes(0x80 - 2))
    dos[0x3C:0x40] = struct.pack("<I", 0x80)
    return bytes(dos) + b"PE\x00\x00" + struct.pack("<HH", 0x8664, 1) + bytes(64)


def pdf() -> bytes:
    return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n"
            b"%%EOF\n")


def epub() -> bytes:
    """An EPUB: a stored ``mimetype`` entry first, holding the media type."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", "<container/>", compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


# --- detection ------------------------------------------------------------------------------
