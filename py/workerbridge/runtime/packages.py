"""Packages installed at run time, in a worker, from its bundle's index only.

``await ctx.install("python-dateutil")`` loads micropip (PyPI's wheel, which the bundle
carries with its own hash in its lock) and points it at the bundle's PEP 503 index,
``packages/simple``, before it asks for anything, so nothing is fetched from PyPI or any
other host. micropip resolves the requirement and its dependencies from that index and
installs the wheels, checking each sha256 the index lists.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence

from workerbridge.core.errors import (
    InvalidInputError,
    PackageError,
    PackageNotFoundError,
    UnsupportedError,
)
from workerbridge.core.platform import IN_PYODIDE

# The bundle's index (absolute: micropip fetches from it), set when the worker boots.
index_url: str | None = None


def configure(index: str | None) -> None:
    global index_url
    index_url = index or None


async def load_from_bundle(names: Sequence[str]) -> list[str]:
    """Load packages with Pyodide's ``loadPackage``, by this interpreter's lock (the
    bundle's), checking each sha256; returns the errors it reported, since a failure
    does not reject the call."""
    import js
    import pyodide_js
    from pyodide.ffi import create_proxy, to_js

    errors: list[str] = []
    on_error = create_proxy(lambda message: errors.append(str(message)))
    quiet = create_proxy(lambda message: None)
    try:
        await pyodide_js.loadPackage(to_js(list(names)), to_js(
            {"errorCallback": on_error, "messageCallback": quiet, "checkIntegrity": True},
            dict_converter=js.Object.fromEntries))
    finally:
        on_error.destroy()
        quiet.destroy()
    return errors


async def _load_micropip() -> None:
    errors = await load_from_bundle(["micropip"])
    if errors:
        raise PackageError(f"micropip could not be loaded from the bundle: {errors[0]}")


async def install(requirements: Sequence[str]) -> list[str]:
    """Install ``requirements`` from the bundle's index; returns "name version" of what
    micropip then lists as installed from them."""
    if not requirements or not all(isinstance(r, str) and r.strip() for r in requirements):
        raise InvalidInputError("install() wants one or more requirement strings")
    if not IN_PYODIDE:
        raise UnsupportedError("install() runs in a Pyodide worker")
    if index_url is None:
        raise PackageError("this worker's bundle has no package index (packages/simple): "
                           "build it with python -m workerbridge bundle")
    await _load_micropip()
    import micropip

    micropip.set_index_urls([index_url])
    try:
        await micropip.install(list(requirements), index_urls=[index_url])
    except ValueError as exc:
        # micropip's message names the requirement, not any payload.
        raise PackageNotFoundError(
            f"{', '.join(requirements)}: not installable from the bundle's index "
            f"({index_url}): {exc}; add it with python -m workerbridge bundle OUT "
            f"--package NAME") from None
    importlib.invalidate_caches()
    installed = {_canonical(name): pkg.version for name, pkg in micropip.list().items()}
    found = []
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        name = _canonical(match[1]) if match else ""
        if name in installed:
            found.append(f"{name} {installed[name]}")
    return found


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
