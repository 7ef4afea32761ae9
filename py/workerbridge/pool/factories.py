"""How a pool makes its transports: bundle workers, a custom worker script, or the page's
own thread. The browser-only pieces are imported when a transport is made, not before."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from workerbridge.core.platform import IN_PYODIDE, js_global

Fallback = Literal["auto", "main", "never"]
OnMessage = Callable[[dict[str, Any]], None]
OnCrash = Callable[[str], None]
Factory = Callable[[OnMessage, OnCrash], Any]


def _need_browser() -> None:
    if not IN_PYODIDE:
        raise RuntimeError("Web Workers need a browser; on the host pass a transport factory")


def bundle_worker(modules: Sequence[str], base_url: str | None, snapshot: bool = True) -> Factory:
    """Workers from the bundle's worker.mjs, each loading ``modules`` (URLs) at boot;
    ``snapshot``: boot from (or make) a cached memory snapshot."""

    shared: dict[str, Any] = {}  # the snapshot the first worker made, for the next ones

    def make(on_message: OnMessage, on_crash: OnCrash) -> Any:
        _need_browser()
        from workerbridge.pool.webworker import WORKER_SCRIPT, WorkerTransport, bundle_base, resolve

        base = resolve(base_url) if base_url else bundle_base()
        return WorkerTransport(resolve(WORKER_SCRIPT, base), on_message=on_message,
                               on_crash=on_crash, modules=[resolve(m) for m in modules],
                               snapshot=snapshot, shared=shared)

    return make


def worker_script(url: str) -> Factory:
    """Workers from your own module-worker script that speaks the envelope protocol."""

    def make(on_message: OnMessage, on_crash: OnCrash) -> Any:
        _need_browser()
        from workerbridge.pool.webworker import WorkerTransport, resolve

        return WorkerTransport(resolve(url), on_message=on_message, on_crash=on_crash)

    return make


def main_thread(modules: Sequence[str]) -> Factory | None:
    """The handlers on the page's own thread (None outside a browser)."""
    if not IN_PYODIDE:
        return None

    def make(on_message: OnMessage, on_crash: OnCrash) -> Any:
        from workerbridge.pool.fallback import MainThreadTransport
        from workerbridge.pool.webworker import resolve

        return MainThreadTransport(on_message, on_crash, [resolve(m) for m in modules])

    return make


def default_size() -> int:
    """``navigator.hardwareConcurrency`` in a browser, else 1."""
    if IN_PYODIDE:
        navigator = getattr(js_global(), "navigator", None)
        cores = getattr(navigator, "hardwareConcurrency", None)
        if isinstance(cores, int) and cores > 0:
            return cores
    return 1


def choose(
    modules_or_url: Factory | str | Sequence[str], base_url: str | None, fallback: Fallback,
    snapshot: bool = True,
) -> tuple[Factory, Factory | None, bool]:
    """(transport factory, fallback factory, whether the first runs on the page's thread)
    for a pool's first argument."""
    if fallback not in ("auto", "main", "never"):
        raise ValueError(f"fallback must be 'auto', 'main' or 'never', not {fallback!r}")
    if callable(modules_or_url):
        return modules_or_url, None, False
    if isinstance(modules_or_url, str):
        if modules_or_url.endswith(".py"):
            modules: Sequence[str] = (modules_or_url,)
        else:
            return worker_script(modules_or_url), None, False
    else:
        modules = tuple(modules_or_url)
    on_main = main_thread(modules) if fallback != "never" else None
    if fallback == "main" and on_main is not None:
        return on_main, None, True
    return (bundle_worker(modules, base_url, snapshot), on_main if fallback == "auto" else None,
            False)


def boots_from_snapshot(modules_or_url: Factory | str | Sequence[str], snapshot: bool) -> bool:
    """Whether ``choose`` makes bundle workers that share a memory snapshot."""
    if not snapshot or callable(modules_or_url):
        return False
    return not isinstance(modules_or_url, str) or modules_or_url.endswith(".py")
