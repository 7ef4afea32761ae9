"""Wheels for Pyodide workers: which wheels fit, what they need, and the closure of a set.

Host only (the bundle is built before anything runs in a browser). Pyodide 314 runs
CPython 3.14.2 under Emscripten; a wheel fits when it is pure Python (``py3-none-any``,
or any Python 3 tag ``none``/``any``) or is built for its ABI (PEP 783:
``cp314-cp314-pyemscripten_2026_0_wasm32``, or ``abi3`` for an older ``cp3x``). pip
evaluates a wheel's environment markers for the machine it runs on, not for Pyodide, so
the closure is worked out here, with Pyodide's own environment.
"""

from __future__ import annotations

import email.parser
import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from workerbridge.core.errors import InvalidInputError

PYODIDE_PLATFORM = "pyemscripten_2026_0_wasm32"
PYODIDE_PYTHON = (3, 14)

# The PEP 508 environment of a Pyodide 314 worker, for evaluating markers.
PYODIDE_ENVIRONMENT: dict[str, str] = {
    "implementation_name": "cpython",
    "implementation_version": "3.14.2",
    "os_name": "posix",
    "platform_machine": "wasm32",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Emscripten",
    "platform_version": "",
    "python_full_version": "3.14.2",
    "python_version": "3.14",
    "sys_platform": "emscripten",
}


class BundleError(InvalidInputError):
    """A package cannot go into a bundle; the message says why and what to do."""

    code = "bundle"


class MissingPackage(BundleError):
    """A package the closure needs has no wheel among those at hand (yet)."""

    def __init__(self, message: str, name: str, spec: str) -> None:
        super().__init__(message)
        self.name = name
        self.spec = spec


def canonical(name: str) -> str:
    """PEP 503's normalized project name: lowercase, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, slots=True)
class WheelName:
    """The parts of a wheel's file name (PEP 427)."""

    name: str
    version: str
    build: str | None
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @property
    def pure(self) -> bool:
        return self.platform_tags == ("any",)


def parse_wheel_name(file_name: str) -> WheelName:
    """``attrs-25.1.0-py3-none-any.whl`` -> its parts; BundleError if it is no wheel name."""
    if not file_name.endswith(".whl"):
        raise BundleError(f"{file_name!r} is not a wheel (.whl)")
    parts = file_name[:-4].split("-")
    if len(parts) not in (5, 6):
        raise BundleError(f"{file_name!r} is not a valid wheel file name")
    build = parts[2] if len(parts) == 6 else None
    py, abi, plat = parts[-3:]
    return WheelName(parts[0], parts[1], build, tuple(py.split(".")),
                     tuple(abi.split(".")), tuple(plat.split(".")))


def _cpython_minor(tag: str) -> int | None:
    match = re.fullmatch(r"cp3(\d+)", tag)
    return int(match[1]) if match else None


def fits_pyodide(wheel: WheelName) -> bool:
    """Whether a Pyodide 314 worker can load this wheel."""
    if wheel.pure:
        return "none" in wheel.abi_tags and any(
            tag in ("py3", "py2.py3") or tag.startswith("py3")
            or (_cpython_minor(tag) or 99) <= PYODIDE_PYTHON[1] for tag in wheel.python_tags)
    if PYODIDE_PLATFORM not in wheel.platform_tags:
        return False
    for py in wheel.python_tags:
        minor = _cpython_minor(py)
        if minor is None:
            continue
        if f"cp3{PYODIDE_PYTHON[1]}" in wheel.abi_tags and minor == PYODIDE_PYTHON[1]:
            return True
        if "abi3" in wheel.abi_tags and minor <= PYODIDE_PYTHON[1]:
            return True
    return False


@dataclass(frozen=True, slots=True)
class WheelInfo:
    """What a bundle needs to know of one wheel file."""

    name: str  # canonical
    version: str
    file_name: str
    sha256: str
    requires: tuple[str, ...]  # Requires-Dist lines, markers and all
    imports: tuple[str, ...]  # top-level modules it provides
    pure: bool
    extras: frozenset[str] = field(default_factory=frozenset)


