"""Durable outboxes to a server: ``outbox = await jobs.outbox(name, url=...)``.

Events are stored in the job database (``store.OUTBOX``) before ``add`` returns, in the
order they were added, and leave it only when the server acknowledges them by id. The
tab that holds the outbox's lease sends them, ``batch`` at a time, from a worker
(``outbox.send``, over WebSocket or HTTP POST), one batch in flight: so they reach the
server in order, and a server that drops a repeated id sees each event once in effect.

A failed batch (no connection, a dropped connection, a timeout, an HTTP error) is sent
again after a backoff; while the browser says it is offline, sending pauses until it is
back. Nothing is dropped: a reload, a closed tab or a crashed worker leaves the events
stored, and the next tab to run the outbox sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from workerbridge.core.errors import InvalidInputError, InvalidTypeError, WorkerBridgeError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.jobs import store
from workerbridge.jobs.graph import NAME
from workerbridge.jobs.policy import Backoff

log = logging.getLogger("workerbridge.outbox")

SCHEMES = ("http", "https", "ws", "wss")
MAX_URL = 2048
MAX_BATCH = 1000
OFFLINE_POLL = 1.0  # seconds between looks at navigator.onLine while offline
# Seconds between looks (read-only) at an empty outbox: events a pipeline's stage, or
# another tab, stored there are sent this soon. An add in this tab wakes it at once.
IDLE_POLL = 0.1


def check_url(url: Any) -> str:
    """An outbox's server: an absolute http(s) or ws(s) URL."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise InvalidInputError("an outbox's url is an http(s):// or ws(s):// URL")
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.netloc:
        raise InvalidInputError(f"an outbox's url is an absolute http(s):// or ws(s):// URL, "
                                f"not one of scheme {parts.scheme[:20]!r}")
    return url


def check_headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise InvalidTypeError("headers is a dict of str to str")
    return dict(headers)


class Engine(Protocol):
    """What an outbox uses of the jobs engine (``engine.Jobs``)."""

    pool: Any
    clock: Callable[[], float]
    lease: float
    owner: str

    async def _tx(self, program: Any, mode: str = ...) -> Any: ...
    def _gone(self) -> frozenset[str]: ...


@dataclass(slots=True)
class OutboxStats:
    sent: int = 0  # events acknowledged (and removed) by this tab
    batches: int = 0
    failures: int = 0  # batches that failed, in a row since the last success
    retries: int = 0  # batches sent again after a failure, in all
    last_error: str | None = None  # what failed, never a payload
    offline: bool = False
    holding: bool = False  # this tab holds the lease and sends


