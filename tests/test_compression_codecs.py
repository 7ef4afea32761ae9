"""Host unit tests of the compression channel's pure parts: names, levels, the zlib codecs,
and the handlers run over the in-process loopback (where zlib stands in for the browser's
streams)."""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from typing import Any

import pytest
import workerbridge.workers.compression as comp

from conftest import run
from workerbridge import (
    CorruptDataError,
    InvalidInputError,
    InvalidTypeError,
    UnsupportedError,
    WorkerBridge,
)
from workerbridge.channels.algorithms import (
    COMPRESSIONS,
    compression_level,
    max_output_bytes,
    normalize_compression,
)
from workerbridge.pool.loopback import LoopbackTransport

DATA = b"".join(b"%d compressible line %d\n" % (i, i * i % 97) for i in range(40_000))
HAS_ZSTD = importlib.util.find_spec("compression") is not None


@pytest.mark.parametrize(("name", "expected"), [
    ("gzip", "gzip"), ("GZIP", "gzip"), (" Deflate ", "deflate"), ("deflate-raw", "deflate-raw"),
    ("DEFLATE_RAW", "deflate-raw"), ("zstd", "zstd"), ("ZSTD", "zstd"),
])
def test_names_are_accepted_case_insensitively(name: str, expected: str) -> None:
    assert normalize_compression(name) == expected


@pytest.mark.parametrize("name", ["br", "BR", "brotli", "Brotli"])
def test_brotli_is_unsupported_and_says_why(name: str) -> None:
    with pytest.raises(UnsupportedError, match="CompressionStream offers only gzip"):
        normalize_compression(name)


@pytest.mark.parametrize("name", ["lz4", "", "gzip2", None, 3, b"gzip"])
def test_unknown_names_are_invalid_input(name: Any) -> None:
    with pytest.raises(InvalidInputError, match="gzip, deflate, deflate-raw, zstd"):
        normalize_compression(name)


def test_levels() -> None:
    assert compression_level("gzip", None) is None
    assert [compression_level(a, 9) for a in ("gzip", "deflate", "deflate-raw")] == [9] * 3
    assert compression_level("deflate", 0) == 0
    assert compression_level("zstd", 22) == 22
    for algorithm, bad in (("gzip", 10), ("gzip", -1), ("zstd", 0), ("zstd", 23)):
        with pytest.raises(InvalidInputError, match=f"{algorithm} level must be"):
            compression_level(algorithm, bad)
    for bad_type in (5.0, "5", True):
        with pytest.raises(InvalidTypeError):
            compression_level("gzip", bad_type)
    assert set(COMPRESSIONS) == {"gzip", "deflate", "deflate-raw", "zstd"}


def test_max_output_bytes() -> None:
    assert max_output_bytes(0) == 0
    assert max_output_bytes(1 << 40) == 1 << 40
    with pytest.raises(InvalidInputError):
        max_output_bytes(-1)
    with pytest.raises(InvalidTypeError):
        max_output_bytes(1.5)
    with pytest.raises(InvalidTypeError):
        max_output_bytes(False)


HOST_DECODE = {"gzip": gzip.decompress, "deflate": zlib.decompress,
               "deflate-raw": lambda b: zlib.decompress(b, -15)}


def run_codec(codec: comp.Codec, data: bytes, step: int = 4096) -> bytes:
    view = memoryview(data)
    out = [codec.feed(view[i:i + step]) for i in range(0, len(data), step)]
    return b"".join([*out, codec.finish()])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate", "deflate-raw"])
def test_deflate_codec_matches_the_hosts_zlib(algorithm: str) -> None:
    for level in (0, 1, 6, 9):
        out = run_codec(comp.Deflate(algorithm, level), DATA)
        assert HOST_DECODE[algorithm](out) == DATA
        assert run_codec(comp.Inflate(algorithm, len(DATA)), out, step=777) == DATA
    fast = run_codec(comp.Deflate(algorithm, 1), DATA)
    best = run_codec(comp.Deflate(algorithm, 9), DATA)
    assert len(best) < len(fast)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate", "deflate-raw"])