def read_wheel(path: Path) -> WheelInfo:
    """Read a wheel's metadata, its top-level imports and its sha256."""
    wheel = parse_wheel_name(path.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise BundleError(f"{path.name} is not a valid wheel (not a zip file)") from None
    with archive:
        names = archive.namelist()
        info_dir = next((n.split("/")[0] for n in names
                         if n.split("/")[0].endswith(".dist-info")
                         and n.endswith("/METADATA")), None)
        if info_dir is None:
            raise BundleError(f"{path.name}: no .dist-info/METADATA inside")
        meta = email.parser.Parser().parsestr(
            archive.read(f"{info_dir}/METADATA").decode("utf-8", "replace"))
        top_level = f"{info_dir}/top_level.txt"
        if top_level in names:
            imports = [line.strip() for line in
                       archive.read(top_level).decode("utf-8", "replace").splitlines()
                       if line.strip() and not line.strip().startswith("_")]
        else:
            imports = _imports_from_names(names)
    return WheelInfo(
        canonical(meta.get("Name", wheel.name)), meta.get("Version", wheel.version),
        path.name, digest, tuple(meta.get_all("Requires-Dist") or ()),
        tuple(sorted(set(imports))), wheel.pure,
        frozenset(canonical(e) for e in meta.get_all("Provides-Extra") or ()))


def _imports_from_names(names: Iterable[str]) -> list[str]:
    """Top-level packages and modules among a wheel's files (no top_level.txt)."""
    found = set()
    for name in names:
        head, _, rest = name.partition("/")
        if head.endswith((".dist-info", ".data")) or head.startswith("_"):
            continue
        if rest == "__init__.py":
            found.add(head)
        elif not rest and head.endswith(".py"):
            found.add(head[:-3])
    return sorted(found)


def requirements(info: WheelInfo, extras: Iterable[str] = (),
                 environment: Mapping[str, str] = PYODIDE_ENVIRONMENT) -> list[tuple[str, str]]:
    """``(canonical name, version specifier)`` of what this wheel needs in a Pyodide worker
    (with ``extras``), markers evaluated for Pyodide, not for this machine."""
    from packaging.requirements import InvalidRequirement, Requirement

    wanted = {canonical(e) for e in extras}
    out = []
    for line in info.requires:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise BundleError(f"{info.name} {info.version}: bad requirement {line!r} "
                              f"({exc})") from None
        if req.marker is not None:
            envs = [{**environment, "extra": e} for e in sorted(wanted) or [""]]
            if not any(req.marker.evaluate(env) for env in envs):
                continue
        out.append((canonical(req.name), str(req.specifier)))
    return out


def closure(roots: Iterable[str], available: Mapping[str, WheelInfo]) -> list[WheelInfo]:
    """The wheels ``roots`` need, with everything they depend on, in dependency order.

    ``roots`` are requirement strings (``"attrs"``, ``"msgspec>=0.18"``,
    ``"requests[socks]"``); ``available`` maps canonical names to the wheel chosen for
    each. Raises BundleError naming a missing package or the two sides of a conflict.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet

    order: list[WheelInfo] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"
    needed_by: dict[str, str] = {}

    def visit(name: str, spec: str, extras: Iterable[str], who: str) -> None:
        info = available.get(name)
        if info is None:
            raise MissingPackage(f"{name}: needed by {who}, but no wheel for it was found "
                                 f"(add it to the bundle's packages)", name, spec)
        if spec and not SpecifierSet(spec).contains(info.version, prereleases=True):
            raise BundleError(f"conflict: {who} needs {name}{spec}, but the bundle has "
                              f"{name} {info.version}"
                              + (f" (chosen for {needed_by[name]})" if name in needed_by
                                 else ""))
        needed_by.setdefault(name, who)
        if state.get(name) is not None:
            return
        state[name] = "visiting"
        for dep, dep_spec in requirements(info, extras):
            visit(dep, dep_spec, (), f"{name} {info.version}")
        state[name] = "done"
        order.append(info)

    for root in roots:
        try:
            req = Requirement(root)
        except InvalidRequirement as exc:
            raise BundleError(f"bad package requirement {root!r} ({exc})") from None
        visit(canonical(req.name), str(req.specifier), req.extras, "the bundle's packages")
    return order
