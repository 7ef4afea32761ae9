"""The ``network`` channel: reachability, latency and download speed, measured with fetch.

Every request is made with ``cache: "no-store"`` (so the browser's cache never answers
and adds ``Cache-Control: no-cache``) and its own AbortController, aborted at its
deadline, when the caller cancels, and once the handler is done with it. Errors name
what failed (``timeout``, ``network error``, ``HTTP 404``), never a response body.

Its page half: ``workerbridge.channels.network``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from workerbridge.channels.network import check_count, check_seconds, check_url
from workerbridge.core.errors import NetworkError
from workerbridge.runtime.dispatch import Context, handler

# Chromium opens at most 6 HTTP/1.1 connections per host and queues the rest: a request
# waiting there would spend its timeout before it was sent. Keep the rest waiting here.
MAX_PER_ORIGIN = 6

# HEAD answers "method not allowed" / "not implemented" on some servers: ask with GET then.
HEAD_REFUSED = (405, 501)

TIMEOUT = "timeout"
# fetch reports refused connections, DNS, TLS and CORS failures alike, by design.
FAILED = "network error"


@dataclass(frozen=True, slots=True)
class Probe:
    """One request's outcome: the status (None if no response) and the time to it."""

    status: int | None
    ms: float
    error: str | None = None


def is_ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 400


def connectivity_entry(url: str, probe: Probe) -> dict[str, Any]:
    """One URL's line in ``test_connectivity``'s answer."""
    ok = is_ok(probe.status)
    error = probe.error if probe.status is None else None if ok else f"HTTP {probe.status}"
    return {"url": url, "ok": ok, "status": probe.status,
            "latency_ms": round(probe.ms, 3) if probe.status is not None else None,
            "error": error}


def latency_summary(url: str, samples: list[float], failures: int) -> dict[str, Any]:
    """``latency_check``'s answer from the answered samples (ms) and the failure count."""
    if not samples:
        raise NetworkError(f"none of {failures} requests was answered")
    return {"url": url, "average_ms": round(sum(samples) / len(samples), 3),
            "min_ms": round(min(samples), 3), "max_ms": round(max(samples), 3),
            "samples": [round(s, 3) for s in samples], "failures": failures}


def bandwidth_summary(url: str, nbytes: int, seconds: float, complete: bool) -> dict[str, Any]:
    """``bandwidth_test``'s answer; mbps is megabits (10**6 bits) per second."""
    mbps = nbytes * 8 / 1e6 / seconds if seconds > 0 else 0.0
    return {"url": url, "bytes": nbytes, "seconds": round(seconds, 6), "mbps": round(mbps, 3),
            "complete": complete}


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class Fetch:
    """One fetch with its own AbortController, aborted at ``timeout`` seconds (browser only)."""

    def __init__(self, url: str, timeout: float) -> None:
        import js

        self.url = url
        self.controller = js.AbortController.new()
        self.expired = False
        self.started = time.perf_counter()  # reset when the request is sent
        self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.controller.abort()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    async def send(self, method: str) -> Any:
        """The response, once its headers arrive; NetworkError if none does."""
        import js
        from pyodide.ffi import JsException, to_js

        options = to_js({"method": method, "cache": "no-store",
                         "signal": self.controller.signal},
                        dict_converter=js.Object.fromEntries)
        self.started = time.perf_counter()
        try:
            return await js.fetch(self.url, options)
        except JsException:
            raise NetworkError(TIMEOUT if self.expired else FAILED) from None

    def close(self) -> None:
        """Stop the timer and whatever is still arriving (a body nobody will read)."""
        self._timer.cancel()
        self.controller.abort()


async def probe(url: str, timeout: float) -> Probe:
    """HEAD ``url`` (GET if HEAD is refused); time until the response headers."""
    for method in ("HEAD", "GET"):
        request = Fetch(url, timeout)
        try:
            response = await request.send(method)
            status = int(response.status)
            if method == "HEAD" and status in HEAD_REFUSED:
                continue
            return Probe(status, request.elapsed_ms())
        except NetworkError as exc:
            return Probe(None, request.elapsed_ms(), str(exc))
        finally:
            request.close()  # a GET's body is not wanted: aborting stops its download
    raise AssertionError("unreachable")


@handler("network", "test_connectivity")
async def test_connectivity(ctx: Context, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Probe every URL concurrently; one entry per URL, in order."""
    urls = [check_url(u, f"urls[{i}]") for i, u in enumerate(payload["urls"])]
    timeout = check_seconds(payload.get("timeout", 5.0))
    ctx.set_total(len(urls))
    slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
        lambda: asyncio.Semaphore(MAX_PER_ORIGIN))
    done = 0

    async def one(url: str) -> dict[str, Any]:
        nonlocal done
        async with slots[origin_of(url)]:
            entry = connectivity_entry(url, await probe(url, timeout))
        done += 1
        ctx.progress(done)
        return entry

    # Cancelling this handler (or one probe failing) cancels every probe, and each
    # aborts its own fetch.
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(u)) for u in urls]
    return [t.result() for t in tasks]


@handler("network", "latency_check")
async def latency_check(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Time ``samples`` requests one after another; any HTTP answer counts as a sample."""
    url = check_url(payload["url"])
    count = check_count(payload.get("samples", 5), "samples")
    timeout = check_seconds(payload.get("timeout", 5.0))
    ctx.set_total(count)
    samples: list[float] = []
    failures = 0
    for i in range(count):
        result = await probe(url, timeout)
        if result.status is None:
            failures += 1
        else:
            samples.append(result.ms)
        ctx.progress(i + 1)
    return latency_summary(url, samples, failures)


@handler("network", "bandwidth_test")
async def bandwidth_test(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Stream the body, counting bytes and dropping them, until it ends, ``payload_size``
    bytes have arrived, or ``timeout`` (then ``complete`` is False)."""
    from pyodide.ffi import JsException

    url = check_url(payload["url"])
    timeout = check_seconds(payload.get("timeout", 30.0))
    limit = payload.get("payload_size")
    limit = None if limit is None else check_count(limit, "payload_size")
    request = Fetch(url, timeout)
    try:
        response = await request.send("GET")
        status = int(response.status)
        if not 200 <= status < 300:
            raise NetworkError(f"HTTP {status}")
        length = str(response.headers.get("content-length") or "")
        # Content-Length is the encoded size: a compressed body may count past it.
        total = limit or (int(length) if length.isdigit() else 0)
        ctx.set_total(total)
        received = 0
        complete = True
        get_reader = getattr(response.body, "getReader", None)  # no body: null
        reader = get_reader() if get_reader is not None else None
        while reader is not None and (limit is None or received < limit):
            try:
                chunk = await reader.read()
            except JsException:
                if not request.expired:
                    raise NetworkError(f"{FAILED}: the download broke off") from None
                complete = False
                break
            if chunk.done:
                break
            received += int(chunk.value.byteLength)
            total = max(total, received) if limit is None else limit
            ctx.progress(min(received, total), total)
            await ctx.checkpoint()
        seconds = time.perf_counter() - request.started
    finally:
        request.close()
    nbytes = received if limit is None else min(received, limit)
    return bandwidth_summary(url, nbytes, seconds, complete)