def test_inflate_refuses_truncated_trailing_and_corrupt_input(algorithm: str) -> None:
    good = run_codec(comp.Deflate(algorithm, 6), DATA)
    with pytest.raises(CorruptDataError, match="truncated"):
        run_codec(comp.Inflate(algorithm, 1 << 30), good[:-9])
    with pytest.raises(CorruptDataError, match="truncated"):
        run_codec(comp.Inflate(algorithm, 1 << 30), b"")
    with pytest.raises(CorruptDataError, match="extra bytes"):
        run_codec(comp.Inflate(algorithm, 1 << 30), good + b"junk")
    with pytest.raises(CorruptDataError, match="extra bytes"):  # junk in a later chunk
        run_codec(comp.Inflate(algorithm, 1 << 30), good + b"j" * 5000, step=len(good))
    with pytest.raises(CorruptDataError, match="corrupt"):
        run_codec(comp.Inflate(algorithm, 1 << 30), b"\xff" * 100)


def test_inflate_caps_the_output_of_a_bomb() -> None:
    bomb = gzip.compress(b"\0" * 50_000_000, 9)
    assert len(bomb) < 100_000
    inflate = comp.Inflate("gzip", 1_000_000)
    with pytest.raises(InvalidInputError, match=r"max_output \(1000000 bytes\)"):
        run_codec(inflate, bomb, step=len(bomb))
    assert inflate.size <= 1_000_001  # it stopped, it did not inflate 50 MB first
    assert len(run_codec(comp.Inflate("gzip", 50_000_000), bomb)) == 50_000_000
    with pytest.raises(InvalidInputError):
        run_codec(comp.Inflate("gzip", 49_999_999), bomb)


def test_zstd_codec_round_trips_or_is_unsupported_without_the_module(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if not HAS_ZSTD:  # CPython before 3.14 (Pyodide 314 has it: see the browser tests)
        with monkeypatch.context() as m:  # neither compression.zstd nor zstandard
            m.setattr(comp, "_zstandard", lambda: None)
            with pytest.raises(UnsupportedError, match=r"compression\.zstd"):
                comp.compressor("zstd", None)
            with pytest.raises(UnsupportedError):
                comp.decompressor("zstd", 100)
        # With the zstandard package (a fleet worker's Python): the same behaviour.
        assert isinstance(comp.decompressor("zstd", 100), comp.ZstandardDecompress)
    out = run_codec(comp.compressor("zstd", 3), DATA)
    assert run_codec(comp.decompressor("zstd", len(DATA)), out, step=100) == DATA
    with pytest.raises(InvalidInputError):
        run_codec(comp.decompressor("zstd", len(DATA) - 1), out)
    with pytest.raises(CorruptDataError, match="truncated"):
        run_codec(comp.decompressor("zstd", len(DATA)), out[:-5])
    with pytest.raises(CorruptDataError, match="extra bytes"):
        run_codec(comp.decompressor("zstd", len(DATA)), out + b"x")
    with pytest.raises(CorruptDataError, match="corrupt"):
        run_codec(comp.decompressor("zstd", len(DATA)), b"not zstd at all")


def test_zstd_caps_the_output_of_a_bomb() -> None:
    bomb = run_codec(comp.compressor("zstd", 19), b"\0" * 200_000_000)
    assert len(bomb) < 100_000
    capped = comp.decompressor("zstd", 1_000_000)
    with pytest.raises(InvalidInputError, match=r"max_output \(1000000 bytes\)"):
        run_codec(capped, bomb, step=len(bomb))
    # It stopped within one step's worth (16 MB), not after inflating 200 MB.
    assert capped.size <= 1_000_000 + 16 * 1024 * 1024  # type: ignore[attr-defined]


def test_handlers_over_the_loopback() -> None:
    async def main() -> list[Any]:
        bridge = await WorkerBridge(transport_factory=LoopbackTransport).start()
        ns = bridge.compression
        seen: list[int] = []
        try:
            packed = await ns.compress_data(DATA, "Deflate", on_progress=lambda p: seen.append(p.done))
            levelled = await ns.compress_data(bytearray(DATA), "gzip", 1)
            back = await ns.decompress_data(memoryview(packed), "deflate")
            errors = []
            for call in (ns.decompress_data(packed[:-3], "deflate"),
                         ns.decompress_data(packed, "deflate", max_output=1000),
                         ns.compress_data(DATA, "br"),
                         ns.compress_data("text")):
                try:
                    await call
                except Exception as exc:
                    errors.append(type(exc))
            still = await ns.decompress_data(await ns.compress_data(b"x"))
            return [packed, levelled, back, errors, still, seen]
        finally:
            await bridge.close()

    packed, levelled, back, errors, still, seen = run(main())
    assert zlib.decompress(packed) == DATA == back
    assert gzip.decompress(levelled) == DATA
    assert errors == [CorruptDataError, InvalidInputError, UnsupportedError, InvalidTypeError]
    assert still == b"x"
    assert seen and seen[-1] == len(DATA)
