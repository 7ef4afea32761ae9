"""The file channel from a PyScript page: real Chromium, real Workers, real Pyodide."""

from __future__ import annotations

import hashlib
import random

import pytest

from conftest import PAGE_HELPERS, Harness
from samples import bmp, gif, jpeg, ooxml, png, webp

SIZE = 10 * 1024 * 1024 + 4321  # not a multiple of the chunk size
MiB = 1024 * 1024
DATA = random.Random(11).randbytes(SIZE)


@pytest.fixture(scope="module")
def files(harness: Harness) -> Harness:
    """The page's default bridge, booted, and helpers to build data and Files."""
    harness.py("""
        import asyncio, hashlib, random, time, js
        import workerbridge
        from workerbridge import WorkerBridge, SharedCancellation
        FILES = await WorkerBridge.default().start()
        DATA = random.Random(11).randbytes(10 * 1024 * 1024 + 4321)

        def to_js(data):
            u8 = js.Uint8Array.new(len(data))
            u8.assign(data)
            return u8

        def to_file(data, name, last_modified=None, mime=""):
            opts = js.Object.new()
            opts.type = mime
            if last_modified is not None:
                opts.lastModified = last_modified
            return js.File.new([to_js(data)], name, opts)

        async def canvas_blob(width, height, mime):
            canvas = js.OffscreenCanvas.new(width, height)
            g = canvas.getContext("2d")
            g.fillStyle = "#3a7"
            g.fillRect(0, 0, width // 2, height // 2)
            opts = js.Object.new()
            opts.type = mime
            return await canvas.convertToBlob(opts)

        async def bitmap_size(blob):
            bitmap = await js.createImageBitmap(blob)
            return [bitmap.width, bitmap.height]

        async def error_of(call):
            try:
                await call
                return "no error"
            except workerbridge.WorkerBridgeError as exc:
                return [type(exc).__name__, str(exc)]
    """)
    harness.py(PAGE_HELPERS)
    return harness


def test_the_page_builds_the_same_data_as_the_host(files: Harness):
    assert files.py("hashlib.sha256(DATA).hexdigest()") == hashlib.sha256(DATA).hexdigest()


def test_hash_file_matches_hashlib(files: Harness):
    got = files.py("""
        [await FILES.file.hash_file(DATA),
         await WorkerBridge.file.hash_file(DATA[:1000], "sha1"),
         await FILES.file.hash_file(to_file(DATA, "d.bin"), "SHA-512"),
         await FILES.file.hash_file(to_js(DATA[:5 * 1024 * 1024]), "SHA-384"),
         await FILES.file.hash_file(b"")]
    """)
    assert got == [
        {"hash": hashlib.sha256(DATA).hexdigest(), "algorithm": "SHA-256"},
        {"hash": hashlib.sha1(DATA[:1000]).hexdigest(), "algorithm": "SHA-1"},
        {"hash": hashlib.sha512(DATA).hexdigest(), "algorithm": "SHA-512"},
        {"hash": hashlib.sha384(DATA[:5 * MiB]).hexdigest(), "algorithm": "SHA-384"},
        {"hash": hashlib.sha256(b"").hexdigest(), "algorithm": "SHA-256"},
    ]


def expected_metadata(name: str | None) -> dict[str, object]:
    parts = [DATA[i:i + MiB] for i in range(0, SIZE, MiB)]
    return {"file_name": name, "size": SIZE, "chunk_size": MiB, "count": len(parts),
            "sizes": [len(p) for p in parts],
            "chunk_hashes": [hashlib.sha256(p).hexdigest() for p in parts],
            "hash": hashlib.sha256(DATA).hexdigest(), "algorithm": "SHA-256", "version": 1}


