"""Writing a bundle: everything a page serves to run workerbridge, in one folder.

    OUT/pyodide/        the pinned Pyodide runtime (runtime.py)
    OUT/pyscript/       the pinned PyScript
    OUT/pyscript.json   a PyScript config that unpacks workerbridge on the page
    OUT/micropython/    PyScript's pinned MicroPython build (for `<script type="mpy">`)
    OUT/mpy.json        a PyScript config for mpy pages: MicroPython from the bundle
    OUT/workerbridge/   worker.mjs, snapshot.mjs, prestart.mjs, preboot.mjs, remote.mjs,
                        mpy.py (an mpy page's workerbridge module), workerbridge.zip,
                        bundle.json
    OUT/packages/       the wheels, their lock (Pyodide's format) and a PEP 503 index

Every package is resolved and fetched before ``OUT`` is touched, and the bundle is
written beside it and swapped in whole: a refusal or a failure leaves ``OUT`` as it was.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workerbridge.bundle.fetch import WheelCache, resolve
from workerbridge.bundle.lock import lock_hash, lock_text, make_lock
from workerbridge.bundle.runtime import RuntimeFiles
from workerbridge.bundle.wheels import BundleError, WheelInfo

# micropip, for installs at run time from the bundle's own index (ctx.install). PyPI's
# wheel, with its own hash in the bundle's lock: Pyodide's lock names another build.
MICROPIP = "micropip==0.11.1"
# What every bundle carries besides its packages: micropip, and for job schedules the
# cron parser and the time zone database (the page loads them when it needs them).
ALWAYS = (MICROPIP, "cronsim==2.8", "tzdata==2026.6")
WEB_FILES = ("worker.mjs", "snapshot.mjs", "prestart.mjs", "preboot.mjs", "remote.mjs",
             "mpy.py")
MARKER = Path("workerbridge") / "bundle.json"  # a folder holding it is a bundle


def default_cache() -> Path:
    """``$WORKERBRIDGE_CACHE``, else ``~/.cache/workerbridge``."""
    explicit = os.environ.get("WORKERBRIDGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "workerbridge"


def read_requirements(path: Path) -> list[str]:
    """A requirements file's requirements: one a line, ``#`` comments; no pip options."""
    found = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise BundleError(f"{path}:{number}: pip options ({line.split()[0]}) are not "
                              "read here; list one requirement a line")
        found.append(line)
    return found


def package_sources() -> list[tuple[Path, str]]:
    """(file, path in workerbridge.zip) for the runtime package and its worker modules,
    from wherever workerbridge is imported (a checkout or an installed copy)."""
    import importlib.util

    # Where the worker modules' files are (a checkout maps them from workers/); looked
    # up, not imported: the bundle reads files, it runs none of them.
    workers = importlib.util.find_spec("workerbridge.workers")
    if workers is None or workers.origin is None:
        raise BundleError("workerbridge.workers is not installed beside workerbridge")
    roots = ((Path(__file__).resolve().parent.parent, "workerbridge"),
             (Path(workers.origin).parent, "workerbridge/workers"))
    out: dict[str, Path] = {}
    for base, prefix in roots:
        for f in sorted(base.rglob("*")):
            # web/ is served as files (mpy.py is an mpy page's module), not imported.
            if f.is_file() and f.suffix in (".py", ".typed") and "__pycache__" not in f.parts \
                    and f.relative_to(base).parts[0] != "web":
                out.setdefault(f"{prefix}/{f.relative_to(base).as_posix()}", f)
    return [(f, arc) for arc, f in sorted(out.items())]


def package_zip(sources: Sequence[tuple[Path, str]]) -> tuple[bytes, str]:
    """workerbridge.zip's bytes (the same for the same sources) and a content hash."""
    h = hashlib.sha256()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for f, arc in sources:
            data = f.read_bytes()
            h.update(arc.encode())
            h.update(data)
            # A fixed timestamp keeps the archive byte-identical for identical sources.
            z.writestr(zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue(), h.hexdigest()[:16]


def pyodide_build_id(loader: Path) -> str:
    """The BUILD_ID Pyodide writes into its loader and checks when it restores a snapshot."""
    found = re.search(r'BUILD_ID:"([0-9a-f]{16,})"', loader.read_text())
    return found.group(1) if found else hashlib.sha256(loader.read_bytes()).hexdigest()


def simple_index(wheels: Iterable[WheelInfo]) -> dict[str, str]:
    """A PEP 503 simple index of the wheels: path under ``packages/`` -> HTML. Links are
    relative, so the bundle works at any URL."""
    by_name: dict[str, list[WheelInfo]] = {}
    for w in wheels:
        by_name.setdefault(w.name, []).append(w)

    def page(title: str, links: Iterable[tuple[str, str]]) -> str:
        body = "\n".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a><br>'
                         for href, text in links)
        return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
                f"content=\"1.0\"><title>{html.escape(title)}</title></head>\n<body>\n"
                f"{body}\n</body></html>\n")

    pages = {"simple/index.html": page("Simple index", ((f"{n}/", n) for n in sorted(by_name)))}
    for name, found in sorted(by_name.items()):
        pages[f"simple/{name}/index.html"] = page(
            f"Links for {name}",
            ((f"../../{w.file_name}#sha256={w.sha256}", w.file_name) for w in found))
    return pages


