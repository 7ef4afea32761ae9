"""Fast boot: workers boot from a cached Pyodide memory snapshot, and share one compiled
wasm module. Real Chromium, real Workers, real Cache Storage; each test page gets a fresh
browser context, so it starts with no snapshot cached."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Harness, PyError

PROBE = '["./boot_probe.py"]'
CACHE = "workerbridge-snapshots"

SETUP = """
import asyncio, js
from workerbridge import WorkerBridge

def infos(bridge):
    # each ready worker's boot report, without the JS objects
    out = []
    for info in bridge.pool.ready_info():
        out.append({k: v for k, v in info.items() if k not in ("ops", "control")})
    return out
"""

# The cached entries (url, headers) once the first worker's write has landed.
CACHED_JS = """async (name) => {
    for (let i = 0; i < 200; i++) {
        const cache = await caches.open(name);
        const keys = await cache.keys();
        if (keys.length) {
            const out = [];
            for (const k of keys) {
                const r = await cache.match(k);
                out.push([k.url, Object.fromEntries(r.headers.entries())]);
            }
            return out;
        }
        await new Promise((r) => setTimeout(r, 50));
    }
    return [];
}"""

# Rewrite every cached snapshot through `how`: "flip" a byte in the middle (headers kept,
# so the checksum catches it), or "build" the Pyodide build id in the header (checksum
# recomputed with the bundle's own function, so only Pyodide's check catches it).
TAMPER_JS = """async ([name, how]) => {
    const { checksum } = await import("/dist/workerbridge/snapshot.mjs");
    const cache = await caches.open(name);
    const keys = await cache.keys();
    for (const k of keys) {
        const r = await cache.match(k);
        const bytes = new Uint8Array(await r.arrayBuffer());
        const headers = Object.fromEntries(r.headers.entries());
        if (how === "flip") bytes[bytes.length >> 1] ^= 0xff;
        if (how === "build") {
            bytes[16] ^= 0xff;  // words 4..11 of the header hold the build id
            headers["x-workerbridge-sum"] = checksum(bytes);
        }
        await cache.put(k, new Response(bytes, { headers }));
    }
    return keys.length;
}"""


def fresh_page(browser: Any, server: str) -> Iterator[Harness]:
    context = browser.new_context()
    harness = Harness(context.new_page(), server)
    harness.py(SETUP)
    yield harness
    context.close()


@pytest.fixture(scope="module")
def first_load(browser: Any, server: str) -> Iterator[Harness]:
    """A page with an empty cache that has booted a pool of 3 with the probe module."""
    for harness in fresh_page(browser, server):
        harness.py(f"""
            P = WorkerBridge(workers=3, modules={PROBE}, fallback="never")
            await P.pool.wait_all_ready()
        """)
        yield harness


def probe_all(harness: Harness, bridge: str, data: bytes = b"abc") -> list[dict[str, Any]]:
    """Probe every worker of a bridge: concurrent calls that linger spread over the pool."""
    return harness.py(f"""
        results = await asyncio.gather(*[
            {bridge}.request("probe", "state", {{"linger": 0.2, "data": {data!r}}})
            for _ in range(3 * {bridge}.stats().size)])
        list({{r["worker"]: r for r in results}}.values())
    """)


def test_pool_boots_one_worker_then_the_rest_from_its_snapshot(first_load: Harness):
    infos = first_load.py("infos(P)")
    assert sorted(i["snapshot"] for i in infos) == ["loaded", "loaded", "made"]
    made = next(i for i in infos if i["snapshot"] == "made")
    assert 5 < made["boot_stages"]["snapshot_mb"] < 200
    loaded = [i for i in infos if i["snapshot"] == "loaded"]
    # The wasm was compiled once: the workers after the first instantiate its module.
    assert [i["wasm"] for i in loaded] == ["shared", "shared"]
    assert all("snapshot_reason" not in i for i in infos)
    # A snapshot boot skips CPython's start-up and the imports (loose bound: noisy host).
    assert all(i["boot_ms"] < made["boot_ms"] * 3 for i in loaded)


def test_snapshot_booted_workers_have_their_own_random_state(first_load: Harness):
    workers = probe_all(first_load, "P")
    assert len(workers) == 3, "the probes did not reach every worker"
    # Every one serves from a snapshot: the maker too, from a second Python it booted from
    # the snapshot it made (the first sees JS through Pyodide's recording proxy).
    assert [w["from_snapshot"] for w in workers] == [True, True, True]
    # Drawn before the snapshot: shared, which is why the reseed matters.
    assert len({w["imported_at"] for w in workers}) == 1
    # Drawn after boot: each worker its own.
    assert len({w["first_random"] for w in workers}) == 3
    assert len({w["urandom"] for w in workers}) == 3
    assert len({w["uuid"] for w in workers}) == 3


def test_snapshot_booted_workers_compute_correctly(first_load: Harness):
    data = bytes(range(256)) * 4099
    for w in probe_all(first_load, "P", data):
        assert w["sha256"] == hashlib.sha256(data).hexdigest()
    digests = first_load.py("""
        inputs = [bytes([i]) * (300_000 + i) for i in range(9)]
        await asyncio.gather(*[P.crypto.hash_file(x, "SHA-512") for x in inputs])
    """)
    assert digests == [hashlib.sha512(bytes([i]) * (300_000 + i)).hexdigest() for i in range(9)]
    packed = first_load.py("""
        packed = await asyncio.gather(*[P.compression.compress_data(b"boot " * 5000, "zstd")
                                        for _ in range(3)])
        [await P.compression.decompress_data(p, "zstd") == b"boot " * 5000 for p in packed]
    """)
    assert packed == [True, True, True]


def test_the_snapshot_is_cached_under_a_key_with_its_length_and_checksum(first_load: Harness):
    entries = first_load.js(CACHED_JS, CACHE)
    assert len(entries) == 1
    url, headers = entries[0]
    assert url.startswith(first_load.origin + "/dist/workerbridge/snapshot/")
    assert headers["x-workerbridge-key"] in url
    assert int(headers["x-workerbridge-length"]) > 5 * 1024 * 1024


def test_a_reload_boots_from_the_cached_snapshot(first_load: Harness, server: str):
    first_load.js(CACHED_JS, CACHE)  # the write has landed
    page = first_load.page.context.new_page()
    reloaded = Harness(page, server)
    try:
        reloaded.py(SETUP)
        info = reloaded.py(f"""
            R = await WorkerBridge(modules={PROBE}, fallback="never").start()
            infos(R)
        """)[0]
        assert info["snapshot"] == "loaded"
        assert info["wasm"] == "compiled"  # a new page compiles once
        assert "snapshot_reason" not in info
        [w] = probe_all(reloaded, "R", b"reload")
        assert w["from_snapshot"] is True
        assert w["sha256"] == hashlib.sha256(b"reload").hexdigest()
        assert reloaded.py('await R.crypto.hash_file(b"abc")') == hashlib.sha256(b"abc").hexdigest()
    finally:
        page.close()


@pytest.mark.parametrize(("how", "reason"), [
    ("flip", "checksum does not match"),
    ("build", "Snapshot build id mismatch"),
])
def test_a_bad_cached_snapshot_falls_back_to_a_normal_boot(
        first_load: Harness, how: str, reason: str):
    first_load.js(CACHED_JS, CACHE)
    assert first_load.js(TAMPER_JS, [CACHE, how]) == 1
    before = len(first_load.console)
    info = first_load.py(f"""
        F = await WorkerBridge(modules={PROBE}, fallback="never").start()
        infos(F)
    """)[0]
    # Booted normally, said why, and made a good snapshot in place of the bad one.
    assert info["snapshot"] == "made"
    assert "the cached snapshot was not used" in info["snapshot_reason"]
    assert reason in info["snapshot_reason"]
    logged = first_load.console[before:]
    assert any("cached snapshot was not used" in line for line in logged), logged
    [w] = probe_all(first_load, "F", b"fallback")
    assert w["from_snapshot"] is True  # served from the good snapshot it made
    assert w["sha256"] == hashlib.sha256(b"fallback").hexdigest()
    assert first_load.py('await F.crypto.hash_file(b"abc")') == hashlib.sha256(b"abc").hexdigest()
    first_load.py("await F.close()")


def test_snapshot_option_is_checked_on_the_page_and_off_means_a_plain_boot(
        first_load: Harness):
    with pytest.raises(PyError) as err:
        first_load.py('WorkerBridge(snapshot="yes")')
    assert err.value.type == "InvalidTypeError"
    info = first_load.py(f"""
        O = await WorkerBridge(modules={PROBE}, snapshot=False, fallback="never").start()
        result = infos(O)
        assert await O.request("probe", "state", {{}})
        await O.close()
        result
    """)[0]
    assert info["snapshot"] == "off"
    assert "snapshot_reason" not in info