def test_chunk_then_merge_round_trips_from_bytes_and_from_a_file(files: Harness):
    results = files.py("""
        out = []
        for source in (DATA, to_file(DATA, "ten.bin")):
            chunked = await FILES.file.chunk_file(source, chunk_size=1024 * 1024)
            chunks, meta = chunked["chunks"], chunked["metadata"]
            # bytes from bytes; from a File, ArrayBuffers that never entered Python
            kinds = sorted({type(c).__name__ if isinstance(c, bytes)
                            else str(js.Object.prototype.toString.call(c)) for c in chunks})
            page_hashes = [hashlib.sha256(c if isinstance(c, bytes)
                                          else js.Uint8Array.new(c).to_bytes()).hexdigest()
                           for c in chunks]
            merged = await FILES.file.merge_chunks(chunks, meta)
            out.append({"meta": meta, "types": kinds, "page_hashes": page_hashes,
                        "merged_ok": merged == DATA, "merged_type": type(merged).__name__,
                        "moved": all(isinstance(c, bytes) or c.byteLength == 0
                                     for c in chunks)})
            byte_chunks = byte_chunks if source is not DATA else chunks
        # Chunks handed back as ArrayBuffers and Blobs merge too (and without metadata).
        buffers = [to_js(c).buffer for c in byte_chunks]
        blobs = [js.Blob.new([to_js(c)]) for c in byte_chunks]
        out.append([await FILES.file.merge_chunks(buffers, meta) == DATA,
                    all(b.byteLength == 0 for b in buffers),  # moved to the worker
                    await FILES.file.merge_chunks(blobs) == DATA])
        out
    """)
    for result, name, kind in zip(results[:2], (None, "ten.bin"),
                                  ("bytes", "[object ArrayBuffer]"), strict=True):
        assert result["meta"] == expected_metadata(name)
        assert result["page_hashes"] == result["meta"]["chunk_hashes"]
        assert result["types"] == [kind] and result["merged_type"] == "bytes"
        assert result["merged_ok"] is True and result["moved"] is True
    assert results[2] == [True, True, True]


def test_tampered_chunks_raise_integrity_error_naming_the_chunk(files: Harness):
    errors = files.py("""
        chunked = await FILES.file.chunk_file(DATA, chunk_size=1024 * 1024)
        c, meta = chunked["chunks"], chunked["metadata"]
        flipped = bytearray(c[4]); flipped[100] ^= 1
        cases = {
            "reordered": [c[0], c[2], c[1], *c[3:]],
            "missing": c[:5] + c[6:],
            "missing_last": c[:-1],
            "modified": [*c[:4], bytes(flipped), *c[5:]],
            "truncated": [*c[:7], c[7][:-10], *c[8:]],
            "extra": [*c, b"more"],
        }
        out = {k: await error_of(FILES.file.merge_chunks(v, meta)) for k, v in cases.items()}
        bad_meta = dict(meta, hash="0" * 64)
        out["whole"] = await error_of(FILES.file.merge_chunks(c, bad_meta))
        out["after"] = await FILES.file.merge_chunks(c, meta) == DATA
        out
    """)
    count = len(expected_metadata(None)["sizes"])
    expected_index = {"reordered": 1, "missing": 5, "missing_last": count - 1, "modified": 4,
                      "truncated": 7, "extra": count}
    for case, index in expected_index.items():
        kind, message = errors[case]
        assert kind == "IntegrityError", case
        assert f"chunk {index} " in message, (case, message)
    assert errors["whole"][0] == "IntegrityError" and "whole-file hash" in errors["whole"][1]
    assert errors["after"] is True


