"""The page-side API of the ``network`` channel, and the argument checks it shares with
the worker.

Reachability, latency and download speed are measured with ``fetch`` inside a worker.
ICE candidates are gathered here on the page: ``RTCPeerConnection`` does not exist in
workers.

Its worker half: ``workers/network.py``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any
from urllib.parse import urljoin, urlsplit

from workerbridge.channels.base import Namespace
from workerbridge.core.errors import InvalidInputError, InvalidTypeError, UnsupportedError
from workerbridge.core.platform import IN_PYODIDE, in_worker, js_global
from workerbridge.core.shared import SharedCancellation
from workerbridge.pool.connection import ProgressCallback

# setTimeout overflows above 2**31 - 1 ms and then fires at once: a longer limit would
# silently become no limit at all.
MAX_SECONDS = (2**31 - 1) / 1000

STUN_SCHEMES = ("stun", "stuns")


def check_url(value: object, what: str = "url", base: str | None = None) -> str:
    """An absolute http(s) URL; a relative one is resolved against ``base`` (the page).

    Messages name the argument, never the URL: it may carry tokens.
    """
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a str URL, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidInputError(f"{what} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidInputError(f"{what} contains control characters")
    if not urlsplit(text).scheme:
        if base is None:
            raise InvalidInputError(
                f"{what} must be an absolute http(s) URL (no page to resolve it against)")
        text = urljoin(base, text)
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInputError(f"{what} must be an http or https URL, not {parts.scheme}:")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        raise InvalidInputError(f"{what} has an invalid port") from None
    if not parts.hostname:
        raise InvalidInputError(f"{what} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError(f"{what} must not carry credentials (fetch refuses them)")
    return text


def _items(values: object, what: str) -> list[object]:
    """The elements of a list-like argument; a lone str is refused, not split."""
    if isinstance(values, str | bytes | bytearray | Mapping) or not isinstance(values, Iterable):
        raise InvalidTypeError(
            f"{what} must be a list of str, not {type(values).__name__} (wrap one in a list)")
    return list(values)


def check_urls(urls: object, base: str | None = None) -> list[str]:
    return [check_url(u, f"urls[{i}]", base) for i, u in enumerate(_items(urls, "urls"))]


def check_seconds(value: object, what: str = "timeout") -> float:
    """A positive, finite number of seconds the browser's timers can hold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(f"{what} must be a positive number of seconds")
    if seconds > MAX_SECONDS:
        raise InvalidInputError(f"{what} must be at most {MAX_SECONDS:.0f} s")
    return seconds


