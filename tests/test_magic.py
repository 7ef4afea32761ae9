"""File type detection and image dimensions, on real minimal samples built here."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from samples import (
    bmp,
    ebml,
    epub,
    gif,
    jpeg,
    mp3_frames,
    ooxml,
    pdf,
    pe,
    png,
    segment,
    sqlite_db,
    tarball,
    wav,
    webp,
    zipped,
)
from workerbridge.channels import magic as _magic
from workerbridge.channels.imagesize import NeedMore, image_size, jpeg_size
from workerbridge.channels.magic import HEAD_SIZE, detect

# --- sample builders ------------------------------------------------------------------------


SAMPLES = {
    "png": lambda: png(),
    "jpeg": lambda: jpeg(),
    "gif": lambda: gif(),
    "webp": lambda: webp("VP8 ", 16, 9),
    "bmp": lambda: bmp(),
    "tiff": lambda: b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 0) + bytes(4),
    "tiff-be": lambda: b"MM\x00*\x00\x00\x00\x08" + bytes(6),
    "ico": lambda: b"\x00\x00\x01\x00\x01\x00" + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, 68, 22) + bytes(68),
    "psd": lambda: b"8BPS\x00\x01" + bytes(6) + struct.pack(">HIIHH", 3, 4, 5, 8, 3) + bytes(16),
    "pdf": pdf,
    "zip": lambda: zipped(["a.txt", "b.txt"]),
    "gzip": lambda: gzip.compress(b"hello" * 100),
    "bzip2": lambda: bz2.compress(b"hello" * 100),
    "bzip2-empty": lambda: bz2.compress(b""),
    "xz": lambda: lzma.compress(b"hello"),
    "7z": lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(24),
    "rar": lambda: b"Rar!\x1a\x07\x00\xcf\x90\x73\x00\x00\x0d" + bytes(20),
    "rar5": lambda: b"Rar!\x1a\x07\x01\x00" + bytes(20),
    "tar": lambda: tarball(tarfile.USTAR_FORMAT),
    "tar-gnu": lambda: tarball(tarfile.GNU_FORMAT),
    "tar-pax": lambda: tarball(tarfile.PAX_FORMAT),
    "mp3": lambda: b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10) + mp3_frames(),
    "mp3-sync": lambda: mp3_frames(),
    "mp4": lambda: struct.pack(">I", 24) + b"ftypisom\x00\x00\x02\x00isomiso2" + struct.pack(">I", 8) + b"free",
    "wav": wav,
    "ogg": lambda: b"OggS\x00\x02" + bytes(20) + b"\x01\x1e\x01vorbis" + bytes(20),
    "flac": lambda: b"fLaC\x80\x00\x00\x22" + bytes(34),
    "flac-id3": lambda: b"ID3\x03\x00\x00\x00\x00\x00\x04" + bytes(4) + b"fLaC\x80\x00\x00\x22" + bytes(34),
    "webm": lambda: ebml(b"webm"),
    "mkv": lambda: ebml(b"matroska"),
    "elf": lambda: b"\x7fELF\x02\x01\x01\x00" + bytes(8) + struct.pack("<HH", 2, 62) + bytes(40),
    "exe": pe,
    "wasm": lambda: b"\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00",
    "docx": lambda: ooxml("word"),
    "xlsx": lambda: ooxml("xl"),
    "pptx": lambda: ooxml("ppt"),
    "epub": lambda: epub(),
    "json": lambda: json.dumps({"a": [1, 2, {"b": None}], "c": "é"}).encode(),
    "json-array": lambda: b"  [1, 2, 3]\n",
    "xml": lambda: b'<?xml version="1.0" encoding="UTF-8"?>\n<note><to>x</to></note>',
    "svg": lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>',
    "html": lambda: b"<!DOCTYPE html>\n<html><head><title>t</title></head><body></body></html>",
    "html-lower": lambda: b"\n<!-- page -->\n<html lang='en'><body>hi</body></html>",
    "text": lambda: "Grüße, plain text.\nSecond line.\n".encode(),
}

EXPECTED = {
    "png": ("png", "image/png"), "jpeg": ("jpeg", "image/jpeg"), "gif": ("gif", "image/gif"),
    "webp": ("webp", "image/webp"), "bmp": ("bmp", "image/bmp"), "tiff": ("tiff", "image/tiff"),
    "tiff-be": ("tiff", "image/tiff"), "ico": ("ico", "image/vnd.microsoft.icon"),
    "psd": ("psd", "image/vnd.adobe.photoshop"), "pdf": ("pdf", "application/pdf"),
    "zip": ("zip", "application/zip"), "gzip": ("gzip", "application/gzip"),
    "bzip2": ("bzip2", "application/x-bzip2"), "bzip2-empty": ("bzip2", "application/x-bzip2"),
    "xz": ("xz", "application/x-xz"), "7z": ("7z", "application/x-7z-compressed"),
    "rar": ("rar", "application/vnd.rar"), "rar5": ("rar", "application/vnd.rar"),
    "tar": ("tar", "application/x-tar"), "tar-gnu": ("tar", "application/x-tar"),
    "tar-pax": ("tar", "application/x-tar"), "mp3": ("mp3", "audio/mpeg"),
    "mp3-sync": ("mp3", "audio/mpeg"), "mp4": ("mp4", "video/mp4"), "wav": ("wav", "audio/wav"),
    "ogg": ("ogg", "audio/ogg"), "flac": ("flac", "audio/flac"), "flac-id3": ("flac", "audio/flac"),
    "webm": ("webm", "video/webm"), "mkv": ("mkv", "video/x-matroska"),
    "elf": ("elf", "application/x-elf"),
    "exe": ("exe", "application/vnd.microsoft.portable-executable"),
    "wasm": ("wasm", "application/wasm"),
    "docx": ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "xlsx": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "pptx": ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    "epub": ("epub", "application/epub+zip"),
    "json": ("json", "application/json"), "json-array": ("json", "application/json"),
    "xml": ("xml", "application/xml"), "svg": ("svg", "image/svg+xml"),
    "html": ("html", "text/html"), "html-lower": ("html", "text/html"),
    "text": ("text", "text/plain"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_detects_each_format_from_its_first_bytes(name: str):
    data = SAMPLES[name]()
    head = data[:HEAD_SIZE]
    found = detect(head, complete=len(head) == len(data))
    assert (found.type, found.mime_type) == EXPECTED[name]
    assert 0.4 <= found.confidence <= 1.0


def test_sqlite_database_from_a_real_file(tmp_path: Path):
    found = detect(sqlite_db(tmp_path)[:HEAD_SIZE])
    assert (found.type, found.mime_type, found.confidence) == \
        ("sqlite", "application/vnd.sqlite3", 1.0)


@pytest.mark.parametrize("magic", [b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf",
                                   b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbf", b"\xbf\xba\xfe\xca",
                                   b"\xbe\xba\xfe\xca"])
def test_every_mach_o_magic(magic: bytes):
    assert detect(magic + struct.pack(">II", 7, 3) + bytes(32)).type == "macho"


def test_fat_mach_o_and_java_class_share_cafebabe():
    fat = b"\xca\xfe\xba\xbe" + struct.pack(">I", 2) + bytes(40)
    java = b"\xca\xfe\xba\xbe\x00\x00\x00\x41" + bytes(40)  # class file, major version 65
    assert detect(fat).type == "macho"
    assert (detect(java).type, detect(java).mime_type) == ("class", "application/java-vm")


@pytest.mark.parametrize("brand,kind", [(b"M4A ", "m4a"), (b"qt  ", "mov"), (b"heic", "heic"),
                                        (b"avif", "avif"), (b"3gp4", "3gp"), (b"mp42", "mp4")])
def test_mp4_family_by_major_brand(brand: bytes, kind: str):
    box = struct.pack(">I", 20) + b"ftyp" + brand + b"\x00\x00\x00\x00" + brand
    assert detect(box + bytes(8)).type == kind


def test_office_document_whose_parts_lie_past_the_first_kilobytes():
    data = ooxml("word", big_first=20_000)
    assert _magic.needs_more(data[:HEAD_SIZE])
    assert detect(data[:HEAD_SIZE], complete=False).type == "zip"
    assert detect(data[:_magic.ZIP_HEAD_SIZE], complete=False).type == "docx"
    # A truncated head still reaches docx when the extension says so, at lower confidence.
    hinted = detect(data[:HEAD_SIZE], "report.docx", complete=False)
    assert hinted.type == "docx" and hinted.confidence <= 0.6


def test_a_zip_that_only_mentions_word_is_not_a_document():
    assert detect(zipped(["notes/word/readme.txt"])).type == "zip"


def test_streamed_zip_entries_are_followed_through_data_descriptors():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("[Content_Types].xml", "xl/workbook.xml"):
            with z.open(name, "w", force_zip64=False) as f:
                f.write(b"<x/>" * 50)
    raw = buf.getvalue()
    # Mark the first entry as streamed (sizes after the data) the way streaming writers do.
    streamed = bytearray(raw)
    flags = struct.unpack_from("<H", streamed, 6)[0]
    struct.pack_into("<H", streamed, 6, flags | 0x08)
    struct.pack_into("<I", streamed, 18, 0)
    assert detect(bytes(streamed)).type == "xlsx"


def test_mp3_frame_sync_needs_a_second_frame_for_confidence():
    one = detect(mp3_frames(1)[:100], complete=False)
    two = detect(mp3_frames(2))
    assert one.type == two.type == "mp3"
    assert one.confidence < two.confidence
    assert detect(b"\xff\xf1\x50\x80" + bytes(100)).type != "mp3"  # AAC ADTS: layer bits 00


def test_text_json_and_markup_boundaries():
    assert detect(b'{"a": 1').type == "text"  # broken JSON, read whole: plain text
    assert detect(b'{"a": 1, "b": [', complete=False).type == "json"  # cut short: judged by its start
    assert detect(b"<svg xmlns='http://www.w3.org/2000/svg'/>").type == "svg"
    assert detect(b"<root><a/></root>").type == "xml"
    assert detect(b"\xef\xbb\xbfplain with BOM").type == "text"
    assert detect("é".encode()[:1], complete=False).type != "text"  # one cut byte is no text
    cut = ("x" * 10 + "é").encode()[:-1]
    assert detect(cut, complete=False).type == "text"  # a character cut at the head's end
    assert detect(cut, complete=True).type != "text"
    assert detect(b"MZ is where this text starts, a long line " * 3).type == "text"


def test_unknown_binary_and_empty():
    noise = bytes((i * 73 + 41) % 256 for i in range(512))
    assert detect(noise) == _magic.UNKNOWN
    assert detect(noise).as_dict() == \
        {"type": "unknown", "mime_type": "application/octet-stream", "confidence": 0.0}
    assert detect(b"") == _magic.UNKNOWN


def test_extension_is_only_a_hint():
    noise = bytes((i * 73 + 41) % 256 for i in range(512))
    hinted = detect(noise, "photo.PNG")
    assert (hinted.type, hinted.confidence) == ("png", _magic.HINT_CONFIDENCE)
    assert detect(png(), "notes.txt").type == "png"  # a signature beats the name
    assert detect(png(), "image.png").confidence == 1.0
    weak = detect(mp3_frames(1)[:100], complete=False)
    assert detect(mp3_frames(1)[:100], "song.mp3", complete=False).confidence > weak.confidence
    csv = detect(b"a,b,c\n1,2,3\n", "table.csv")
    assert (csv.type, csv.mime_type) == ("csv", "text/csv")
    assert detect(zipped(["META-INF/MANIFEST.MF", "a.class"])).type == "jar"
    assert detect(zipped(["a.class"]), "lib.jar").type == "jar"
    assert detect(b"a,b\n", "no-extension").type == "text"


# --- dimensions -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind,data,size", [
    ("png", png(7, 5), (7, 5)),
    ("gif", gif(5, 3), (5, 3)),
    ("bmp", bmp(3, 2), (3, 2)),
    ("bmp", bmp(4, 6, top_down=True), (4, 6)),
    ("bmp", b"BM" + bytes(12) + struct.pack("<IHHHH", 12, 9, 8, 1, 24) + bytes(8), (9, 8)),
    ("webp", webp("VP8 ", 320, 240), (320, 240)),
    ("webp", webp("VP8L", 1000, 16383), (1000, 16383)),
    ("webp", webp("VP8X", 70000, 3), (70000, 3)),
    ("jpeg", jpeg(640, 480), (640, 480)),
    ("jpeg", jpeg(17, 4000, sof=0xC2), (17, 4000)),
])
def test_image_size(kind: str, data: bytes, size: tuple[int, int]):
    assert detect(data[:HEAD_SIZE]).type == kind
    assert image_size(kind, data[:HEAD_SIZE]) == size


def test_gif_sample_is_well_formed():
    data = gif(5, 3)
    assert data.endswith(b"\x00;") and data[10] & 0x80  # a global colour table, a trailer
    assert image_size("png", data) is None and image_size("mp4", data) is None


def test_jpeg_frame_header_past_the_head_is_found_window_by_window():
    data = jpeg(1920, 1080, padding=150_000)
    assert image_size("jpeg", data[:HEAD_SIZE]) is None
    found = jpeg_size(data[:HEAD_SIZE])
    steps = 0
    window = 100  # tiny windows: segment headers straddle their edges
    while isinstance(found, NeedMore):
        steps += 1
        found = jpeg_size(data[found.offset:found.offset + window], found.offset)
    assert found == (1920, 1080) and steps >= 3


def test_jpeg_without_frame_header_and_malformed():
    no_frame = b"\xff\xd8" + segment(0xE0, b"JFIF\x00") + segment(0xDA, b"\x00") + b"\xff\xd9"
    assert jpeg_size(no_frame) is None
    assert jpeg_size(b"\xff\xd8\x00\x00\x00\x00") is None
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00\x10") == NeedMore(20)  # past the APP0 segment
    assert jpeg_size(b"\xff\xd8\xff") == NeedMore(2)  # its header is cut
    assert jpeg_size(png()) is None
