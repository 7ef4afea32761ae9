"""Host unit tests of the network channel's pure parts: argument checks, result shapes,
candidate parsing."""

from __future__ import annotations

import math

import pytest
from workerbridge.workers.network import (
    Probe,
    bandwidth_summary,
    connectivity_entry,
    latency_summary,
    origin_of,
)

from conftest import run
from workerbridge import InvalidInputError, InvalidTypeError, NetworkError, UnsupportedError
from workerbridge.channels.network import (
    MAX_SECONDS,
    NetworkNamespace,
    check_count,
    check_seconds,
    check_stun_servers,
    check_url,
    check_urls,
    parse_candidate,
)

PAGE = "http://127.0.0.1:8000/sub/app/index.html?x=1#top"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://example.test/a", "http://example.test/a"),
    ("  https://example.test:8443/a?b=c  ", "https://example.test:8443/a?b=c"),
    ("HTTP://Example.test/", "HTTP://Example.test/"),
    ("./data.bin", "http://127.0.0.1:8000/sub/app/data.bin"),
    ("data.bin?v=2", "http://127.0.0.1:8000/sub/app/data.bin?v=2"),
    ("/root.txt", "http://127.0.0.1:8000/root.txt"),
    ("../up", "http://127.0.0.1:8000/sub/up"),
    ("//other.test/x", "http://other.test/x"),
    ("http://[::1]:9/", "http://[::1]:9/"),
])
def test_check_url_accepts_and_resolves_against_the_page(url, expected):
    assert check_url(url, "url", PAGE) == expected


@pytest.mark.parametrize("url", [
    "", "   ", "ftp://example.test/", "javascript:alert(1)", "file:///etc/passwd",
    "data:text/plain,hi", "http://", "http:///path", "http://user:pw@example.test/",
    "http://user@example.test/", "http://example.test:99999/", "http://example.test:port/",
    "http://exa\nmple.test/", "localhost:8000/x",
])
def test_check_url_refuses_bad_urls(url):
    with pytest.raises(InvalidInputError) as info:
        check_url(url, "url", PAGE)
    assert type(info.value) is InvalidInputError
    assert "pw" not in str(info.value) and "example" not in str(info.value)


@pytest.mark.parametrize("value", [None, 42, b"http://x/", ["http://x/"]])
def test_check_url_refuses_non_strings(value):
    with pytest.raises(InvalidTypeError):
        check_url(value, "url", PAGE)


def test_relative_urls_need_a_page():
    with pytest.raises(InvalidInputError, match="absolute"):
        check_url("./x", "url", None)
    assert check_url("http://a.test/", "url", None) == "http://a.test/"


def test_check_urls_takes_list_likes_and_names_the_bad_index():
    assert check_urls(("http://a.test/", "b"), PAGE) == [
        "http://a.test/", "http://127.0.0.1:8000/sub/app/b"]
    assert check_urls(iter([]), PAGE) == []
    for bad in ("http://a.test/", b"x", {"http://a.test/": 1}, 7, None):
        with pytest.raises(InvalidTypeError, match="list"):
            check_urls(bad, PAGE)
    with pytest.raises(InvalidInputError, match=r"urls\[1\]"):
        check_urls(["http://a.test/", "ftp://b.test/"], PAGE)


def test_check_seconds():
    assert check_seconds(5) == 5.0 and check_seconds(0.25) == 0.25
    for bad in (0, -1, math.nan, math.inf, MAX_SECONDS * 2):
        with pytest.raises(InvalidInputError):
            check_seconds(bad)
    for bad in (True, "5", None):
        with pytest.raises(InvalidTypeError):
            check_seconds(bad)


def test_check_count():
    assert check_count(3, "samples") == 3
    with pytest.raises(InvalidInputError):
        check_count(0, "samples")
    for bad in (True, 2.0, "3", None):
        with pytest.raises(InvalidTypeError):
            check_count(bad, "samples")


def test_check_stun_servers():
    assert check_stun_servers(["stun:127.0.0.1:3478", " stuns:a.test "]) == [
        "stun:127.0.0.1:3478", "stuns:a.test"]
    assert check_stun_servers(()) == []
    for bad in (["turn:a.test"], ["stun:"], ["http://a.test/"], ["a.test:3478"]):
        with pytest.raises(InvalidInputError):
            check_stun_servers(bad)
    for bad in ("stun:a.test", [3478]):
        with pytest.raises(InvalidTypeError):
            check_stun_servers(bad)


def test_parse_candidate():
    line = ("candidate:2544723648 1 udp 2113937151 dbf73b6f-d205-462e-ab8d-db260335b3c3.local "
            "38728 typ host generation 0 ufrag IwIF network-cost 999")
    assert parse_candidate(line) == {
        "candidate": line, "type": "host", "protocol": "udp",
        "address": "dbf73b6f-d205-462e-ab8d-db260335b3c3.local", "port": 38728}
    srflx = ("a=candidate:842163049 1 UDP 1677729535 203.0.113.7 56143 typ srflx "
             "raddr 0.0.0.0 rport 0 generation 0")
    got = parse_candidate(srflx)
    assert got is not None
    assert (got["type"], got["protocol"], got["address"], got["port"]) == (
        "srflx", "udp", "203.0.113.7", 56143)
    for bad in ("", "candidate:1 1 udp 1 1.2.3.4", "candidate:1 1 udp 1 1.2.3.4 x typ host",
                "foo 1 udp 1 1.2.3.4 5 typ host", "candidate:1 1 udp 1 1.2.3.4 5 kind host"):
        assert parse_candidate(bad) is None


def test_connectivity_entry_shapes():
    assert connectivity_entry("u", Probe(200, 12.34567)) == {
        "url": "u", "ok": True, "status": 200, "latency_ms": 12.346, "error": None}
    assert connectivity_entry("u", Probe(304, 1.0))["ok"] is True
    assert connectivity_entry("u", Probe(404, 3.0)) == {
        "url": "u", "ok": False, "status": 404, "latency_ms": 3.0, "error": "HTTP 404"}
    assert connectivity_entry("u", Probe(None, 500.0, "timeout")) == {
        "url": "u", "ok": False, "status": None, "latency_ms": None, "error": "timeout"}


def test_latency_summary():
    got = latency_summary("u", [3.0, 1.0, 2.0], 2)
    assert got == {"url": "u", "average_ms": 2.0, "min_ms": 1.0, "max_ms": 3.0,
                   "samples": [3.0, 1.0, 2.0], "failures": 2}
    with pytest.raises(NetworkError, match="none of 4"):
        latency_summary("u", [], 4)


def test_bandwidth_summary_is_in_megabits():
    got = bandwidth_summary("u", 1_250_000, 2.0, True)
    assert got == {"url": "u", "bytes": 1_250_000, "seconds": 2.0, "mbps": 5.0,
                   "complete": True}
    assert bandwidth_summary("u", 0, 0.0, False)["mbps"] == 0.0


def test_origin_of_groups_by_scheme_host_and_port():
    assert origin_of("HTTP://A.test:80/x?y") == "http://a.test:80"
    assert origin_of("https://a.test/x") != origin_of("http://a.test/x")


def test_resolve_ice_needs_a_page():
    ns = NetworkNamespace(None)  # type: ignore[arg-type]  # never reaches the bridge
    with pytest.raises(UnsupportedError, match="RTCPeerConnection"):
        run(ns.resolve_ice())
    with pytest.raises(InvalidInputError):
        run(ns.resolve_ice(["turn:a.test"]))
