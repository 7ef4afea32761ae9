"""The pinned browser runtime a bundle carries: Pyodide, PyScript and PyScript's
MicroPython, from npm.

``runtime.json`` (beside this file) pins each npm package by version and by the
integrity hash npm's lock records for it. In a checkout the files come from
``node_modules`` (``npm ci`` installed them against the same lock); from a ``pip
install`` of workerbridge they are fetched from the npm registry by that pinned version,
checked against the integrity hash, and kept in a cache, so a second build fetches
nothing. Only what a page needs is taken: no source maps, no Node-only files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from workerbridge.bundle.wheels import BundleError

PINS_FILE = Path(__file__).with_name("runtime.json")
REGISTRY = "https://registry.npmjs.org"

# The files of the npm package `pyodide` a page loads.
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json", "package.json")


# The files of PyScript's MicroPython build (for `<script type="mpy">` pages).
MICROPYTHON = "@micropython/micropython-webassembly-pyscript"
MICROPYTHON_FILES = ("micropython.mjs", "micropython.wasm", "package.json")


def pins() -> dict[str, dict[str, str]]:
    """npm package name -> {"version", "integrity"}."""
    data: dict[str, dict[str, str]] = json.loads(PINS_FILE.read_text())
    return data


def wanted(package: str, path: str) -> str | None:
    """Where a file of an npm package goes in the bundle, or None if a page needs none
    of it. ``path`` is relative to the package's root."""
    if package == "pyodide":
        return f"pyodide/{path}" if path in PYODIDE_FILES else None
    if package == MICROPYTHON:
        return f"micropython/{path}" if path in MICROPYTHON_FILES else None
    if package == "@pyscript/core" and path.startswith("dist/") and not path.endswith(".map"):
        return f"pyscript/{path[len('dist/'):]}"
    return None


def tarball_url(package: str, version: str, registry: str = REGISTRY) -> str:
    return f"{registry}/{package}/-/{package.rsplit('/', 1)[-1]}-{version}.tgz"


def check_integrity(data: bytes, integrity: str, what: str) -> None:
    """Raise BundleError unless ``data`` matches an SRI string (``sha512-<base64>``)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise BundleError(f"{what}: unsupported integrity hash {algorithm!r}")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise BundleError(f"{what}: the download does not match its pinned integrity hash "
                          "(a corrupt download, or the registry changed it): refusing it")


class RuntimeFiles:
    """Where the runtime's files are read from: ``node_modules`` or the npm registry."""

    def __init__(self, node_modules: Path | None = None, cache: Path | None = None,
                 registry: str = REGISTRY) -> None:
        """``node_modules``: a folder that ``npm ci`` filled from the project's lock;
        else the files come from ``cache``, fetched from ``registry`` on first use."""
        self.node_modules = node_modules
        self.cache = cache
        self.registry = registry.rstrip("/")
        self.fetched = 0

    def files(self) -> Iterator[tuple[str, Path]]:
        """(path in the bundle, file on disk) for every runtime file a page needs."""
        for package, pin in sorted(pins().items()):
            root = self._package_root(package, pin)
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    target = wanted(package, path.relative_to(root).as_posix())
                    if target is not None:
                        yield target, path

    def _package_root(self, package: str, pin: dict[str, str]) -> Path:
        if self.node_modules is not None:
            root = self.node_modules / package
            found = json.loads((root / "package.json").read_text()).get("version")
            if found != pin["version"]:
                raise BundleError(f"{root} holds {package} {found}, but the bundle pins "
                                  f"{pin['version']}: run `npm ci`")
            return root
        if self.cache is None:
            raise BundleError("no node_modules and no cache folder for the runtime files")
        digest = hashlib.sha256(pin["integrity"].encode()).hexdigest()[:16]
        root = self.cache / "npm" / f"{package.replace('/', '+')}-{pin['version']}-{digest}"
        if (root / ".complete").is_file():
            return root
        url = tarball_url(package, pin["version"], self.registry)
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                data = response.read()
        except OSError as exc:
            raise BundleError(f"{package} {pin['version']}: cannot fetch {url} ({exc}); "
                              "the npm registry must be reachable at build time") from None
        self.fetched += 1
        check_integrity(data, pin["integrity"], f"{package} {pin['version']}")
        _extract(data, root, package)
        return root


def _extract(data: bytes, root: Path, package: str) -> None:
    """Unpack the files a page needs from an npm tarball (its entries sit under
    ``package/``); nothing outside ``root`` is ever written."""
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        import shutil

        shutil.rmtree(partial)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or len(parts) < 2 or ".." in parts:
                continue
            inner = "/".join(parts[1:])
            if wanted(package, inner) is None and inner != "package.json":
                continue
            target = partial.joinpath(*parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    (partial / ".complete").write_text("")
    partial.replace(root)
