#!/usr/bin/env python3
"""One entry point for every chore.

    python3 build.py            bootstrap (.venv, npm packages) and build dist/
    python3 build.py serve      build, then serve the demo at http://127.0.0.1:8000
    python3 build.py test       build, then run every test (host + real headless Chromium)
    python3 build.py bench      build, then run the benchmark; writes bench/results.json
    python3 build.py chaos      build, then the chaos run alone (a section of the benchmark)
    python3 build.py check      ruff and mypy

Works from a fresh machine with python3, node/npm and (for Chromium) apt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
DIST = ROOT / "dist"
NODE_MODULES = ROOT / "node_modules"
VENV_PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

# Only what a page needs from the npm packages; no source maps, no Node-only files.
PYODIDE_FILES = (
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
    "package.json",
)
WEB_BUNDLE_FILES = ("worker.mjs", "snapshot.mjs", "preboot.mjs")


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


# --- bootstrap -----------------------------------------------------------------------------


def in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> None:
    """Create .venv, install the package with its dev extras, and re-run inside it."""
    if in_project_venv():
        return
    if not VENV_PY.exists():
        log("creating .venv")
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".workerbridge-stamp"
    want = digest(ROOT / "pyproject.toml")
    if not stamp.exists() or stamp.read_text() != want:
        log("installing workerbridge[dev] into .venv")
        pip = [str(VENV_PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
        stamp.write_text(want)
    os.execv(str(VENV_PY), [str(VENV_PY), str(ROOT / "build.py"), *sys.argv[1:]])


def ensure_npm() -> None:
    """Install the pinned npm packages (package-lock.json) unless already installed."""
    stamp = NODE_MODULES / ".workerbridge-stamp"
    want = digest(ROOT / "package-lock.json")
    if stamp.exists() and stamp.read_text() == want:
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("build.py: npm is required (install Node.js 18+ with npm)")
    log("installing pinned npm packages")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True)
    stamp.write_text(want)


# --- build dist/ ---------------------------------------------------------------------------


def copy_if_changed(src: Path, dst: Path) -> bool:
    if dst.exists():
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and int(s.st_mtime) <= int(d.st_mtime):
            return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return True


def python_sources() -> list[tuple[Path, str]]:
    """(file, path inside the archive) for the runtime package and the worker modules."""
    out: list[tuple[Path, str]] = []
    for base, prefix in ((ROOT / "py" / "workerbridge", "workerbridge"),
                         (ROOT / "workers", "workerbridge/workers")):
        for f in sorted(base.rglob("*")):
            if f.is_file() and f.suffix in (".py", ".typed") and "__pycache__" not in f.parts:
                out.append((f, f"{prefix}/{f.relative_to(base).as_posix()}"))
    return out


def write_package_zip(dst: Path) -> tuple[bool, str]:
    """The Python package as one zip, unpacked by the worker and by PyScript's `files`."""
    sources = python_sources()
    h = hashlib.sha256()
    for f, arc in sources:
        h.update(arc.encode())
        h.update(f.read_bytes())
    content_hash = h.hexdigest()[:16]
    stamp = dst.with_suffix(".hash")
    if dst.exists() and stamp.exists() and stamp.read_text() == content_hash:
        return False, content_hash
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f, arc in sources:
            # A fixed timestamp keeps the archive byte-identical for identical sources.
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, f.read_bytes())
    tmp.replace(dst)
    stamp.write_text(content_hash)
    return True, content_hash


def pyodide_build_id(loader: Path) -> str:
    """The BUILD_ID Pyodide writes into its loader and checks when it restores a snapshot."""
    found = re.search(r'BUILD_ID:"([0-9a-f]{16,})"', loader.read_text())
    return found.group(1) if found else digest(loader)


