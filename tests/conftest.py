"""Session-wide fixtures: one dev server per header mode, one browser, one page per mode.

Browser tests share a page (and so one main-thread Pyodide and one default worker) per
session; each test runs Python snippets in it through ``Harness.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workerbridge.devserver import DevServer, make_server, parse_mounts

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "tests" / "pages"
DIST = ROOT / "dist"
WEB = ROOT / "web"


def run(coro: Any) -> Any:
    """Run a host coroutine in a thread of its own: Playwright's sync API keeps an event
    loop on the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    # WebRTC would otherwise announce each host candidate's mDNS name on the network: with
    # this, ICE gathering stays on this machine (candidates show real addresses instead).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-sync",
]


def start_server(isolation: bool = True, extra: tuple[str, ...] = ()) -> tuple[DevServer, str]:
    """Test pages at /, the demo at /demo/, the pages again under /sub/app/; dist/ beside each."""
    mounts = parse_mounts(str(PAGES), [f"/dist={DIST}", f"/sub/app={PAGES}",
                                       f"/sub/app/dist={DIST}", f"/demo={WEB}",
                                       f"/demo/dist={DIST}", *extra])
    server = make_server(mounts, "127.0.0.1", 0, isolation=isolation)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    srv, origin = start_server(isolation=True)
    yield origin
    srv.shutdown()


@pytest.fixture(scope="session")
def plain_server() -> Iterator[str]:
    srv, origin = start_server(isolation=False)
    yield origin
    srv.shutdown()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    path = os.environ.get("WORKERBRIDGE_CHROMIUM", "/usr/bin/chromium")
    return {**browser_type_launch_args, "executable_path": path, "args": CHROMIUM_FLAGS}


def renderers_rss() -> int:
    """Bytes resident in this machine's Chromium renderer processes (a page and its
    workers live there)."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"--type=renderer" in (proc / "cmdline").read_bytes():
                status = (proc / "status").read_text()
                total += int(status.split("VmRSS:")[1].split()[0]) * 1024
        except (OSError, IndexError):
            continue
    return total


class PeakRss:
    """The renderers' resident memory, sampled every 20 ms on a thread until ``stop()``,
    which returns its peak."""

    def __init__(self) -> None:
        self.peak = 0
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, renderers_rss())
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


# Python helpers defined in a page's namespace by tests that need them.
PAGE_HELPERS = """
async def failure(coro):
    try:
        await coro
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return None

def refused(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return None

async def settled_stats(b, limit=2.0):
    # the worker's counters once no other request is active in it
    deadline = time.monotonic() + limit
    while True:
        stats = await b.request("system", "stats")
        if stats["active"] == 0 or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.01)

async def cancel_and_time(task, cancel=None):
    # cancel the task (or call cancel()), wait for it, return how long that took
    t0 = time.perf_counter()
    (cancel or task.cancel)()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return time.perf_counter() - t0

async def cancel_by_token(task, token):
    # cancel through the token; ("cancelled" | "finished", seconds until the caller let go)
    import workerbridge
    t0 = time.perf_counter()
    token.cancel()
    try:
        await task
        outcome = "finished"
    except workerbridge.CancelledError:
        outcome = "cancelled"
    return outcome, time.perf_counter() - t0
"""


# The pool a chaos run drives, and its driver (pages/chaos.py): test_chaos.py, bench/chaos.py.
CHAOS_SETUP = """
import js
CHAOS = {"__name__": "chaos_driver"}
exec(compile(await (await js.fetch("./chaos.py")).text(), "chaos.py", "exec"), CHAOS)
CP = await CHAOS["chaos_pool"]()
"""


class PyError(AssertionError):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(f"{result['type']}: {result['message']}\n{result.get('traceback', '')}")
        self.type = result["type"]
        self.message = result["message"]
        self.mro = result.get("mro", [])


class Harness:
    """A loaded test page; ``py()`` runs Python on its main thread (PyScript's Pyodide)."""

    def __init__(self, page: Any, origin: str, path: str = "/") -> None:
        self.page = page
        self.origin = origin
        self.url = origin + path
        self.requests: list[str] = []
        self.console: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("worker", lambda w: w.on("console", lambda m: self.console.append(
            f"worker {m.type}: {m.text}")))
        page.goto(self.url)
        page.wait_for_function("window.pyReady === true", timeout=120_000)

    def py(self, code: str, timeout: float = 120) -> Any:
        """Run a snippet; return its last expression (JSON), or raise PyError."""
        raw = self.page.evaluate("([c, t]) => window.pyRun(c, t)",
                                 [textwrap.dedent(code), timeout])
        result = json.loads(raw)
        if not result["ok"]:
            raise PyError(result)
        return result["value"]

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)


@pytest.fixture(scope="session")
def harness(browser: Any, server: str) -> Iterator[Harness]:
    context = browser.new_context()
    yield Harness(context.new_page(), server)
    context.close()


@pytest.fixture(scope="session")
def mpy_harness(browser: Any, server: str) -> Iterator[Harness]:
    """An mpy page (pages/mpy-harness.html): its ``workerbridge`` is the thin layer over
    the host worker. Snippets run as in browser/test_page_kinds.py."""
    context = browser.new_context()
    yield Harness(context.new_page(), server, "/mpy-harness.html")
    context.close()


@pytest.fixture(scope="session")
def plain_harness(browser: Any, plain_server: str) -> Iterator[Harness]:
    context = browser.new_context()
    yield Harness(context.new_page(), plain_server)
    context.close()


FLEET_HANDLERS = ROOT / "tests" / "fleet_handlers.py"
FLEET_MAX_FRAME = 4 * 1024 * 1024


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real fleet for the session: RabbitMQ, the gateway and 2 workers, each a process
    started here and stopped by its process id (fleet.local)."""
    from workerbridge.fleet.local import LocalFleet

    with LocalFleet(tmp_path_factory.mktemp("fleet"), workers=2,
                    modules=[str(FLEET_HANDLERS)], max_frame=FLEET_MAX_FRAME) as running:
        yield running
