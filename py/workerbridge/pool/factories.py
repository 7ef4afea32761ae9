"""How a pool makes its transports: bundle workers, a custom worker script, or the page's
own thread. The browser-only pieces are imported when a transport is made, not before."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.core.platform import IN_PYODIDE, js_global

Fallback = Literal["auto", "main", "never"]
OnMessage = Callable[[dict[str, Any]], None]
OnCrash = Callable[[str], None]
Factory = Callable[[OnMessage, OnCrash], Any]


def _need_browser() -> None:
    if not IN_PYODIDE:
        raise RuntimeError("Web Workers need a browser; on the host pass a transport factory")


def bundle_worker(modules: Sequence[str], base_url: str | None, snapshot: bool = True,
                  packages: Sequence[str] = (), packages_base_url: str | None = None) -> Factory:
    """Workers from the bundle's worker.mjs, each loading ``packages`` (from the bundle's
    lock, or the one at ``packages_base_url``) and then ``modules`` (URLs) at boot;
    ``snapshot``: boot from (or make) a cached memory snapshot."""

    shared: dict[str, Any] = {}  # the snapshot the first worker made, for the next ones

    def make(on_message: OnMessage, on_crash: OnCrash) -> Any:
        _need_browser()
        from workerbridge.pool.webworker import WORKER_SCRIPT, WorkerTransport, bundle_base, resolve

        base = resolve(base_url) if base_url else bundle_base()
        return WorkerTransport(resolve(WORKER_SCRIPT, base), on_message=on_message,
                               on_crash=on_crash, modules=[resolve(m) for m in modules],
                               snapshot=snapshot, shared=shared, packages=packages,
                               packages_base_url=resolve(packages_base_url)
                               if packages_base_url else None)

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


PACKAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def check_packages(packages: Sequence[str]) -> tuple[str, ...]:
    """``packages=`` as a tuple of names; InvalidInputError for anything else."""
    if isinstance(packages, str | bytes) or not isinstance(packages, Sequence):
        raise InvalidTypeError(f"packages must be a list of package names, not "
                               f"{type(packages).__name__}")
    for name in packages:
        if not isinstance(name, str) or not PACKAGE_NAME.fullmatch(name):
            raise InvalidInputError(f"packages: {name!r} is not a package name (a name only, "
                                    "like 'python-dateutil'; versions are the bundle's)")
    return tuple(packages)


def choose(
    modules_or_url: Factory | str | Sequence[str], base_url: str | None, fallback: Fallback,
    snapshot: bool = True, packages: Sequence[str] = (), packages_base_url: str | None = None,
) -> tuple[Factory, Factory | None, bool]:
    """(transport factory, fallback factory, whether the first runs on the page's thread)
    for a pool's first argument. A pool with ``packages`` never falls back to the page's
    thread: the page's interpreter does not hold the bundle's packages."""
    if fallback not in ("auto", "main", "never"):
        raise ValueError(f"fallback must be 'auto', 'main' or 'never', not {fallback!r}")
    packages = check_packages(packages)
    if packages_base_url is not None and not isinstance(packages_base_url, str):
        raise InvalidTypeError("packages_base_url must be a URL (str)")
    if (packages or packages_base_url) and (
            callable(modules_or_url) or (isinstance(modules_or_url, str)
                                         and not modules_or_url.endswith(".py"))):
        raise InvalidInputError("packages= and packages_base_url= need the bundle's workers "
                                "(worker module URLs), not a custom worker or transport")
    if packages and fallback == "main":
        raise InvalidInputError("packages= cannot run on the page's thread (fallback='main'): "
                                "the packages load in workers")
    if packages:
        fallback = "never"
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
    return (bundle_worker(modules, base_url, snapshot, packages, packages_base_url),
            on_main if fallback == "auto" else None, False)


def boots_from_snapshot(modules_or_url: Factory | str | Sequence[str], snapshot: bool) -> bool:
    """Whether ``choose`` makes bundle workers that share a memory snapshot."""
    if not snapshot or callable(modules_or_url):
        return False
    return not isinstance(modules_or_url, str) or modules_or_url.endswith(".py")
