"""An mpy page (`<script type="mpy" config="./dist/mpy.json">`) runs PyScript's MicroPython
from the bundle: offline (nothing but the page's own origin is asked for), at the root
and under a sub-path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

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