def test_detect_type_from_bytes_buffers_and_files(files: Harness):
    samples = {"png": png(), "jpeg": jpeg(), "gif": gif(), "webp": webp("VP8L", 9, 9),
               "docx": ooxml("word", big_first=20_000)}
    got = files.py(f"""
        import gzip, json
        samples = {{k: bytes.fromhex(v) for k, v in {
            {k: v.hex() for k, v in samples.items()}!r}.items()}}
        out = {{}}
        for kind, data in samples.items():
            buf = to_js(data).buffer
            out[kind] = [await FILES.file.detect_type(data),
                         await FILES.file.detect_type(to_file(data, "f")),
                         await FILES.file.detect_type(buf),
                         buf.byteLength == len(data)]  # read, not moved
        out["gzip"] = await FILES.file.detect_type(gzip.compress(DATA[:1000]))
        out["json"] = await FILES.file.detect_type(to_file(json.dumps({{"a": [1]}}).encode(), "x"))
        out["csv"] = await FILES.file.detect_type(to_file(b"a,b\\n1,2\\n", "t.csv"))
        out["unknown"] = await FILES.file.detect_type(DATA[:3000])
        out["hinted"] = await FILES.file.detect_type(DATA[:3000], "song.flac")
        out
    """)
    for kind in samples:
        by_bytes, by_file, by_buffer, kept = got[kind]
        assert by_bytes == by_file == by_buffer, kind
        assert by_bytes["type"] == kind and by_bytes["confidence"] >= 0.9 and kept, kind
    assert got["docx"][0]["mime_type"].endswith("wordprocessingml.document")
    assert got["gzip"] == {"type": "gzip", "mime_type": "application/gzip", "confidence": 0.95}
    assert got["json"]["type"] == "json" and got["csv"]["type"] == "csv"
    assert got["unknown"] == {"type": "unknown", "mime_type": "application/octet-stream",
                              "confidence": 0.0}
    assert got["hinted"] == {"type": "flac", "mime_type": "audio/flac", "confidence": 0.2}


def test_read_metadata_of_a_png_file_with_name_and_time(files: Harness):
    meta, expected_hash, size, bitmap = files.py("""
        blob = await canvas_blob(37, 23, "image/png")
        data = (await blob.arrayBuffer()).to_bytes()
        f = to_file(data, "picture.png", last_modified=1_700_000_000_123)
        [await FILES.file.read_metadata(f), hashlib.sha256(data).hexdigest(), len(data),
         await bitmap_size(f)]
    """)
    assert bitmap == [37, 23]
    assert meta == {"name": "picture.png", "size": size, "type": "png", "mime_type": "image/png",
                    "last_modified": 1_700_000_000_123, "hash": expected_hash,
                    "width": 37, "height": 23}


def test_read_metadata_dimensions_match_the_browsers_decoder(files: Harness):
    host_hex = {"gif": gif(13, 7).hex(), "bmp": bmp(6, 5, top_down=True).hex()}
    rows = files.py(f"""
        out = []
        for mime in ("image/jpeg", "image/webp", "image/png"):
            blob = await canvas_blob(301, 17, mime)
            meta = await FILES.file.read_metadata(blob)
            out.append([meta["type"], meta["width"], meta["height"], await bitmap_size(blob),
                        meta["name"], meta["last_modified"]])
        host = {{k: bytes.fromhex(v) for k, v in {host_hex!r}.items()}}
        for kind, data in host.items():
            meta = await FILES.file.read_metadata(data, file_name="img." + kind)
            out.append([meta["type"], meta["width"], meta["height"],
                        await bitmap_size(js.Blob.new([to_js(data)])), meta["name"], None])
        text = await FILES.file.read_metadata(b"hello", "a.txt")
        out.append([text["type"], text["width"], text["height"], None, text["name"], None])
        out
    """)
    for kind, width, height, bitmap, _, _ in rows[:-1]:
        assert [width, height] == bitmap, kind
    assert [r[0] for r in rows] == ["jpeg", "webp", "png", "gif", "bmp", "text"]
    assert rows[0][4] is None and rows[0][5] is None  # a Blob has no name or time
    assert rows[3][4] == "img.gif"
    assert rows[-1][1:3] == [None, None]


def test_jpeg_with_a_frame_header_far_from_the_start(files: Harness):
    data = jpeg(1234, 567, padding=300_000)
    meta = files.py(f"""
        data = bytes.fromhex({data.hex()!r})
        await FILES.file.read_metadata(to_file(data, "big-exif.jpg"))
    """)
    assert (meta["type"], meta["width"], meta["height"]) == ("jpeg", 1234, 567)
    assert meta["hash"] == hashlib.sha256(data).hexdigest()


