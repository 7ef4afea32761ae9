"""The file channel's handlers on the host, through the in-process loopback transport."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
import workerbridge.workers.file  # noqa: F401 - registers the file.* handlers

from conftest import run
from samples import jpeg, png
from workerbridge import IntegrityError, InvalidInputError, WorkerBridge
from workerbridge.pool.loopback import LoopbackTransport

DATA = random.Random(7).randbytes(2_500_000)  # spans several 2 MB read chunks


def call(fn: Any) -> Any:
    async def main() -> Any:
        b = await WorkerBridge(transport_factory=LoopbackTransport).start()
        try:
            return await fn(b.file)
        finally:
            await b.close()

    return run(main())


def test_chunk_then_merge_round_trips_with_hashes():
    async def go(f: Any) -> Any:
        out = await f.chunk_file(DATA, chunk_size=1_000_000, file_name="r.bin")
        return out, await f.merge_chunks(out["chunks"], out["metadata"])

    out, merged = call(go)
    meta = out["metadata"]
    assert [len(c) for c in out["chunks"]] == meta["sizes"] == [1_000_000, 1_000_000, 500_000]
    assert meta["chunk_hashes"] == [hashlib.sha256(c).hexdigest() for c in out["chunks"]]
    assert meta["hash"] == hashlib.sha256(DATA).hexdigest()
    assert meta["file_name"] == "r.bin" and meta["count"] == 3 and meta["size"] == len(DATA)
    assert merged == DATA


@pytest.mark.parametrize("tamper,index", [
    (lambda c: [c[0], c[2], c[1]], 1),                           # reordered
    (lambda c: [c[0], c[2]], 1),                                 # middle chunk missing
    (lambda c: c[:2], 2),                                        # last chunk missing
    (lambda c: [c[0], c[1][:-1], c[2]], 1),                      # truncated
    (lambda c: [c[0], c[1], c[2][:7] + b"!" + c[2][8:]], 2),     # one byte changed
    (lambda c: [*c, b"extra"], 3),                               # one chunk too many
])
def test_tampering_names_the_first_bad_chunk(tamper: Any, index: int):
    async def go(f: Any) -> None:
        out = await f.chunk_file(DATA, chunk_size=1_000_000)
        await f.merge_chunks(tamper(out["chunks"]), out["metadata"])

    with pytest.raises(IntegrityError, match=f"chunk {index}") as info:
        call(go)
    assert "!" not in str(info.value)


def test_detect_and_metadata():
    async def go(f: Any) -> Any:
        return [await f.detect_type(png(4, 3)), await f.detect_type(b"a,b\n", "t.csv"),
                await f.read_metadata(jpeg(33, 44), "x.jpg"), await f.hash_file(b"abc", "sha1")]

    png_type, csv_type, meta, digest = call(go)
    assert png_type == {"type": "png", "mime_type": "image/png", "confidence": 1.0}
    assert csv_type["type"] == "csv"
    data = jpeg(33, 44)
    assert meta == {"name": "x.jpg", "size": len(data), "type": "jpeg", "mime_type": "image/jpeg",
                    "last_modified": None, "hash": hashlib.sha256(data).hexdigest(),
                    "width": 33, "height": 44}
    assert digest == {"hash": hashlib.sha1(b"abc").hexdigest(), "algorithm": "SHA-1"}


def test_bad_arguments_raise_before_sending():
    async def go(f: Any) -> list[str]:
        out = []
        for call_ in (lambda: f.chunk_file(b"x", chunk_size=0),
                      lambda: f.chunk_file(b"x", chunk_size="big"),
                      lambda: f.chunk_file(b"x" * 20_001, chunk_size=2),
                      lambda: f.chunk_file("text"),
                      lambda: f.merge_chunks(b"not a list"),
                      lambda: f.merge_chunks([]),
                      lambda: f.merge_chunks([b"a", 5]),
                      lambda: f.merge_chunks([b"a"], {"version": 1}),
                      lambda: f.detect_type(b""),
                      lambda: f.detect_type(b"x", file_name=3),
                      lambda: f.read_metadata(None),
                      lambda: f.hash_file(b"x", "MD5")):
            try:
                await call_()
                out.append("no error")
            except InvalidInputError as exc:
                out.append(type(exc).__name__)
        out.append((await f.merge_chunks([b"ab", bytearray(b"c"), memoryview(b"de")])).decode())
        return out

    assert call(go) == ["InvalidInputError", "InvalidTypeError", "InvalidInputError",
                        "InvalidTypeError", "InvalidTypeError", "InvalidInputError",
                        "InvalidTypeError", "InvalidInputError", "InvalidInputError",
                        "InvalidTypeError", "InvalidTypeError", "InvalidInputError", "abcde"]


def test_the_worker_checks_what_a_raw_request_sends():
    async def go(f: Any) -> list[str]:
        b = f._bridge
        out = []
        for op, payload in [("chunk_file", {"data": b"abc", "chunk_size": -1}),
                            ("merge_chunks", {"chunks": "abc"}),
                            ("merge_chunks", {"chunks": [b"a"], "metadata": {"version": 9}}),
                            ("detect_type", {"data": b""}),
                            ("read_metadata", {"data": "text"})]:
            try:
                await b.request("file", op, payload)
                out.append("no error")
            except InvalidInputError as exc:
                out.append(type(exc).__name__)
        return out

    assert call(go) == ["InvalidInputError", "InvalidTypeError", "InvalidInputError",
                        "InvalidInputError", "InvalidTypeError"]


def test_an_empty_file_makes_no_chunks_and_merges_back():
    async def go(f: Any) -> Any:
        out = await f.chunk_file(b"")
        return out, await f.merge_chunks(out["chunks"], out["metadata"])

    out, merged = call(go)
    assert out["chunks"] == [] and merged == b""
    assert out["metadata"]["count"] == 0 and out["metadata"]["hash"] == hashlib.sha256().hexdigest()
