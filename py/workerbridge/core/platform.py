"""The one place that decides whether we run in Pyodide and reaches for JS globals.

Everything above this layer asks ``IN_PYODIDE`` once instead of probing ``js`` itself.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

IN_PYODIDE = "_pyodide_core" in sys.modules or sys.platform == "emscripten"

# Where worker modules loaded by URL are written and imported from (web/worker.mjs too).
USER_MODULE_DIR = "/home/pyodide/workerbridge_user"


def js_global() -> Any:
    """The JS global object (``globalThis``): a Window or a DedicatedWorkerGlobalScope."""
    import js

    return js


def cross_origin_isolated() -> bool:
    """True when SharedArrayBuffer and Atomics are usable (COOP/COEP served)."""
    if not IN_PYODIDE:
        return False
    g = js_global()
    return bool(getattr(g, "crossOriginIsolated", False)) and hasattr(g, "SharedArrayBuffer")


def in_worker() -> bool:
    if not IN_PYODIDE:
        return False
    g = js_global()
    return not hasattr(g, "document")


@cache
def big_atomics() -> Any:
    """JS helpers for 64-bit Atomics on a BigInt64Array.

    Pyodide turns every JS BigInt it returns into a Python int and every Python int below
    2**53 into a JS Number, so Python alone cannot hand Atomics the BigInt it insists on.
    """
    g = js_global()
    body = (
        "return {"
        " load: (a, i) => Number(Atomics.load(a, i)),"
        " store: (a, i, v) => { Atomics.store(a, i, BigInt(v)); },"
        " add: (a, i, v) => Number(Atomics.add(a, i, BigInt(v))),"
        " cas: (a, i, e, v) => Number(Atomics.compareExchange(a, i, BigInt(e), BigInt(v))),"
        "};"
    )
    return g.Function.new(body)()


def type_tag(value: Any) -> str:
    """``Object.prototype.toString`` of a JS value: "[object ArrayBuffer]", "[object File]" …"""
    g = js_global()
    return str(g.Object.prototype.toString.call(value))
