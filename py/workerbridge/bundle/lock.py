"""A bundle's package lock, in Pyodide's lock format (``pyodide-lock.json``).

Pyodide loads a package by its lock entry: the wheel's file name, its sha256 (checked on
load), the modules it provides and the packages it depends on. The ``info`` block names
the runtime the wheels were chosen for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from workerbridge.bundle.wheels import (
    PYODIDE_ENVIRONMENT,
    BundleError,
    WheelInfo,
    requirements,
)

LOCK_INFO: dict[str, str] = {
    "abi_version": "2026_0",
    "arch": "wasm32",
    "platform": "emscripten_5_0_3",
    "python": PYODIDE_ENVIRONMENT["python_full_version"],
}


def lock_entry(info: WheelInfo) -> dict[str, Any]:
    """One package's entry, as Pyodide's own lock writes it."""
    return {
        "depends": sorted({name for name, _ in requirements(info)}),
        "file_name": info.file_name,
        "imports": list(info.imports),
        "install_dir": "site",
        "name": info.name,
        "package_type": "package",
        "sha256": info.sha256,
        "tool": {},
        "unvendored_tests": False,
        "version": info.version,
    }


def make_lock(wheels: Iterable[WheelInfo]) -> dict[str, Any]:
    """The whole lock for a set of wheels (the closure: every dependency included)."""
    packages = {w.name: lock_entry(w) for w in sorted(wheels, key=lambda w: w.name)}
    missing = sorted({d for entry in packages.values() for d in entry["depends"]}
                     - set(packages))
    if missing:
        raise BundleError(f"the lock would name packages it does not hold: "
                          f"{', '.join(missing)}")
    return {"info": dict(LOCK_INFO), "packages": packages}


def lock_text(lock: dict[str, Any]) -> str:
    """The lock as written to disk: stable, so an unchanged bundle writes the same bytes."""
    return json.dumps(lock, indent=1, sort_keys=True) + "\n"


def lock_hash(lock: dict[str, Any]) -> str:
    """A short digest of the lock (a snapshot made with these packages names it)."""
    return hashlib.sha256(lock_text(lock).encode()).hexdigest()[:16]
