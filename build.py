#!/usr/bin/env python3
"""One entry point for every chore.

    python3 build.py            bootstrap (.venv, npm packages) and build dist/
    python3 build.py serve      build, then serve the demo at http://127.0.0.1:8000
    python3 build.py test       build, then run every test (host + real headless Chromium)
    python3 build.py bench      build, then run the benchmark; writes bench/results.json
    python3 build.py chaos      build, then the chaos run alone (a section of the benchmark)
    python3 build.py fleet      a local fleet: RabbitMQ, the gateway and 2 workers (Ctrl-C stops)
    python3 build.py check      ruff and mypy

Works from a fresh machine with python3, node/npm and (for Chromium) apt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
DIST = ROOT / "dist"
NODE_MODULES = ROOT / "node_modules"
VENV_PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

# Only what a page needs from the npm packages; no source maps, no Node-only files.


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


def bundle_packages() -> list[str]:
    """``[tool.workerbridge] packages`` of pyproject.toml: what dist/ carries for workers."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data.get("tool", {}).get("workerbridge", {}).get("packages", []))


def build() -> None:
    """dist/, through the same code as ``python -m workerbridge bundle dist``, with the
    runtime from node_modules (``npm ci`` checked it against package-lock.json)."""
    from workerbridge.bundle.runtime import RuntimeFiles
    from workerbridge.bundle.wheels import BundleError
    from workerbridge.bundle.writer import write_bundle

    t0 = time.perf_counter()
    ensure_npm()
    try:
        done = write_bundle(DIST, bundle_packages(), runtime=RuntimeFiles(NODE_MODULES))
    except BundleError as exc:
        sys.exit(f"build.py: {exc}")
    log(f"dist/ ready with {len(done.wheels)} packages ({time.perf_counter() - t0:.2f} s)")


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
    ensure_broker()
    return subprocess.call([sys.executable, "-m", "pytest", *args], cwd=ROOT)


def cmd_bench(args: list[str]) -> int:
    os.environ["WORKERBRIDGE_CHROMIUM"] = find_chromium()
    ensure_broker()
    return subprocess.call([sys.executable, str(ROOT / "bench" / "run.py"), *args], cwd=ROOT)


def cmd_chaos(args: list[str]) -> int:
    """The chaos run alone (it is also a section of the benchmark)."""
    return cmd_bench(["--only", "chaos", *args])


def ensure_broker() -> None:
    """RabbitMQ for the fleet's tests and benchmark (Debian's package, apt when root)."""
    from workerbridge.fleet.local import ensure_rabbitmq

    ensure_rabbitmq()


def cmd_fleet(args: list[str]) -> int:
    """A local fleet: RabbitMQ, the gateway and workers, until Ctrl-C (docs/fleet.md)."""
    from workerbridge.fleet.local import main as fleet_main

    fleet_main(args)
    return 0


def cmd_check(args: list[str]) -> int:
    rc = subprocess.call([sys.executable, "-m", "ruff", "check", "build.py", "py", "workers",
                          "tests", "bench"], cwd=ROOT)
    return rc | subprocess.call([sys.executable, "-m", "mypy"], cwd=ROOT)


COMMANDS = {"serve": cmd_serve, "test": cmd_test, "bench": cmd_bench, "chaos": cmd_chaos,
            "fleet": cmd_fleet, "check": cmd_check}


def main() -> int:
    args = sys.argv[1:]
    name = args[0] if args and not args[0].startswith("-") else "build"
    rest = args[1:] if name != "build" or (args and args[0] == "build") else args
    if name not in COMMANDS and name != "build":
        sys.exit(f"build.py: unknown command {name!r}; try one of: build, {', '.join(COMMANDS)}")
    ensure_venv()
    if name in ("check", "fleet"):
        return COMMANDS[name](rest)
    build()
    return COMMANDS[name](rest) if name in COMMANDS else 0


if __name__ == "__main__":
    sys.exit(main())