@dataclass(frozen=True)
class Bundle:
    """What was written: the folder, its wheels and the lock's hash."""

    out: Path
    wheels: tuple[WheelInfo, ...]
    lock_hash: str


def plan(requirements: Sequence[str], cache: WheelCache) -> list[WheelInfo]:
    """Every wheel the bundle holds: the requirements' closure, and ``ALWAYS``."""
    return resolve([*requirements, *ALWAYS], cache)


def write_bundle(out: Path, requirements: Sequence[str] = (), *,
                 runtime: RuntimeFiles | None = None, cache: WheelCache | None = None,
                 pyscript_interpreter: str | None = None) -> Bundle:
    """Write a complete bundle into ``out``, replacing the one there; see the module
    docstring. ``pyscript_interpreter``: the Pyodide URL ``pyscript.json`` names,
    relative to the page (PyScript resolves it so); by default the page sits beside
    ``out``."""
    cache_root = default_cache()
    cache = cache or WheelCache(cache_root / "wheels")
    runtime = runtime or RuntimeFiles(cache=cache_root)
    out = out.resolve()
    if out.exists() and (not out.is_dir() or
                         (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise BundleError(f"{out} exists and is not a workerbridge bundle; the bundle "
                          "command replaces its folder whole, so name a new or empty one")
    wheels = plan(requirements, cache)
    lock = make_lock(wheels)
    runtime_files = list(runtime.files())  # fetched (and checked) before anything is written

    stage = out.with_name(f".{out.name}.partial")
    if stage.exists():
        shutil.rmtree(stage)
    try:
        stage.mkdir(parents=True)
        for target, source in runtime_files:
            dest = stage / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
        web = Path(__file__).resolve().parent.parent / "web"
        (stage / "workerbridge").mkdir()
        for name in WEB_FILES:
            shutil.copy2(web / name, stage / "workerbridge" / name)
        zip_bytes, content_hash = package_zip(package_sources())
        (stage / "workerbridge" / "workerbridge.zip").write_bytes(zip_bytes)
        packages = stage / "packages"
        packages.mkdir()
        for w in wheels:
            shutil.copy2(cache.root / w.file_name, packages / w.file_name)
        (packages / "pyodide-lock.json").write_text(lock_text(lock))
        for path, text in simple_index(wheels).items():
            (packages / path).parent.mkdir(parents=True, exist_ok=True)
            (packages / path).write_text(text)
        pyodide_dir = stage / "pyodide"
        # Pyodide's own lock names wheels its npm package does not ship. The bundle's lock
        # takes its place, its file names relative to pyodide/, so a PyScript page's own
        # `packages` (micropip included) load from packages/ as the workers' do.
        page_lock = {**lock, "packages": {
            name: {**entry, "file_name": f"../packages/{entry['file_name']}"}
            for name, entry in lock["packages"].items()}}
        (pyodide_dir / "pyodide-lock.json").write_text(lock_text(page_lock))
        meta = {"version": 1, "content_hash": content_hash,
                "pyodide": json.loads((pyodide_dir / "package.json").read_text())["version"],
                "pyodide_build": pyodide_build_id(pyodide_dir / "pyodide.mjs"),
                "lock_hash": lock_hash(lock), "packages": sorted(w.name for w in wheels)}
        # PyScript resolves `interpreter` against the page and `files` against this file.
        config = {"interpreter": pyscript_interpreter or f"./{out.name}/pyodide/pyodide.mjs",
                  "files": {"./workerbridge/workerbridge.zip": "./*"}}
        # An mpy page's MicroPython, from the bundle rather than PyScript's default CDN,
        # and its `workerbridge` module (web/mpy.py), the thin layer over the host worker.
        mpy = {"interpreter": f"./{out.name}/micropython/micropython.mjs",
               "files": {"./workerbridge/mpy.py": "./workerbridge.py"}}
        for written, data in ((stage / MARKER, meta), (stage / "pyscript.json", config),
                              (stage / "mpy.json", mpy)):
            written.write_text(json.dumps(data, indent=2) + "\n")
        _swap(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return Bundle(out, tuple(wheels), lock_hash(lock))


def _swap(stage: Path, out: Path) -> None:
    """Put the finished ``stage`` where ``out`` is, in two renames."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.replace(old)
    stage.replace(out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
