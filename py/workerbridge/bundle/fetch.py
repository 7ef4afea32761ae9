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
    canonical,
    closure,
    fits_pyodide,
    parse_wheel_name,
    read_wheel,
)

# What pip is asked for: wheels only, for Pyodide 314's Python and platform (pure ones
# match any platform).
PIP_TARGET = ("--only-binary=:all:", "--python-version", "3.14", "--platform",
              PYODIDE_PLATFORM, "--abi", "cp314", "--implementation", "cp")


def no_wheel(requirement: str, files: Sequence[str] | None = None) -> BundleError:
    """Why ``requirement`` cannot go into a bundle, told from the files its index lists
    (None: the listing could not be read), with what to do instead."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        name = canonical(Requirement(requirement).name)
    except InvalidRequirement:
        return BundleError(f"bad package requirement {requirement!r}")
    serve = ("serve a Pyodide distribution that has it and set packages_base_url=... "
             "(docs/packages.md)")
    if files is not None and not files:
        return BundleError(f"{name}: not found on the package index; check its name")
    if files is not None and not any(f.endswith(".whl") for f in files):
        return BundleError(
            f"{name}: the index has only source distributions of it, and a worker loads "
            f"wheels only; build a wheel elsewhere (pip wheel {name}, for pure Python) and "
            + serve)
    if files is not None and not any(fits_pyodide(parse_wheel_name(f))
                                      for f in files if f.endswith(".whl")):
        return BundleError(f"{name}: no Pyodide wheel on PyPI (pure Python, or built for "
                           f"{PYODIDE_PLATFORM}); " + serve)
    return BundleError(
        f"{requirement}: no wheel a Pyodide 314 worker can load matches it (pure Python, "
        f"or built for {PYODIDE_PLATFORM}); a package with none on PyPI (numpy, for one) "
        "must come from a Pyodide distribution: " + serve)


def pypi_files(name: str) -> list[str] | None:
    """The file names PyPI's simple API lists for a project (None if it cannot say)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"https://pypi.org/simple/{canonical(name)}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return [f["filename"] for f in json.loads(response.read())["files"]]
    except urllib.error.HTTPError as exc:
        return [] if exc.code == 404 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


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

    def listing(self, requirement: str) -> list[str] | None:
        """The files the index holds for ``requirement``'s project, to explain a miss."""
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            name = canonical(Requirement(requirement).name)
        except InvalidRequirement:
            return None
        args = list(self.index_args)
        if "--no-index" in args:  # a folder of wheels stands in for the index
            if "--find-links" not in args:
                return None
            folder = Path(args[args.index("--find-links") + 1])
            return [f.name for f in folder.iterdir()
                    if canonical(f.name.split("-")[0]) == name]
        return pypi_files(name)

    def _fetch(self, requirement: str) -> WheelInfo:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--disable-pip-version-check", *PIP_TARGET, *self.index_args,
                   "-d", tmp, requirement]
            self.pip_runs += 1
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = sorted(Path(tmp).glob("*.whl"))
            if done.returncode != 0 or len(got) != 1 \
                    or not fits_pyodide(parse_wheel_name(got[0].name)):
                raise no_wheel(requirement, self.listing(requirement))
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
