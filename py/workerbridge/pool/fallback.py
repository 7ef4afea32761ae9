"""Running the handlers on the page's own thread, when workers cannot (browser only).

Same Runtime, same handlers, same envelopes as a worker — delivered in-process by the
loopback transport — so results are identical; only the page's thread does the work.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import js

from workerbridge.core import platform as _platform
from workerbridge.pool.loopback import LoopbackTransport

USER_MODULE_DIR = Path(_platform.USER_MODULE_DIR)


async def load_modules(builtin: Sequence[str], urls: Sequence[str]) -> None:
    """Import the built-in worker modules and fetch + import the user's module URLs."""
    for name in builtin:
        importlib.import_module(f"workerbridge.workers.{name}")
    if urls:
        USER_MODULE_DIR.mkdir(parents=True, exist_ok=True)
        if str(USER_MODULE_DIR) not in sys.path:
            sys.path.insert(0, str(USER_MODULE_DIR))
    for url in urls:
        response = await js.fetch(url)
        if not response.ok:
            raise OSError(f"worker module {url}: HTTP {response.status}")
        name = str(js.URL.new(url).pathname).rsplit("/", 1)[-1].removesuffix(".py")
        (USER_MODULE_DIR / f"{name}.py").write_text(str(await response.text()))
        importlib.invalidate_caches()
        importlib.import_module(name)


class MainThreadTransport(LoopbackTransport):
    """A loopback whose runtime first loads the same modules a worker would."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None],
                 on_crash: Callable[[str], None], modules: Sequence[str] = ()) -> None:
        super().__init__(on_message, on_crash)
        self._on_crash = on_crash
        self._modules = tuple(modules)

    def start(self) -> None:
        async def boot() -> None:
            from workerbridge.workers import BUILTIN

            try:
                await load_modules(BUILTIN, self._modules)
            except Exception as exc:
                self._on_crash(f"{type(exc).__name__}: {exc}")
                return
            self.runtime.ready(boot_ms=0, main_thread=True)

        self._boot_task = asyncio.ensure_future(boot())