def check_count(value: object, what: str) -> int:
    """A positive int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{what} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise InvalidInputError(f"{what} must be at least 1")
    return value


def check_stun_servers(servers: object) -> list[str]:
    """``stun:host[:port]`` / ``stuns:`` URLs; TURN servers need credentials, not taken here."""
    out = []
    for i, server in enumerate(_items(servers, "stun_servers")):
        what = f"stun_servers[{i}]"
        if not isinstance(server, str):
            raise InvalidTypeError(f"{what} must be a str, not {type(server).__name__}")
        scheme, _, rest = server.strip().partition(":")
        if scheme.lower() not in STUN_SCHEMES or not rest.strip("/"):
            raise InvalidInputError(f"{what} must look like stun:host:port")
        out.append(server.strip())
    return out


def parse_candidate(line: str) -> dict[str, Any] | None:
    """The fields of an ICE candidate line (RFC 8839), or None if it is not one.

    ``candidate:<foundation> <component> <protocol> <priority> <address> <port> typ <type> …``
    """
    fields = line.strip().removeprefix("a=").split()
    if len(fields) < 8 or not fields[0].startswith("candidate:") or fields[6] != "typ":
        return None
    try:
        port = int(fields[5])
    except ValueError:
        return None
    return {"candidate": line.strip(), "type": fields[7], "protocol": fields[2].lower(),
            "address": fields[4], "port": port}


def _page_base() -> str | None:
    """The URL relative URLs are resolved against: the page's, not the worker's."""
    if not IN_PYODIDE:
        return None
    g = js_global()
    doc = getattr(g, "document", None)
    if doc is not None:
        return str(doc.baseURI)
    location = getattr(g, "location", None)
    return str(location.href) if location is not None else None


class NetworkNamespace(Namespace):
    """Reachability, latency and download speed (fetch in a worker); ICE on the page."""

    channel = "network"

    async def test_connectivity(
        self,
        urls: Iterable[str],
        timeout: float = 5.0,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> list[dict[str, Any]]:
        """Check every URL at once; one ``{"url", "ok", "status", "latency_ms", "error"}``
        per URL, in order. ``ok``: HTTP 2xx/3xx within ``timeout`` seconds per URL.
        Progress counts URLs done."""
        checked = check_urls(urls, _page_base())
        seconds = check_seconds(timeout)
        if not checked:
            return []
        return list(await self._bridge.request(
            self.channel, "test_connectivity", {"urls": checked, "timeout": seconds},
            on_progress=on_progress, cancel=cancel))

    async def latency_check(
        self,
        url: str,
        samples: int = 5,
        timeout: float = 5.0,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> dict[str, Any]:
        """``samples`` requests one after another, each timed to its response headers:
        ``{"url", "average_ms", "min_ms", "max_ms", "samples", "failures"}``.
        NetworkError if none is answered."""
        checked = check_url(url, "url", _page_base())
        payload = {"url": checked, "samples": check_count(samples, "samples"),
                   "timeout": check_seconds(timeout)}
        return dict(await self._bridge.request(
            self.channel, "latency_check", payload, on_progress=on_progress, cancel=cancel))

    async def bandwidth_test(
        self,
        url: str,
        payload_size: int | None = None,
        timeout: float = 30.0,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: SharedCancellation | None = None,
    ) -> dict[str, Any]:
        """Download ``url`` (at most ``payload_size`` bytes), counting bytes without
        keeping them: ``{"url", "bytes", "seconds", "mbps", "complete"}``, mbps in
        megabits per second. Progress counts bytes."""
        checked = check_url(url, "url", _page_base())
        payload = {"url": checked, "timeout": check_seconds(timeout),
                   "payload_size": None if payload_size is None
                   else check_count(payload_size, "payload_size")}
        return dict(await self._bridge.request(
            self.channel, "bandwidth_test", payload, on_progress=on_progress, cancel=cancel))

    async def resolve_ice(
        self, stun_servers: Iterable[str] = (), timeout: float = 3.0,
    ) -> list[dict[str, Any]]:
        """ICE candidates this browser offers: ``{"candidate", "type", "protocol",
        "address", "port"}`` each, gathered for up to ``timeout`` seconds. Runs on the
        page's thread; host addresses may be mDNS ``*.local`` names."""
        servers = check_stun_servers(stun_servers)
        seconds = check_seconds(timeout)
        if not IN_PYODIDE or in_worker() or not hasattr(js_global(), "RTCPeerConnection"):
            # RTCPeerConnection exists only on a page's main thread, never in workers.
            raise UnsupportedError("resolve_ice needs RTCPeerConnection (a page's main thread)")
        lines = await _gather_candidates(servers, seconds)
        return [c for c in map(parse_candidate, lines) if c is not None]


async def _gather_candidates(servers: list[str], seconds: float) -> list[str]:
    """Candidate lines from an offer's ICE gathering, until it completes or ``seconds``."""
    from pyodide.ffi import JsException, create_proxy, to_js

    g = js_global()
    config = to_js({"iceServers": [{"urls": s} for s in servers]},
                   dict_converter=g.Object.fromEntries)
    try:
        pc = g.RTCPeerConnection.new(config)
    except JsException:
        raise InvalidInputError("the browser refused the STUN server list") from None
    lines: list[str] = []
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_candidate(event: Any) -> None:
        # A null candidate (or an empty one, in older browsers) marks the end of gathering.
        line = getattr(event.candidate, "candidate", None)
        if line:
            lines.append(str(line))
        elif not finished.done():
            finished.set_result(None)

    def on_state(event: Any) -> None:
        if str(pc.iceGatheringState) == "complete" and not finished.done():
            finished.set_result(None)

    candidate_proxy, state_proxy = create_proxy(on_candidate), create_proxy(on_state)
    pc.addEventListener("icecandidate", candidate_proxy)
    pc.addEventListener("icegatheringstatechange", state_proxy)
    try:
        # A data channel gives the offer something to negotiate, which starts gathering.
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        with suppress(TimeoutError):
            await asyncio.wait_for(finished, seconds)
    finally:
        pc.close()
        pc.removeEventListener("icecandidate", candidate_proxy)
        pc.removeEventListener("icegatheringstatechange", state_proxy)
        candidate_proxy.destroy()
        state_proxy.destroy()
    return lines