def build() -> None:
    t0 = time.perf_counter()
    ensure_npm()
    changed = 0
    pyodide_src = NODE_MODULES / "pyodide"
    for name in PYODIDE_FILES:
        changed += copy_if_changed(pyodide_src / name, DIST / "pyodide" / name)
    pyscript_src = NODE_MODULES / "@pyscript" / "core" / "dist"
    for f in pyscript_src.rglob("*"):
        if f.is_file() and not f.name.endswith(".map"):
            changed += copy_if_changed(f, DIST / "pyscript" / f.relative_to(pyscript_src))
    for name in WEB_BUNDLE_FILES:
        changed += copy_if_changed(ROOT / "web" / name, DIST / "workerbridge" / name)
    zchanged, content_hash = write_package_zip(DIST / "workerbridge" / "workerbridge.zip")
    changed += zchanged
    # PyScript resolves `interpreter` against the page but `files` against this config file,
    # so the two relative URLs below differ on purpose: the page sits beside dist/.
    config = {
        "interpreter": "./dist/pyodide/pyodide.mjs",
        "files": {"./workerbridge/workerbridge.zip": "./*"},
    }
    # Workers key their cached memory snapshots by the Pyodide build and the package's
    # content hash: a snapshot from any other build or bundle is never loaded.
    meta = {"version": 1, "content_hash": content_hash,
            "pyodide": json.loads((pyodide_src / "package.json").read_text())["version"],
            "pyodide_build": pyodide_build_id(pyodide_src / "pyodide.mjs")}
    outputs = ((DIST / "pyscript.json", config), (DIST / "workerbridge" / "bundle.json", meta))
    for path, data in outputs:
        text = json.dumps(data, indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed += 1
    log(f"dist/ ready ({changed} files written, {time.perf_counter() - t0:.2f} s)")


# --- Chromium ------------------------------------------------------------------------------


def find_chromium() -> str:
    """An explicit env var, else Playwright's own browser, else Debian's; install if we can."""
    explicit = os.environ.get("WORKERBRIDGE_CHROMIUM")
    if explicit:
        if not Path(explicit).exists():
            sys.exit(f"build.py: WORKERBRIDGE_CHROMIUM={explicit} does not exist")
        return explicit
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            own = p.chromium.executable_path
        if own and Path(own).exists():
            return own
    except Exception:
        pass
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
        if Path(candidate).exists():
            return candidate
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing Debian's chromium (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
        if Path("/usr/bin/chromium").exists():
            return "/usr/bin/chromium"
    sys.exit(
        "build.py: no Chromium found. Set WORKERBRIDGE_CHROMIUM=/path/to/chromium, "
        "run `playwright install chromium`, or install your distribution's chromium package."
    )


# --- commands ------------------------------------------------------------------------------


def cmd_serve(args: list[str]) -> int:
    port = args[args.index("--port") + 1] if "--port" in args else "8000"
    log(f"serving the demo at http://127.0.0.1:{port}/")
    cmd = [sys.executable, "-m", "workerbridge", "serve", "--dir", str(ROOT / "web"),
           "--mount", f"/dist={DIST}", "--port", port]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def cmd_test(args: list[str]) -> int:
    os.environ["WORKERBRIDGE_CHROMIUM"] = find_chromium()
    return subprocess.call([sys.executable, "-m", "pytest", *args], cwd=ROOT)


def cmd_bench(args: list[str]) -> int:
    os.environ["WORKERBRIDGE_CHROMIUM"] = find_chromium()
    return subprocess.call([sys.executable, str(ROOT / "bench" / "run.py"), *args], cwd=ROOT)


def cmd_chaos(args: list[str]) -> int:
    """The chaos run alone (it is also a section of the benchmark)."""
    return cmd_bench(["--only", "chaos", *args])


def cmd_check(args: list[str]) -> int:
    rc = subprocess.call([sys.executable, "-m", "ruff", "check", "build.py", "py", "workers",
                          "tests", "bench"], cwd=ROOT)
    return rc | subprocess.call([sys.executable, "-m", "mypy"], cwd=ROOT)


COMMANDS = {"serve": cmd_serve, "test": cmd_test, "bench": cmd_bench, "chaos": cmd_chaos,
            "check": cmd_check}


def main() -> int:
    args = sys.argv[1:]
    name = args[0] if args and not args[0].startswith("-") else "build"
    rest = args[1:] if name != "build" or (args and args[0] == "build") else args
    if name not in COMMANDS and name != "build":
        sys.exit(f"build.py: unknown command {name!r}; try one of: build, {', '.join(COMMANDS)}")
    ensure_venv()
    if name == "check":
        return cmd_check(rest)
    build()
    return COMMANDS[name](rest) if name in COMMANDS else 0


if __name__ == "__main__":
    sys.exit(main())
