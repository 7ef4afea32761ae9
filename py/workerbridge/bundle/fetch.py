"""Fetching a bundle's wheels with pip, at build time only, into a cache.

pip downloads one wheel at a time (``--no-deps``): it would evaluate dependencies' markers
for this machine, so the closure is worked out by ``wheels.closure`` with Pyodide's
environment, and each package it still lacks is fetched in turn. The cache keeps every
wheel under its file name with a manifest of which requirement chose which file and its
sha256: a second run asking for the same requirements finds them all there and runs no
pip at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from workerbridge.bundle.wheels import (
    PYODIDE_PLATFORM,
    BundleError,
    MissingPackage,
    WheelInfo,
    closure,
    fits_pyodide,
    parse_wheel_name,
    read_wheel,
)

# What pip is asked for: wheels only, for Pyodide 314's Python and platform (pure ones
# match any platform).
PIP_TARGET = ("--only-binary=:all:", "--python-version", "3.14", "--platform",
              PYODIDE_PLATFORM, "--abi", "cp314", "--implementation", "cp")


def no_wheel(requirement: str) -> BundleError:
    return BundleError(
        f"{requirement}: no wheel a Pyodide 314 worker can load was found (pure Python, "
        f"or built for {PYODIDE_PLATFORM}); a package with none on PyPI (numpy, for one) "
        "must come from a Pyodide distribution: serve it and set packages_base_url=...")


class WheelCache:
    """A folder of wheels and ``resolved.json``: requirement -> (file name, sha256)."""

    def __init__(self, root: Path, index_args: Sequence[str] = ()) -> None:
        """``index_args``: where pip looks (e.g. ``--no-index --find-links DIR``);
        PyPI when empty."""
        self.root = root
        self.index_args = tuple(index_args)
        self.root.mkdir(parents=True, exist_ok=True)
        self._manifest_path = root / "resolved.json"
        try:
            self._resolved: dict[str, dict[str, str]] = json.loads(
                self._manifest_path.read_text())
        except (OSError, ValueError):
            self._resolved = {}
        self.pip_runs = 0

    def wheel(self, requirement: str) -> WheelInfo:
        """The wheel chosen for ``requirement``: from the cache, else fetched by pip."""
        known = self._resolved.get(requirement)
        if known is not None:
            path = self.root / known["file_name"]
            if path.is_file() and \
                    hashlib.sha256(path.read_bytes()).hexdigest() == known["sha256"]:
                return read_wheel(path)
        info = self._fetch(requirement)
        self._resolved[requirement] = {"file_name": info.file_name, "sha256": info.sha256}
        tmp = self._manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._resolved, indent=1, sort_keys=True) + "\n")
        tmp.replace(self._manifest_path)
        return info

    def _fetch(self, requirement: str) -> WheelInfo:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--disable-pip-version-check", *PIP_TARGET, *self.index_args,
                   "-d", tmp, requirement]
            self.pip_runs += 1
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = sorted(Path(tmp).glob("*.whl"))
            if done.returncode != 0 or len(got) != 1:
                raise no_wheel(requirement)
            if not fits_pyodide(parse_wheel_name(got[0].name)):
                raise no_wheel(requirement)
            target = self.root / got[0].name
            shutil.move(str(got[0]), target)
        return read_wheel(target)


def resolve(roots: Iterable[str], cache: WheelCache) -> list[WheelInfo]:
    """Every wheel ``roots`` need in a Pyodide worker, dependencies first."""
    roots = list(roots)
    available: dict[str, WheelInfo] = {}
    for root in roots:
        info = cache.wheel(root)
        available[info.name] = info
    while True:
        try:
            return closure(roots, available)
        except MissingPackage as missing:
            info = cache.wheel(f"{missing.name}{missing.spec}")
            if info.name != missing.name:  # its metadata names another project
                raise BundleError(f"{missing.name}: the wheel found for it is "
                                  f"{info.file_name}, of {info.name}") from None
            available[info.name] = info