def test_chunk_file_reports_progress(files: Harness):
    reports, count = files.py("""
        seen = []
        buf = js.Uint8Array.new(64 * 1024 * 1024).buffer
        out = await FILES.file.chunk_file(buf, on_progress=lambda p: seen.append([p.done, p.total, p.percent]))
        [seen, out["metadata"]["count"]]
    """)
    assert count == 16  # the default chunk size is 4 MiB
    assert len(reports) >= 3, "expected intermediate progress while chunking 64 MB"
    dones = [r[0] for r in reports]
    assert dones == sorted(dones)
    assert all(r[1] == 64 * MiB for r in reports)
    assert reports[-1][2] == 100.0 and reports[-1][0] == 64 * MiB


def test_cancelling_chunk_file_stops_it_and_the_worker_keeps_serving(files: Harness):
    outcome, hashed = files.py("""
        token = SharedCancellation()
        buf = js.Uint8Array.new(256 * 1024 * 1024).buffer
        task = asyncio.ensure_future(FILES.file.chunk_file(buf, cancel=token))
        await asyncio.sleep(0.2)
        outcome, _ = await cancel_by_token(task, token)
        [outcome, await FILES.file.hash_file(b"abc")]
    """)
    assert outcome == "cancelled"
    assert hashed["hash"] == hashlib.sha256(b"abc").hexdigest()


def test_bad_inputs_raise_typed_errors_and_the_worker_keeps_serving(files: Harness):
    got = files.py("""
        chunked = await FILES.file.chunk_file(b"abcdef", chunk_size=4)
        detached = js.ArrayBuffer.new(8)
        await FILES.file.hash_file(detached)
        calls = [
            FILES.file.hash_file("text"),
            FILES.file.hash_file(b"x", "MD5"),
            FILES.file.chunk_file(b"x", chunk_size=0),
            FILES.file.chunk_file(b"x", chunk_size=2.5),
            FILES.file.chunk_file(DATA, chunk_size=16),
            FILES.file.chunk_file(js.Object.new()),
            FILES.file.merge_chunks(b"abc"),
            FILES.file.merge_chunks([]),
            FILES.file.merge_chunks([b"ab", "cd"]),
            FILES.file.merge_chunks(chunked["chunks"], {"version": 1}),
            FILES.file.detect_type(b""),
            FILES.file.detect_type(js.Blob.new([])),
            FILES.file.detect_type(12),
            FILES.file.detect_type(detached),
            FILES.file.read_metadata(None),
            FILES.file.read_metadata(b"x", file_name=5),
            FILES.request("file", "merge_chunks", {"chunks": [b"ab"], "metadata": {"version": 7}}),
            FILES.request("file", "chunk_file", {"data": "abc"}),
        ]
        out = [(await error_of(c))[0] for c in calls]
        out.append((await FILES.file.merge_chunks(chunked["chunks"], chunked["metadata"])).decode())
        out.append(not FILES.pool.pending_ids() and FILES.pool.pending() == 0)
        out
    """)
    assert got == [
        "InvalidTypeError", "InvalidInputError", "InvalidInputError", "InvalidTypeError",
        "InvalidInputError", "InvalidTypeError", "InvalidTypeError", "InvalidInputError",
        "InvalidTypeError", "InvalidInputError", "InvalidInputError", "InvalidInputError",
        "InvalidTypeError", "InvalidInputError", "InvalidTypeError", "InvalidTypeError",
        "InvalidInputError", "InvalidTypeError", "abcdef", True]


def test_round_trip_without_cross_origin_isolation(plain_harness: Harness):
    got = plain_harness.py("""
        import random, hashlib, js
        from workerbridge import WorkerBridge
        data = random.Random(3).randbytes(3 * 1024 * 1024 + 5)
        out = await WorkerBridge.file.chunk_file(data, chunk_size=1024 * 1024)
        [js.crossOriginIsolated, out["metadata"]["count"],
         await WorkerBridge.file.merge_chunks(out["chunks"], out["metadata"]) == data,
         (await WorkerBridge.file.detect_type(b"%PDF-1.7\\n"))["type"]]
    """)
    assert got == [False, 4, True, "pdf"]
