"""crypto: AES-256-GCM, PBKDF2, HKDF and HMAC in a real worker, against published vectors
and the host's `cryptography` package."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from conftest import PAGE_HELPERS, Harness
from gcm_reference import open_sealed, seal

KEY = bytes(range(32))
DATA = "bytes(range(256)) * 20 + b'tail'"  # 5124 bytes: six 1 KiB records
PLAIN = bytes(range(256)) * 20 + b"tail"


@pytest.fixture(scope="module")
def crypto(harness: Harness) -> Harness:
    harness.py("""
        import asyncio, time, js
        import workerbridge
        from workerbridge import WorkerBridge, SharedCancellation
        C = await WorkerBridge.default().start()
        async def error_of(coro):
            try:
                await coro
            except workerbridge.WorkerBridgeError as exc:
                return type(exc).__name__
            return None
    """)
    harness.py(PAGE_HELPERS)
    return harness


def test_gcm_spec_vectors(crypto: Harness):
    got = crypto.py("""
        k15 = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
        iv15 = bytes.fromhex("cafebabefacedbaddecaf888")
        p15 = bytes.fromhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
        tc14 = await C.crypto.encrypt_file(bytes(16), bytes(32), bytes(12))
        tc15 = await C.crypto.encrypt_file(p15, k15, iv15)
        # Test case 13 has the key and nonce of 14: encrypting it would be a reuse, so it is
        # checked by decryption.
        tc13 = await C.crypto.decrypt_file(bytes.fromhex("530f8afbc74536b9a963b4f1c4cb738b"),
                                           bytes(32), bytes(12))
        [tc14.ciphertext.hex(), tc15.ciphertext.hex(), tc13.hex(),
         await C.crypto.decrypt_file(tc15.ciphertext, k15, iv15) == p15]
    """)
    assert got[0] == "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
    assert got[1] == ("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
                      "b094dac5d93471bdec1a502270e3cc6c")
    assert got[2] == "" and got[3] is True


def test_browser_ciphertext_opens_on_the_host_and_back(crypto: Harness):
    one, chunked, from_file, nonces = crypto.py(f"""
        key = {KEY!r}
        one = await C.crypto.encrypt_file(b"short message", key)
        chunked = await C.crypto.encrypt_file({DATA}, key, chunk_size=1024)
        u8 = js.Uint8Array.new(len({DATA})); u8.assign({DATA})
        f = js.File.new([u8], "plain.bin")
        from_file = await C.crypto.encrypt_file(f, key, chunk_size=1024)
        # A JS input gives a JS ArrayBuffer back.
        ct = js.Uint8Array.new(from_file.ciphertext).to_bytes()
        [one.ciphertext.hex(), chunked.ciphertext.hex(), ct.hex(),
         [one.nonce.hex(), chunked.nonce.hex(), from_file.nonce.hex()]]
    """)
    assert len(set(nonces)) == 3 and all(len(n) == 24 for n in nonces)
    assert open_sealed(KEY, bytes.fromhex(nonces[0]), bytes.fromhex(one)) == b"short message"
    assert open_sealed(KEY, bytes.fromhex(nonces[1]), bytes.fromhex(chunked)) == PLAIN
    assert open_sealed(KEY, bytes.fromhex(nonces[2]), bytes.fromhex(from_file)) == PLAIN
    assert bytes.fromhex(chunked)[:5] == b"WBGCM"

    nonce = bytes(range(12))
    host_one = seal(KEY, nonce, b"from the host", 1024)
    host_chunked = seal(KEY, nonce, PLAIN, 1024)
    opened = crypto.py(f"""
        a = await C.crypto.decrypt_file({host_one!r}, {KEY!r}, {nonce!r})
        b = await C.crypto.decrypt_file({host_chunked!r}, {KEY!r}, {nonce!r})
        u8 = js.Uint8Array.new(len({host_chunked!r})); u8.assign({host_chunked!r})
        c = await C.crypto.decrypt_file(js.Blob.new([u8]), {KEY!r}, {nonce!r})
        [a == b"from the host", b == {DATA}, js.Uint8Array.new(c).to_bytes() == {DATA}]
    """)
    assert opened == [True, True, True]


def test_tampering_truncation_reordering_and_wrong_keys_fail(crypto: Harness):
    nonce = bytes(range(12, 24))
    blob = seal(KEY, nonce, PLAIN, 1024)
    head, rec = 10, 1024 + 16
    flipped = bytearray(blob)
    flipped[head + 2 * rec + 5] ^= 1
    dropped_last = blob[: head + 5 * rec]  # five whole records: the final flag is missing
    swapped = blob[:head] + blob[head + rec: head + 2 * rec] + blob[head: head + rec] \
        + blob[head + 2 * rec:]
    appended = blob + blob[head: head + rec]
    header_changed = blob[:6] + (2048).to_bytes(4, "big") + blob[10:]
    cases = [bytes(flipped), dropped_last, swapped, appended, header_changed, blob[:-3]]
    got = crypto.py(f"""
        cases = {cases!r}
        errors = [await error_of(C.crypto.decrypt_file(c, {KEY!r}, {nonce!r})) for c in cases]
        errors.append(await error_of(C.crypto.decrypt_file({blob!r}, bytes(32), {nonce!r})))
        errors.append(await error_of(C.crypto.decrypt_file({blob!r}, {KEY!r}, bytes(12))))
        try:
            await C.crypto.decrypt_file({bytes(flipped)!r}, {KEY!r}, {nonce!r})
        except workerbridge.IntegrityError as exc:
            message = str(exc)
        ok = await C.crypto.decrypt_file({blob!r}, {KEY!r}, {nonce!r}) == {DATA}
        [errors, message, ok]
    """)
    errors, message, ok = got
    assert errors == ["IntegrityError"] * 8
    assert "record 2 of 6" in message
    assert ok, "the worker must keep serving after integrity failures"


def test_nonce_reuse_is_refused(crypto: Harness):
    got = crypto.py("""
        key, nonce = bytes([7]) * 32, bytes([9]) * 12
        first = await C.crypto.encrypt_file(b"one", key, nonce)
        again = await error_of(C.crypto.encrypt_file(b"two", key, nonce))
        # A chunked file claims nonce XOR i for each record: 3 records from nonce ^ 0..2.
        n2 = bytes(11) + b"\\x10"
        await C.crypto.encrypt_file(bytes(3000), key, n2, chunk_size=1024)
        overlap = await error_of(C.crypto.encrypt_file(b"x", key, bytes(11) + b"\\x12"))
        fresh = await C.crypto.encrypt_file(b"x", key, bytes(11) + b"\\x13")
        other_key = await C.crypto.encrypt_file(b"two", bytes([8]) * 32, nonce)
        ck = await js.crypto.subtle.generateKey(
            js.Object.fromEntries([["name", "AES-GCM"], ["length", 256]]), False,
            ["encrypt", "decrypt"])
        with_ck = await C.crypto.encrypt_file(b"x", ck, nonce)
        ck_again = await error_of(C.crypto.encrypt_file(b"y", ck, nonce))
        back = await C.crypto.decrypt_file(with_ck.ciphertext, ck, nonce)
        [again, overlap, len(fresh.ciphertext), len(other_key.ciphertext), ck_again, back.decode()]
    """)
    assert got == ["NonceReuseError", "NonceReuseError", 17, 19, "NonceReuseError", "x"]


def test_kdf_and_hmac_vectors(crypto: Harness):
    got = crypto.py("""
        [(await C.crypto.derive_key("passwd", b"salt", 1, length=64)).hex(),
         (await C.crypto.derive_key(b"Password", b"NaCl", 80000, "sha256", length=64)).hex(),
         (await C.crypto.hkdf(b"\\x0b" * 22, bytes(range(13)), bytes(range(0xf0, 0xfa)),
                              42)).hex(),
         (await C.crypto.hmac_sign(b"\\x0b" * 20, b"Hi There")).hex(),
         (await C.crypto.hmac_sign(b"Jefe", b"what do ya want for nothing?", "SHA-512")).hex(),
         await C.crypto.hmac_verify(b"Jefe", b"what do ya want for nothing?",
                                    bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f08"
                                                  "9d2739839dec58b964ec3843")),
         await C.crypto.hmac_verify(b"Jefe", b"what do ya want for nothing!",
                                    bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f08"
                                                  "9d2739839dec58b964ec3843"))]
    """)
    assert got[0] == hashlib.pbkdf2_hmac("sha256", b"passwd", b"salt", 1, 64).hex()
    assert got[0].startswith("55ac046e56e3089fec1691c22544b605")  # RFC 7914 section 11
    assert got[1].startswith("4ddcd8f60b98be21830cee5ef22701f9")
    assert got[2] == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                      "34007208d5b887185865")  # RFC 5869 test case 1
    assert got[3] == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    assert got[4].startswith("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd6")  # RFC 4231
    assert got[5:] == [True, False]


def test_hmac_of_large_data_streams_and_matches_the_host(crypto: Harness):
    got = crypto.py("""
        data = bytes(range(256)) * (24 * 4096)  # 24 MB
        reports = []
        streamed = await C.crypto.hmac_sign(b"k" * 40, data, on_progress=reports.append)
        one_shot = await C.crypto.hmac_sign(b"k" * 40, data)
        [streamed.hex(), one_shot.hex(), len(reports)]
    """)
    expected = hmac.new(b"k" * 40, bytes(range(256)) * (24 * 4096), "sha256").hexdigest()
    assert got[0] == expected and got[1] == expected and got[2] >= 2


def test_large_encryption_reports_progress_and_cancels(crypto: Harness):
    got = crypto.py("""
        buf = js.Uint8Array.new(32 * 1024 * 1024).buffer
        reports = []
        sealed = await C.crypto.encrypt_file(buf, bytes([1]) * 32, on_progress=reports.append)
        size = sealed.ciphertext.byteLength
        big = js.Uint8Array.new(512 * 1024 * 1024).buffer
        task = asyncio.ensure_future(C.crypto.encrypt_file(big, bytes([2]) * 32))
        await asyncio.sleep(0.3)
        latency = await cancel_and_time(task)
        t1 = time.perf_counter()
        echo = await C.request("system", "echo", 5)
        [size, len(reports), reports[-1].percent, latency, time.perf_counter() - t1, echo]
    """)
    size, count, last, latency, after, echo = got
    records = 32
    assert size == 10 + 32 * 1024 * 1024 + 16 * records
    assert count >= 2 and last == 100.0
    assert latency < 0.1 and after < 0.5 and echo == 5


def test_bad_input_is_refused_with_typed_errors(crypto: Harness):
    got = crypto.py("""
        [await error_of(C.crypto.encrypt_file(b"x", b"short key")),
         await error_of(C.crypto.encrypt_file(b"x", "a string key")),
         await error_of(C.crypto.encrypt_file(b"x", bytes(32), b"bad nonce")),
         await error_of(C.crypto.encrypt_file("text", bytes(32))),
         await error_of(C.crypto.encrypt_file(b"x", bytes(32), chunk_size=10)),
         await error_of(C.crypto.decrypt_file(b"", bytes(32), bytes(12))),
         await error_of(C.crypto.derive_key("pw", b"", 1)),
         await error_of(C.crypto.derive_key("pw", b"salt", 0)),
         await error_of(C.crypto.derive_key("pw", b"salt", 1, "MD5")),
         await error_of(C.crypto.hkdf(b"", b"", b"")),
         await error_of(C.crypto.hmac_sign(b"", b"data")),
         await C.request("system", "echo", "still serving")]
    """)
    assert got == ["InvalidInputError", "InvalidTypeError", "InvalidInputError",
                   "InvalidTypeError", "InvalidInputError", "IntegrityError",
                   "InvalidInputError", "InvalidInputError", "InvalidInputError",
                   "InvalidInputError", "InvalidInputError", "still serving"]


@pytest.mark.parametrize("mb", [5, 40])  # read on the worker's thread; by a helper worker
def test_a_file_that_changed_on_disk_is_a_typed_error(crypto: Harness, tmp_path, mb: int):
    path = tmp_path / "picked.bin"
    path.write_bytes(bytes(mb * 1024 * 1024))
    crypto.js("""() => { document.getElementById("picker")?.remove();
                         const i = document.createElement("input"); i.type = "file";
                         i.id = "picker"; document.body.append(i); }""")
    crypto.page.set_input_files("#picker", str(path))
    size = crypto.py("""
        f = js.document.getElementById("picker").files.item(0)
        int(f.size)  # the browser notes the file's size and time now
    """)
    path.write_bytes(bytes(mb * 1024 * 1024 + 1))  # and its File no longer matches the disk
    os.utime(path, (1, 1))
    got = crypto.py("""
        [await error_of(C.crypto.hash_file(f)),  # one call in a helper worker
         await error_of(C.crypto.hash_file(f, on_progress=lambda p: None)),  # streamed
         await C.request("system", "echo", "still serving")]
    """)
    assert size == mb * 1024 * 1024
    assert got == ["InvalidInputError", "InvalidInputError", "still serving"]


def test_cancel_lands_in_a_chunked_encryption_without_isolation(plain_harness: Harness):
    # No SharedArrayBuffer: the record loop must yield so the CANCEL message gets in.
    plain_harness.py("import asyncio, time\n" + PAGE_HELPERS)
    latency, after, echo, stats = plain_harness.py("""
        import js
        from workerbridge import WorkerBridge
        B = await WorkerBridge.default().start()
        before = await settled_stats(B)
        big = js.Uint8Array.new(512 * 1024 * 1024).buffer
        task = asyncio.ensure_future(B.crypto.encrypt_file(big, bytes([4]) * 32))
        await asyncio.sleep(0.3)
        latency = await cancel_and_time(task)
        t1 = time.perf_counter()
        echo = await B.request("system", "echo", 6)
        after = time.perf_counter() - t1
        stats = await settled_stats(B)
        [latency, after, echo, stats["cancelled"] - before["cancelled"]]
    """)
    assert latency < 0.1 and after < 0.5 and echo == 6 and stats == 1
