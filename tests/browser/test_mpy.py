"""An mpy page (`<script type="mpy" config="./dist/mpy.json">`) runs PyScript's MicroPython
from the bundle: offline (nothing but the page's own origin is asked for), at the root
and under a sub-path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Harness
from workerbridge.bundle.runtime import MICROPYTHON, pins


@pytest.fixture(scope="module")
def offline(browser: Any, server: str) -> Iterator[tuple[Any, list[str]]]:
    context = browser.new_context()
    foreign: list[str] = []

    def only_ours(route: Any) -> None:
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    context.route("**/*", only_ours)
    yield context, foreign
    context.close()


@pytest.mark.parametrize("path", ["/mpy.html", "/sub/app/mpy.html"])
def test_an_mpy_page_runs_the_bundles_micropython_offline(offline: tuple[Any, list[str]],
                                                         server: str, path: str):
    context, foreign = offline
    page = context.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(server + path)
    page.wait_for_function("window.pageResult !== undefined", timeout=60_000)
    result, first_line = page.evaluate("[window.pageResult, window.mpyFirstLine]")
    assert result == f"micropython {pins()[MICROPYTHON]['version']}"
    assert first_line > 0
    base = server + path.rsplit("/", 1)[0]
    assert base + "/dist/micropython/micropython.wasm" in asked
    assert not any("pyodide" in url for url in asked)  # no CPython on an mpy page
    assert foreign == []
    page.close()


def test_where_no_worker_may_start_an_mpy_page_runs_the_bridge_on_its_own_thread(browser: Any,
                                                                          server: str):
    context = browser.new_context()
    try:
        h = Harness(context.new_page(), server, "/mpy-harness.html?noworkers")
        got = h.py("""
async def __case():
    import js
    from workerbridge import WorkerBridge, InvalidInputError
    seen = []
    buf = js.testUtil.randomBuffer(2 * 1024 * 1024)
    want = await js.testUtil.subtleHex("SHA-256", buf)
    digest = await WorkerBridge.crypto.hash_file(buf, on_progress=lambda p: seen.append(p.done))
    big = js.testUtil.randomBuffer(33 * 1024 * 1024)  # read on this thread: no helper either
    want_big = await js.testUtil.subtleHex("SHA-256", big)
    big_ok = await WorkerBridge.crypto.hash_file(js.testUtil.file(big, "big.bin"),
                                                 on_progress=lambda p: None) == want_big
    try:
        await WorkerBridge.crypto.hash_file(b"x", "MD5")
        bad = None
    except InvalidInputError as exc:
        bad = type(exc).__name__
    return [digest == want, seen[-1], bad, big_ok]
""")
        assert got == [True, 2 * 1024 * 1024, "InvalidInputError", True]
        assert h.page.workers == []  # nothing ran in a worker: it could not
        said = [c for c in h.console if "thread" in c]  # said once, by the page
        assert len(said) == 1 and "workerbridge: no Web Worker can start here" in said[0], said
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/mpy-harness.html", "/sub/app/mpy-harness.html"])
def test_the_bridge_on_an_mpy_page_works_offline_at_any_path(offline: tuple[Any, list[str]],
                                                            server: str, path: str):
    context, foreign = offline
    h = Harness(context.new_page(), server, path)
    got = h.py("""
async def __case():
    from workerbridge import WorkerBridge
    W = WorkerBridge(modules=["./wordcount.py"])  # resolved against the page
    n = await W.request("text", "word_count", {"text": "one two three"})
    await W.close()
    return [await WorkerBridge.crypto.hash_file(b"abc"), n]
""")
    assert got == ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 3]
    base = server + path.rsplit("/", 1)[0]
    assert base + "/dist/workerbridge/remote.mjs" in h.requests
    assert base + "/wordcount.py" in h.requests
    assert any(w.url.startswith(base + "/dist/workerbridge/worker.mjs") for w in h.page.workers)
    assert foreign == []
    h.page.close()


def test_a_released_handle_is_forgotten_by_the_host(mpy_harness: Harness):
    got = mpy_harness.py("""
async def __case():
    import workerbridge
    from workerbridge import WorkerBridge
    W = WorkerBridge()
    started = await W.start()  # the bridge itself, as a handle
    size = await workerbridge.value(started.pool.size)
    await workerbridge.release(started)
    try:
        await started.stats()
        after = None
    except workerbridge.InvalidInputError as exc:
        after = str(exc)
    plain = await workerbridge.value(42)  # not a path: itself, as on a py page
    await W.close()
    return [size, after, plain]
""")
    assert got == [1, "this object was released", 42]
