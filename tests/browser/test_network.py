"""The network channel from a PyScript page: real fetch in a real worker, against servers
these tests start on 127.0.0.1 (nothing leaves the machine), and real ICE gathering."""

from __future__ import annotations

import http.server
import json
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import PAGE_HELPERS, Harness, PyError

SECRET = "SECRET-BODY-7f3a"  # in every error page's body; must never reach a message
CHUNK = 64 * 1024


class Recorder:
    """What the test server saw: hits per (method, path), headers, aborted connections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: Counter[tuple[str, str]] = Counter()
        self.cache_control: list[str] = []
        self.aborted: Counter[str] = Counter()
        self.inflight = 0  # /delay/ requests being answered now
        self.max_inflight = 0
        self.stop = threading.Event()

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return self.hits[(method, path)]


def payload_bytes(n: int) -> bytes:
    block = bytes(range(256)) * (CHUNK // 256)
    return (block * (n // CHUNK + 1))[:n]


def make_handler(rec: Recorder) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def cors(self) -> None:
            # The page is cross-origin isolated (COEP require-corp): a cross-origin answer
            # needs CORS (fetch's default mode) and CORP.
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Cross-Origin-Resource-Policy", "cross-origin")

        def answer(self, status: int, body: bytes = b"", length: int | None = None) -> None:
            self.send_response(status)
            self.cors()
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def client_gone(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""

        def hang(self, path: str) -> None:
            """Never answer; note when the browser closes the connection."""
            while not rec.stop.wait(0.02):
                if self.client_gone():
                    with rec.lock:
                        rec.aborted[path] += 1
                    return

        def stream(self, path: str, total: int | None, pause: float) -> None:
            self.send_response(200)
            self.cors()
            self.send_header("Content-Type", "application/octet-stream")
            if total is not None:
                self.send_header("Content-Length", str(total))
            self.end_headers()
            block = payload_bytes(CHUNK)
            sent = 0
            try:
                while (total is None or sent < total) and not rec.stop.is_set():
                    part = block if total is None else block[: total - sent]
                    self.wfile.write(part)
                    sent += len(part)
                    if pause:
                        time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):
                with rec.lock:
                    rec.aborted[path] += 1

        def do_HEAD(self) -> None:
            self.route()

        def do_GET(self) -> None:
            self.route()

        def route(self) -> None:
            path = self.path
            route = path.split("?")[0]
            delayed = route.startswith("/delay/")  # concurrency is measured on these only
            with rec.lock:
                rec.hits[(self.command, path)] += 1
                rec.cache_control.append(self.headers.get("Cache-Control", ""))
                rec.inflight += delayed
                rec.max_inflight = max(rec.max_inflight, rec.inflight)
            try:
                self.dispatch(path, route)
            finally:
                with rec.lock:
                    rec.inflight -= delayed

        def dispatch(self, path: str, route: str) -> None:
            if route == "/ok":
                self.answer(200, b"ok")
            elif m := re.fullmatch(r"/status/(\d+)", route):
                self.answer(int(m[1]), f"error page {SECRET}".encode())
            elif route == "/no-head":
                self.answer(405 if self.command == "HEAD" else 200, b"get only")
            elif route == "/redirect":
                self.send_response(302)
                self.cors()
                self.send_header("Location", "/ok?from=redirect")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif m := re.fullmatch(r"/delay/([\d.]+)", route):
                time.sleep(float(m[1]))
                self.answer(200, b"late")
            elif route == "/slow":
                self.hang(path)
            elif route == "/flaky":  # every other request hangs
                if rec.count(self.command, path) % 2 == 1:
                    self.hang(path)
                else:
                    self.answer(200, b"flaky")
            elif m := re.fullmatch(r"/bytes/(\d+)", route):
                self.stream(path, int(m[1]), 0)
            elif route == "/endless":
                self.stream(path, None, 0.01)
            else:
                self.answer(404, SECRET.encode())

    return Handler


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[str, Recorder]]:
    """A threaded HTTP server on 127.0.0.1 (another origin than the page)."""
    rec = Recorder()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(rec))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", rec
    rec.stop.set()
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def net(harness: Harness, remote: tuple[str, Recorder]) -> Harness:
    harness.py(f"""
        import asyncio, time, js
        import workerbridge
        from workerbridge import WorkerBridge, SharedCancellation
        B = await WorkerBridge.default().start()
        R = {remote[0]!r}
        def no_pending(*bridges):
            return all(not b.pool.pending_ids() and b.pool.pending() == 0 for b in bridges)
    """)
    harness.py(PAGE_HELPERS)
    return harness


def wait_for(predicate: Any, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_connectivity_one_entry_per_url_in_order(net: Harness, remote: tuple[str, Recorder]):
    origin, rec = remote
    dead = f"http://127.0.0.1:{closed_port()}/"
    urls = [f"{origin}/ok", f"{origin}/status/404", f"{origin}/status/500", f"{origin}/no-head",
            dead, "./index.html", f"{origin}/redirect", f"{origin}/status/204"]
    got, progress = net.py(f"""
        seen = []
        got = await WorkerBridge.network.test_connectivity({urls!r},
            on_progress=lambda p: seen.append([p.done, p.total]))
        [got, seen]
    """)
    assert [e["url"] for e in got] == [*urls[:5], net.origin + "/index.html", *urls[6:]]
    assert [(e["ok"], e["status"], e["error"]) for e in got] == [
        (True, 200, None), (False, 404, "HTTP 404"), (False, 500, "HTTP 500"),
        (True, 200, None), (False, None, "network error"), (True, 200, None),
        (True, 200, None), (True, 204, None)]
    for entry in got:
        assert set(entry) == {"url", "ok", "status", "latency_ms", "error"}
        if entry["status"] is None:
            assert entry["latency_ms"] is None
        else:
            assert 0 < entry["latency_ms"] < 5000
    assert SECRET not in json.dumps(got)
    # HEAD first; GET only where HEAD was refused; the redirect was followed.
    assert rec.count("HEAD", "/ok") == 1 and rec.count("GET", "/ok") == 0
    assert rec.count("HEAD", "/no-head") == 1 and rec.count("GET", "/no-head") == 1
    assert rec.count("HEAD", "/ok?from=redirect") == 1
    assert rec.cache_control and set(rec.cache_control) == {"no-cache"}, "no-store not used"
    assert progress[-1] == [8, 8]
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)


def test_connectivity_checks_urls_concurrently(net: Harness, remote: tuple[str, Recorder]):
    origin, rec = remote
    urls = [f"{origin}/delay/0.4?n={i}" for i in range(4)]
    with rec.lock:
        rec.max_inflight = 0
    got = net.py(f"await WorkerBridge.network.test_connectivity({urls!r})")
    assert all(e["ok"] for e in got)
    assert rec.max_inflight >= 2, "the URLs were checked one after another"


def test_connectivity_timeout_aborts_the_request(net: Harness, remote: tuple[str, Recorder]):
    _, rec = remote
    got, seconds = net.py("""
        t0 = time.perf_counter()
        got = await WorkerBridge.network.test_connectivity([R + "/slow?t=1", R + "/ok?t=1"], timeout=0.5)
        [got, time.perf_counter() - t0]
    """)
    assert [(e["ok"], e["status"], e["error"], e["latency_ms"]) for e in got] == [
        (False, None, "timeout", None), (True, 200, None, got[1]["latency_ms"])]
    assert 0.4 < seconds < 5
    assert wait_for(lambda: rec.aborted["/slow?t=1"] == 1), "the timed-out fetch was not aborted"


def test_cancel_aborts_every_inflight_check(net: Harness, remote: tuple[str, Recorder]):
    _, rec = remote
    outcome, latency, stats, clean = net.py("""
        token = SharedCancellation()
        task = asyncio.ensure_future(WorkerBridge.network.test_connectivity(
            [R + "/slow?c=1", R + "/slow?c=2", R + "/ok?c=3"], timeout=60, cancel=token))
        await asyncio.sleep(0.5)
        outcome, latency = await cancel_by_token(task, token)
        [outcome, latency, await settled_stats(B), no_pending(B)]
    """)
    assert outcome == "cancelled" and latency < 0.1
    assert stats["active"] == 0 and clean
    assert wait_for(lambda: rec.aborted["/slow?c=1"] == 1 and rec.aborted["/slow?c=2"] == 1)


def test_latency_check_times_every_sample_uncached(net: Harness, remote: tuple[str, Recorder]):
    origin, rec = remote
    got, progress = net.py("""
        seen = []
        got = await WorkerBridge.network.latency_check(R + "/ok?lat=1", samples=5,
                                                      on_progress=lambda p: seen.append(p.done))
        [got, seen]
    """)
    assert set(got) == {"url", "average_ms", "min_ms", "max_ms", "samples", "failures"}
    assert got["url"] == f"{origin}/ok?lat=1" and got["failures"] == 0
    assert len(got["samples"]) == 5 and all(0 < s < 5000 for s in got["samples"])
    assert got["min_ms"] == min(got["samples"]) and got["max_ms"] == max(got["samples"])
    assert got["min_ms"] <= got["average_ms"] <= got["max_ms"]
    assert abs(got["average_ms"] - sum(got["samples"]) / 5) < 0.01
    assert rec.count("HEAD", "/ok?lat=1") == 5, "a sample was answered from a cache"
    assert progress[-1] == 5


def test_latency_check_counts_failures_and_raises_when_all_fail(net: Harness, remote: tuple[str, Recorder]):
    _origin, _rec = remote
    got = net.py('await WorkerBridge.network.latency_check(R + "/flaky", samples=4, timeout=0.4)')
    assert got["failures"] == 2 and len(got["samples"]) == 2
    with pytest.raises(PyError) as info:
        net.py(f'await WorkerBridge.network.latency_check("http://127.0.0.1:{closed_port()}/x", samples=3)')
    assert info.value.type == "NetworkError"
    assert "WorkerBridgeError" in info.value.mro
    assert net.py("isinstance(workerbridge.NetworkError('x'), workerbridge.WorkerBridgeError)")


def test_bandwidth_counts_the_streamed_body(net: Harness, remote: tuple[str, Recorder]):
    size = 6 * 1024 * 1024 + 123
    got, progress = net.py(f"""
        seen = []
        got = await WorkerBridge.network.bandwidth_test(R + "/bytes/{size}",
            on_progress=lambda p: seen.append([p.done, p.total]))
        [got, seen]
    """)
    assert got["bytes"] == size and got["complete"] is True
    assert 0 < got["seconds"] < 30
    assert got["mbps"] == pytest.approx(size * 8 / 1e6 / got["seconds"], rel=1e-3)
    assert progress[-1] == [size, size]
    assert all(p[1] == size for p in progress)
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)


def test_bandwidth_stops_after_payload_size(net: Harness, remote: tuple[str, Recorder]):
    _, rec = remote
    got = net.py('await WorkerBridge.network.bandwidth_test(R + "/endless?size=1", payload_size=1_000_000)')
    assert got["bytes"] == 1_000_000 and got["complete"] is True
    assert wait_for(lambda: rec.aborted["/endless?size=1"] == 1), "the download went on"


def test_bandwidth_timeout_reports_what_arrived(net: Harness, remote: tuple[str, Recorder]):
    got = net.py('await WorkerBridge.network.bandwidth_test(R + "/endless?t=1", timeout=0.6)')
    assert got["complete"] is False and got["bytes"] > 0
    assert 0.5 < got["seconds"] < 6
    with pytest.raises(PyError) as info:
        net.py('await WorkerBridge.network.bandwidth_test(R + "/slow?bw=1", timeout=0.5)')
    assert (info.value.type, info.value.message) == ("NetworkError", "timeout")


def test_bandwidth_http_error_never_quotes_the_body(net: Harness):
    with pytest.raises(PyError) as info:
        net.py('await WorkerBridge.network.bandwidth_test(R + "/status/500")')
    assert (info.value.type, info.value.message) == ("NetworkError", "HTTP 500")
    assert SECRET not in info.value.message


def test_bandwidth_memory_stays_flat(net: Harness):
    # Bytes are counted in JS chunks and dropped: none enter the worker's Python heap.
    grew, got = net.py("""
        FB = await WorkerBridge(modules=["./faults.py"]).start()
        before = await FB.request("faults", "wasm_heap")
        got = await FB.network.bandwidth_test(R + "/bytes/67108864")
        after = await FB.request("faults", "wasm_heap")
        await FB.close()
        [after - before, got["bytes"]]
    """)
    assert got == 64 * 1024 * 1024
    assert grew < 16 * 1024 * 1024, f"worker memory grew by {grew} bytes for a 64 MB download"


def test_cancel_bandwidth_releases_the_caller_and_the_worker(net: Harness, remote: tuple[str, Recorder]):
    _, rec = remote
    outcome, latency, done, stats, after, clean = net.py("""
        token = SharedCancellation()
        seen = []
        task = asyncio.ensure_future(WorkerBridge.network.bandwidth_test(
            R + "/endless?cancel=1", timeout=120, cancel=token, on_progress=lambda p: seen.append(p.done)))
        while not seen or seen[-1] < 200_000:
            await asyncio.sleep(0.02)
        outcome, latency = await cancel_by_token(task, token)
        stats = await settled_stats(B)
        after = await WorkerBridge.network.bandwidth_test(R + "/bytes/100000")
        [outcome, latency, seen[-1], stats, after["bytes"], no_pending(B)]
    """)
    assert outcome == "cancelled" and latency < 0.1
    assert done >= 200_000
    assert stats["active"] == 0 and net.py("B.stats().restarts") == 0
    assert after == 100_000 and clean
    assert wait_for(lambda: rec.aborted["/endless?cancel=1"] == 1), "the stream was not aborted"


def test_bad_input_is_refused_on_the_page(net: Harness):
    result = net.py("""
        out = []
        N = WorkerBridge.network
        before = B.stats().processed
        calls = [
            lambda: N.test_connectivity("http://127.0.0.1/"),
            lambda: N.test_connectivity([42]),
            lambda: N.test_connectivity(["ftp://127.0.0.1/x"]),
            lambda: N.test_connectivity(["javascript:alert(1)"]),
            lambda: N.test_connectivity(["http://user:pw@127.0.0.1/"]),
            lambda: N.test_connectivity(["http://127.0.0.1:99999/"]),
            lambda: N.test_connectivity([""]),
            lambda: N.test_connectivity(["http://127.0.0.1/"], timeout=0),
            lambda: N.test_connectivity(["http://127.0.0.1/"], timeout="5"),
            lambda: N.latency_check(R, samples=0),
            lambda: N.latency_check(R, samples=2.5),
            lambda: N.latency_check(None),
            lambda: N.bandwidth_test(R, payload_size=-1),
            lambda: N.bandwidth_test(R, timeout=float("nan")),
            lambda: N.resolve_ice(["turn:127.0.0.1"]),
            lambda: N.resolve_ice("stun:127.0.0.1"),
            lambda: N.resolve_ice(timeout=-1),
        ]
        for call in calls:
            try:
                await call()
                out.append("no error")
            except workerbridge.WorkerBridgeError as exc:
                out.append(type(exc).__name__)
        out.append(B.stats().processed == before)  # nothing reached the worker
        try:
            await B.request("network", "latency_check", {"url": "ftp://x/", "samples": 1})
        except workerbridge.WorkerBridgeError as exc:
            out.append("worker: " + type(exc).__name__)
        out.append(await WorkerBridge.network.test_connectivity([]))
        out.append((await N.test_connectivity([R + "/ok"]))[0]["ok"])
        out.append(no_pending(B))
        out
    """)
    assert result == [
        "InvalidTypeError", "InvalidTypeError", "InvalidInputError", "InvalidInputError",
        "InvalidInputError", "InvalidInputError", "InvalidInputError", "InvalidInputError",
        "InvalidTypeError", "InvalidInputError", "InvalidTypeError", "InvalidTypeError",
        "InvalidInputError", "InvalidInputError", "InvalidInputError", "InvalidTypeError",
        "InvalidInputError", True, "worker: InvalidInputError", [], True, True]


# --- ICE ---------------------------------------------------------------------------------


def test_resolve_ice_gathers_host_candidates_without_stun(net: Harness):
    got, seconds = net.py("""
        t0 = time.perf_counter()
        got = await WorkerBridge.network.resolve_ice()
        [got, time.perf_counter() - t0]
    """)
    assert got, "no ICE candidate was gathered"
    for c in got:
        assert set(c) == {"candidate", "type", "protocol", "address", "port"}
        assert c["candidate"].startswith("candidate:")
        assert c["type"] == "host" and c["protocol"] in ("udp", "tcp")
        assert c["address"] and 0 < c["port"] < 65536
        assert f" {c['address']} {c['port']} typ host" in c["candidate"]
    assert seconds < 30


def stun_response(request: bytes, addr: tuple[str, int]) -> bytes | None:
    """A STUN Binding success response (RFC 5389) with XOR-MAPPED-ADDRESS, for IPv4."""
    if len(request) < 20:
        return None
    kind, _, cookie = struct.unpack("!HHI", request[:8])
    if kind != 0x0001 or cookie != 0x2112A442:
        return None
    ip = struct.unpack("!I", socket.inet_aton(addr[0]))[0]
    value = struct.pack("!BBHI", 0, 1, addr[1] ^ (cookie >> 16), ip ^ cookie)
    attr = struct.pack("!HH", 0x0020, len(value)) + value
    return struct.pack("!HHI", 0x0101, len(attr), cookie) + request[8:20] + attr


@pytest.fixture(scope="module")
def stun() -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A STUN server on 127.0.0.1 that answers Binding requests; records who asked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    asked: list[tuple[str, int]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                continue
            reply = stun_response(data, addr)
            if reply is not None:
                asked.append(addr)
                sock.sendto(reply, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1]), asked
    stop.set()
    thread.join()
    sock.close()


def test_resolve_ice_asks_the_given_stun_server(net: Harness, stun: tuple[int, list[Any]]):
    port, asked = stun
    got = net.py(f'await WorkerBridge.network.resolve_ice(["stun:127.0.0.1:{port}"], timeout=3)')
    assert asked, "the STUN server was never asked"
    srflx = [c for c in got if c["type"] == "srflx"]
    assert any(c["type"] == "host" for c in got)
    assert {(c["address"], c["port"]) for c in srflx} <= set(asked)
    assert srflx, f"no server-reflexive candidate: {got}"


def test_resolve_ice_returns_host_candidates_when_stun_is_unreachable(net: Harness):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        got, seconds = net.py(f"""
            t0 = time.perf_counter()
            got = await WorkerBridge.network.resolve_ice(["stun:127.0.0.1:{silent.getsockname()[1]}"], timeout=1.0)
            [got, time.perf_counter() - t0]
        """)
    finally:
        silent.close()
    assert any(c["type"] == "host" for c in got)
    assert not any(c["type"] == "srflx" for c in got)
    assert 0.9 < seconds < 10, "gathering did not stop at the timeout"



def test_without_isolation_cancel_still_aborts_the_download(
        plain_harness: Harness, remote: tuple[str, Recorder]):
    # No SharedArrayBuffer: progress and the cancel travel as messages.
    origin, rec = remote
    plain_harness.py("import asyncio, time\n" + PAGE_HELPERS)
    outcome, latency, done, stats, checks = plain_harness.py(f"""
        import workerbridge
        from workerbridge import WorkerBridge, SharedCancellation
        R = {origin!r}
        B = await WorkerBridge.default().start()
        token = SharedCancellation()
        seen = []
        task = asyncio.ensure_future(WorkerBridge.network.bandwidth_test(
            R + "/endless?plain=1", timeout=120, cancel=token, on_progress=lambda p: seen.append(p.done)))
        while not seen or seen[-1] < 200_000:
            await asyncio.sleep(0.02)
        outcome, latency = await cancel_by_token(task, token)
        stats = await settled_stats(B)
        checks = await WorkerBridge.network.test_connectivity([R + "/ok?plain=1", "./index.html"])
        [outcome, latency, seen[-1], stats, [c["ok"] for c in checks]]
    """)
    assert plain_harness.js("crossOriginIsolated") is False
    assert outcome == "cancelled" and latency < 0.1
    assert done >= 200_000 and stats["active"] == 0
    assert checks == [True, True]
    assert wait_for(lambda: rec.aborted["/endless?plain=1"] == 1), "the stream was not aborted"
