"""compress_data / decompress_data end to end: real Chromium, real Workers, real Pyodide.

The host's own gzip, zlib and zstd are the oracles: what the worker writes must decode
on the host, and what the host writes must decode in the worker.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import zlib

import pytest
import zstandard

from conftest import PAGE_HELPERS, Harness, PyError

# Deterministic, compressible but not trivial: numbered lines of shuffled words. Run on
# the host and on the page, so both sides know the bytes without shipping them.
TEXT_DATA = """
def text_data(n):
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta", b"eta",
             b"theta", b"iota", b"kappa", b"lambda"]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%d %s %s %s\\n" % (i, words[i * 7 % 11], words[i * i % 11], words[i % 5])
        i += 1
    return bytes(out[:n])
"""
_ns: dict[str, object] = {}
exec(TEXT_DATA, _ns)
text_data = _ns["text_data"]

# A zstd frame made by the zstd command-line tool (level 19, with checksum) from
# b"".join(b"%d: workerbridge zstd vector\n" % i for i in range(200)).
ZSTD_VECTOR = (
    "KLUv/WQCFkUIAHaUKxiAKc0BwAgqJeDbnmGGeNDS0iaycEVSUicuACQAHgBVVUVERERENDMzMzPTtm3b/v9/4lnR"
    "dECCUAyQxUFQJBoHUiAYEkGCHBIE4wiU/////5fL5XK5XC6Xy5mZmZmZiIiIiIh3d3d3d2ZmZmZmVVUV13Vd13Vd"
    "1zRN0zRN0zQ9z/M8z/M8z7333nvvvf8BeZ7neZ7neY7jOI7jOI7j933f933f923btm3btm3bFYDHqBEQ+v3v0FN5"
    "Efz/Ej+r1dlsbjZbq9XZbG42V6vFL8lltyTLWkmVLSVR9kmY3AAAAQACAAIABAAEAKokSLaREFkhAbI+wmN1BMe3"
    "ALMAZmFg9RapAnmdoUw="
)
ZSTD_PLAIN = b"".join(b"%d: workerbridge zstd vector\n" % i for i in range(200))

HOST_DECODE = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "deflate-raw": lambda b: zlib.decompress(b, -15),
}


def raw_deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


HOST_ENCODE = {"gzip": gzip.compress, "deflate": zlib.compress, "deflate-raw": raw_deflate}


@pytest.fixture(scope="module")
def bridge(harness: Harness) -> Harness:
    harness.py("""
        import asyncio, base64, hashlib, time, js
        from workerbridge import WorkerBridge, SharedCancellation
        from workerbridge.core.jsconv import bytes_to_js
        B = await WorkerBridge.default().start()
        b64 = lambda b: base64.b64encode(b).decode()
        async def error_of(call):
            try:
                await call
            except Exception as exc:
                return [type(exc).__name__, [c.__name__ for c in type(exc).__mro__], str(exc)]
            return None
        def no_pending(b):
            return not b.pool.pending_ids() and b.pool.pending() == 0
    """)
    harness.py(TEXT_DATA)
    harness.py(PAGE_HELPERS)
    return harness


def test_worker_output_decodes_with_the_hosts_zlib(bridge: Harness):
    got = bridge.py("""
        data = text_data(1_500_000)
        {alg: b64(await B.compression.compress_data(data, alg))
         for alg in ("gzip", "deflate", "deflate-raw", "GZIP", "Deflate_Raw")}
    """)
    data = text_data(1_500_000)
    for alg, encoded in got.items():
        out = base64.b64decode(encoded)
        assert len(out) < len(data) // 3, alg
        assert HOST_DECODE[alg.lower().replace("_", "-")](out) == data, alg
    assert base64.b64decode(got["gzip"])[:2] == b"\x1f\x8b"
    assert base64.b64decode(got["deflate"])[0] & 0x0F == 8  # zlib header: CM = deflate


def test_host_made_data_decodes_in_the_worker(bridge: Harness):
    data = text_data(700_000)
    made = {alg: base64.b64encode(enc(data)).decode() for alg, enc in HOST_ENCODE.items()}
    got = bridge.py(f"""
        made = {made!r}
        out = {{}}
        for alg, text in made.items():
            raw = base64.b64decode(text)
            as_bytes = await B.compression.decompress_data(raw, alg)
            buf = bytes_to_js(raw)  # a JS ArrayBuffer: moved to the worker
            as_buffer = await B.compression.decompress_data(buf, alg)
            out[alg] = [hashlib.sha256(as_bytes).hexdigest(),
                        # a JS input gets a JS ArrayBuffer back, never copied into Python
                        str(js.Object.prototype.toString.call(as_buffer)),
                        js.Uint8Array.new(as_buffer).to_bytes() == as_bytes, buf.byteLength]
        out
    """)
    expected = hashlib.sha256(data).hexdigest()
    for alg in HOST_ENCODE:
        digest, kind, same, left = got[alg]
        assert digest == expected, alg
        assert kind == "[object ArrayBuffer]" and same and left == 0, alg


def test_a_file_compresses_in_chunks(bridge: Harness):
    encoded, digest, size = bridge.py("""
        # 9 MB: more than one 8 MB Blob read, half compressible text, half random.
        data = text_data(4_500_000) + js.Uint8Array.new(js.testUtil.randomBuffer(4_500_000)).to_bytes()
        f = js.File.new([bytes_to_js(data)], "mixed.bin")
        out = js.Uint8Array.new(await B.compression.compress_data(f, "deflate-raw")).to_bytes()
        [b64(out), hashlib.sha256(data).hexdigest(), int(f.size)]
    """)
    out = zlib.decompress(base64.b64decode(encoded), -15)
    assert size == 9_000_000 and len(out) == size
    assert hashlib.sha256(out).hexdigest() == digest
    assert out[:4_500_000] == text_data(4_500_000)


def test_levels_run_through_zlib_and_change_the_size(bridge: Harness):
    got = bridge.py("""
        data = text_data(2_000_000)
        {str(level): b64(await B.compression.compress_data(data, "gzip", level))
         for level in (0, 1, 9)}
    """)
    data = text_data(2_000_000)
    out = {int(k): base64.b64decode(v) for k, v in got.items()}
    for level, blob in out.items():
        assert gzip.decompress(blob) == data, level
    assert len(out[9]) < len(out[1]) < len(data) < len(out[0])
    # zlib's gzip header records the speed/size trade-off: XFL 2 = best, 4 = fastest.
    assert out[9][8] == 2 and out[1][8] == 4
    raw = bridge.py("""
        b64(await B.compression.compress_data(data, "deflate-raw", 9))
    """)
    assert zlib.decompress(base64.b64decode(raw), -15) == data


def test_corrupt_truncated_and_trailing_input_raise_corrupt_data_error(bridge: Harness):
    data = text_data(300_000)
    good = {alg: base64.b64encode(enc(data)).decode() for alg, enc in HOST_ENCODE.items()}
    got = bridge.py(f"""
        good = {good!r}
        out = {{}}
        for alg, text in good.items():
            raw = base64.b64decode(text)
            middle = len(raw) // 2
            flipped = raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1:]
            out[alg] = [await error_of(B.compression.decompress_data(raw[: len(raw) - 9], alg)),
                        await error_of(B.compression.decompress_data(flipped, alg)),
                        await error_of(B.compression.decompress_data(raw + b"junk", alg)),
                        await error_of(B.compression.decompress_data(b"", alg)),
                        await error_of(B.compression.decompress_data(b"not compressed at all", alg))]
        out["zstd"] = [await error_of(B.compression.decompress_data(b"\\x28\\xb5\\x2f\\xfd" + b"x" * 50, "zstd"))]
        # and the same worker keeps serving
        out["after"] = hashlib.sha256(await B.compression.decompress_data(
            base64.b64decode(good["gzip"]))).hexdigest()
        out
    """)
    assert got.pop("after") == hashlib.sha256(data).hexdigest()
    # Raw deflate carries no checksum: a flipped byte may decode to other bytes unnoticed.
    del got["deflate-raw"][1]
    for alg, errors in got.items():
        for err in errors:
            assert err is not None, f"{alg}: bad input was accepted"
            name, mro, message = err
            assert name == "CorruptDataError", (alg, err)
            assert "InvalidInputError" in mro and "ValueError" in mro
            assert message.startswith(f"the {alg} data is")
    assert "truncated" in got["gzip"][0][2]


def test_max_output_stops_a_decompression_bomb(bridge: Harness):
    bomb = base64.b64encode(gzip.compress(b"\0" * 64_000_000, 9)).decode()
    got = bridge.py(f"""
        bomb = base64.b64decode({bomb!r})
        [len(bomb),
         await error_of(B.compression.decompress_data(bomb, max_output=10_000_000)),
         await error_of(B.compression.decompress_data(bomb, max_output=-1)),
         await error_of(B.compression.decompress_data(bomb, max_output="big")),
         len(await B.compression.decompress_data(bomb, max_output=64_000_000)),
         await error_of(B.compression.decompress_data(bomb, max_output=63_999_999))]
    """)
    size, over, negative, wrong_type, exact, one_short = got
    assert size < 100_000
    assert over[0] == "InvalidInputError" and "max_output" in over[2]
    assert negative[0] == "InvalidInputError" and wrong_type[0] == "InvalidTypeError"
    assert exact == 64_000_000
    assert one_short[0] == "InvalidInputError"


def test_zstd_round_trips_and_matches_the_zstd_tool(bridge: Harness):
    got = bridge.py(f"""
        vector = await B.compression.decompress_data(base64.b64decode({ZSTD_VECTOR!r}), "ZSTD")
        data = text_data(1_000_000)
        made = await B.compression.compress_data(data, "zstd")
        made19 = await B.compression.compress_data(data, "zstd", 19)
        [b64(vector), b64(made), b64(made19),
         await B.compression.decompress_data(made, "zstd") == data,
         await error_of(B.compression.compress_data(data, "zstd", 23))]
    """)
    vector, made, made19, round_trip, bad_level = got
    assert base64.b64decode(vector) == ZSTD_PLAIN
    assert round_trip
    assert bad_level[0] == "InvalidInputError"
    made, made19 = base64.b64decode(made), base64.b64decode(made19)
    assert made[:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic
    assert len(made19) < len(made) < 1_000_000 // 3
    for frame in (made, made19):  # the reference implementation reads the worker's frames
        out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=2_000_000)
        assert out == text_data(1_000_000)


def test_brotli_is_unsupported_and_bad_arguments_fail_on_the_page(bridge: Harness):
    got = bridge.py("""
        before = B.stats().processed
        errors = [await error_of(B.compression.compress_data(b"x", "br")),
                  await error_of(B.compression.decompress_data(b"x", "Brotli")),
                  await error_of(B.compression.compress_data(b"x", "lzw")),
                  await error_of(B.compression.compress_data(b"x", "gzip", 10)),
                  await error_of(B.compression.compress_data(b"x", "gzip", 5.0)),
                  await error_of(B.compression.compress_data(b"x", "gzip", True)),
                  await error_of(B.compression.compress_data("text", "gzip")),
                  await error_of(B.compression.compress_data(b"x", None))]
        [errors, B.stats().processed - before]
    """)
    errors, sent = got
    names = [e[0] for e in errors]
    assert names == ["UnsupportedError", "UnsupportedError", "InvalidInputError",
                     "InvalidInputError", "InvalidTypeError", "InvalidTypeError",
                     "InvalidTypeError", "InvalidInputError"]
    assert "CompressionStream" in errors[0][2] and "gzip, deflate and deflate-raw" in errors[0][2]
    assert sent == 0, "bad arguments should be refused before any request is sent"


def test_progress_reports_input_bytes_up_to_100(bridge: Harness):
    reports, ok = bridge.py("""
        seen = []
        data = text_data(32 * 1024 * 1024)
        out = await B.compression.compress_data(
            data, on_progress=lambda p: seen.append([p.done, p.total, p.percent]))
        back = await B.compression.decompress_data(out)
        [seen, back == data]
    """)
    assert ok
    total = 32 * 1024 * 1024
    assert len(reports) >= 3, "expected intermediate progress on a 32 MB input"
    dones = [r[0] for r in reports]
    assert dones == sorted(dones)
    assert all(r[1] == total for r in reports)
    assert any(0 < d < total for d in dones)
    assert reports[-1][0] == total and reports[-1][2] == 100.0


@pytest.mark.parametrize("how", ["task", "token"])
def test_cancelling_a_large_compression_releases_the_caller(bridge: Harness, how: str):
    # 192 MB of random bytes is several seconds of gzip here: the stream engine for a task
    # cancel, the zlib engine (a level) for a token.
    latency, after, before, stats, clean, works = bridge.py(f"""
        before = await settled_stats(B)
        buf = js.testUtil.randomBuffer(192 * 1024 * 1024)
        token = SharedCancellation()
        if {how!r} == "task":
            task = asyncio.ensure_future(B.compression.compress_data(buf))
        else:
            task = asyncio.ensure_future(B.compression.compress_data(buf, level=6, cancel=token))
        await asyncio.sleep(0.5)
        assert not task.done()
        latency = await cancel_and_time(task, None if {how!r} == "task" else token.cancel)
        t1 = time.perf_counter()
        stats = await settled_stats(B)
        after = time.perf_counter() - t1
        works = await B.compression.decompress_data(
            await B.compression.compress_data(b"still here")) == b"still here"
        [latency, after, before, stats, no_pending(B), works]
    """)
    assert latency < 0.1
    assert after < 1.0, "the worker was still busy with the cancelled compression"
    assert stats["cancelled"] == before["cancelled"] + 1
    assert stats["active"] == 0 and clean and works


def test_unknown_payloads_sent_directly_get_typed_errors(bridge: Harness):
    # The worker checks requests too: a raw request cannot slip past the page's checks.
    got = bridge.py("""
        [await error_of(B.request("compression", "compress", {"data": bytes_to_js(b"x"), "algorithm": "br"})),
         await error_of(B.request("compression", "decompress", {"data": bytes_to_js(b"x"), "max_output": -5})),
         await error_of(B.request("compression", "compress", {"algorithm": "gzip"})),
         len(await B.compression.compress_data(b"ok"))]
    """)
    assert [e[0] for e in got[:3]] == ["UnsupportedError", "InvalidInputError", "InvalidTypeError"]
    assert got[3] > 0


def test_errors_do_not_leak_as_raw_js_strings(bridge: Harness):
    with pytest.raises(PyError) as info:
        bridge.py("await B.compression.decompress_data(b'\\x1f\\x8b' + b'\\x00' * 40)")
    assert info.value.type == "CorruptDataError"
    assert "JsException" not in info.value.message and "TypeError" not in info.value.message