class Outbox:
    """A handle on one outbox; this tab sends its events while it holds the lease."""

    def __init__(self, jobs: Engine, name: str, url: str, *, batch: int = 100,
                 headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                 backoff: Backoff | None = None) -> None:
        self._jobs = jobs
        self.name = name
        self.url = url
        self.batch = batch
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.backoff = backoff or Backoff(base=0.2, factor=2.0, max=10.0)
        self.stats = OutboxStats()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._online_proxy: Any = None
        self._backing_off = False

    def __repr__(self) -> str:
        return f"Outbox({self.name!r}, {self.url!r})"

    # --- adding ------------------------------------------------------------------------

    async def add(self, event: Any, *, key: str | None = None, id: str | None = None) -> str:
        """Store an event at the end of the outbox; returns its id once it is durable.
        ``id``: adding an id already there adds nothing; ``key``: its ordering key."""
        (out,) = await self.add_many([event], keys=None if key is None else [key],
                                     ids=None if id is None else [id])
        return out

    async def add_many(self, events: Sequence[Any], *, keys: Sequence[str | None] | None = None,
                       ids: Sequence[str] | None = None) -> list[str]:
        """Many events in one transaction; their ids."""
        for what, given in (("keys", keys), ("ids", ids)):
            if given is not None and len(given) != len(events):
                raise InvalidInputError(f"{what}, when given, name every event")
        made = list(ids) if ids is not None else [secrets.token_hex(16) for _ in events]
        for ident in made:
            if not isinstance(ident, str) or not ident or len(ident) > store.MAX_ID:
                raise InvalidInputError("an event id is a non-empty string of at most "
                                        f"{store.MAX_ID} characters")
        named = list(keys) if keys is not None else [store.event_key(e) for e in events]
        for key in named:
            if key is not None and (not isinstance(key, str) or len(key) > 200):
                raise InvalidInputError("an event key is a string of at most 200 characters")
        for event in events:
            store.check_value(event, "an event")
        await self._jobs._tx(store.outbox_add(
            [(self.name, i, k, e) for i, k, e in zip(made, named, events, strict=True)],
            self._jobs.clock()))
        self._kick()
        return made

    async def pending(self) -> int:
        """Events stored and not yet acknowledged."""
        return int(await self._jobs._tx(store.outbox_count(self.name), "readonly"))

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every stored event is acknowledged (True), or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self._kick()
        while await self.pending():
            if time.monotonic() >= deadline:
                return False
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(),
                                       min(0.25, max(0.0, deadline - time.monotonic())))
        return True

    # --- sending -----------------------------------------------------------------------

    def _kick(self) -> None:
        if not self._backing_off:
            self._wake.set()

    def start(self) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.ensure_future(self._send_loop())
            self._watch_online()

    async def _send_loop(self) -> None:
        while not self._closing:
            try:
                sent = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store itself failed: try again later
                log.error("outbox %s: %s", self.name, type(exc).__name__)
                sent = None
                self._failed(type(exc).__name__)
            if self._closing:
                break
            if sent is None:  # failed: back off (adds do not cut it short; coming online does)
                self._wake.clear()
                self._backing_off = True
                try:
                    await self._sleep(self.backoff.delay(max(1, self.stats.failures)))
                finally:
                    self._backing_off = False
            elif sent == 0:  # nothing to send, or another tab sends: wait for news
                self._idle.set()
                await self._sleep(IDLE_POLL)

    async def _sleep(self, seconds: float) -> None:
        if self._wake.is_set():  # woken while it worked: go again at once
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _online(self) -> bool:
        if not IN_PYODIDE:
            return True
        import js

        return bool(getattr(js.navigator, "onLine", True))

    async def _round(self) -> int | None:
        """Send one batch; how many were acknowledged, or None when it failed."""
        woken = self._wake.is_set()
        self._wake.clear()
        if not self._online():  # until `online` wakes it, or the next look
            self.stats.offline = True
            await self._sleep(OFFLINE_POLL)
            return 0
        self.stats.offline = False
        jobs = self._jobs
        if not woken and not await self.pending():
            return 0  # a read-only look: nothing stored
        owner = jobs.owner
        events = await jobs._tx(store.outbox_take(self.name, owner, jobs.lease, jobs.clock(),
                                                  self.batch, jobs._gone()))
        self.stats.holding = events is not None
        if not events:
            return 0
        if self.stats.failures:
            self.stats.retries += 1
        answer = await jobs.pool.execute("outbox", "send", {
            "url": self.url, "headers": self.headers, "timeout": self.timeout,
            "events": [{"id": e["id"], "key": e["key"], "data": e["data"]} for e in events]},
            timeout=self.timeout + 5.0)
        acked = [i for i in answer.get("acked") or [] if isinstance(i, str)]
        if acked:
            await jobs._tx(store.outbox_remove(self.name, owner, acked, jobs.lease,
                                               jobs.clock()))
            self.stats.sent += len(acked)
            self.stats.batches += 1
        error = answer.get("error")
        if error:
            self._failed(str(error)[:80])
            return None
        self.stats.failures = 0
        self.stats.last_error = None
        return len(acked)

    def _failed(self, what: str) -> None:
        self.stats.failures += 1
        self.stats.last_error = what

    def _watch_online(self) -> None:
        if not IN_PYODIDE or self._online_proxy is not None:
            return
        import js
        from pyodide.ffi import create_proxy

        self._online_proxy = create_proxy(lambda event: self._wake.set())
        # A window, or a worker (an mpy page's host, workerbridge/host.py): both have it.
        js.globalThis.addEventListener("online", self._online_proxy)

    async def close(self, timeout: float = 5.0) -> bool:
        """Send what is stored for up to ``timeout`` seconds, then stop sending from this
        tab and give up the lease; True if everything was acknowledged. What is left
        stays stored."""
        drained = await self.flush(timeout)
        self._closing = True
        self._kick()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(WorkerBridgeError):
            await self._jobs._tx(store.outbox_release(self.name, self._jobs.owner))
        if self._online_proxy is not None:
            import js

            js.globalThis.removeEventListener("online", self._online_proxy)
            self._online_proxy.destroy()
            self._online_proxy = None
        return drained


def define(jobs: Engine, name: str, url: str, *, batch: int = 100,
           headers: Mapping[str, str] | None = None, timeout: float = 10.0,
           backoff: Backoff | None = None) -> Outbox:
    """A checked outbox (nothing is written until events are added)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInputError("an outbox name is an identifier (dashes allowed)")
    if IN_PYODIDE and isinstance(url, str) and url.strip() and "://" not in url:
        import js

        url = str(js.URL.new(url, js.location.href).href)  # relative to the page
    url = check_url(url)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InvalidInputError(f"batch is an int from 1 to {MAX_BATCH}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise InvalidInputError("timeout is seconds > 0")
    if backoff is not None and not isinstance(backoff, Backoff):
        raise InvalidTypeError("backoff is a Backoff(...)")
    return Outbox(jobs, name, url, batch=batch, headers=check_headers(headers),
                  timeout=float(timeout), backoff=backoff)
