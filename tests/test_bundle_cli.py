"""``python -m workerbridge bundle`` from a fresh virtual environment with workerbridge
installed by pip from this checkout (as a user's app would build its bundle): real pip,
real PyPI wheels, the runtime fetched from npm by its pinned version (both cached in the
user's cache folder, so a second run fetches nothing)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(ROOT)], check=True, timeout=600)
    return py


def bundle(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "workerbridge", "bundle", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)


def test_an_installed_workerbridge_writes_a_bundle(python: Path, tmp_path: Path):
    where = subprocess.run([str(python), "-c", "import workerbridge; print(workerbridge.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert "site-packages" in where, "the test must run the installed copy, not the checkout"
    (tmp_path / "requirements-worker.txt").write_text("python-dateutil==2.9.0.post0\n")
    done = bundle(python, "site/dist", "--requirements", "requirements-worker.txt",
                  "--package", "msgspec==0.23.0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "site" / "dist"
    lock = json.loads((out / "packages" / "pyodide-lock.json").read_text())
    assert sorted(lock["packages"]) == ["cronsim", "micropip", "msgspec", "python-dateutil",
                                        "six", "tzdata"]
    assert lock["packages"]["msgspec"]["file_name"] == \
        "msgspec-0.23.0-cp314-cp314-pyemscripten_2026_0_wasm32.whl"
    for entry in lock["packages"].values():
        data = (out / "packages" / entry["file_name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    # The runtime came from npm, pinned: the same bytes npm ci put in node_modules.
    for name in ("pyodide.asm.wasm", "pyodide.mjs", "python_stdlib.zip"):
        assert (out / "pyodide" / name).read_bytes() == \
            (ROOT / "node_modules" / "pyodide" / name).read_bytes()
    assert (out / "pyscript" / "core.js").read_bytes() == \
        (ROOT / "node_modules" / "@pyscript" / "core" / "dist" / "core.js").read_bytes()
    for name in ("worker.mjs", "snapshot.mjs", "prestart.mjs", "preboot.mjs", "remote.mjs",
                 "mpy.py"):
        assert (out / "workerbridge" / name).read_bytes() == \
            (ROOT / "py" / "workerbridge" / "web" / name).read_bytes()
    # The installed package's own sources, workers included, went into workerbridge.zip.
    import zipfile

    with zipfile.ZipFile(out / "workerbridge" / "workerbridge.zip") as z:
        names = set(z.namelist())
    assert {"workerbridge/__init__.py", "workerbridge/runtime/entry.py",
            "workerbridge/workers/__init__.py"} <= names


def test_refusals_exit_2_with_the_fix_and_write_nothing(python: Path, tmp_path: Path):
    done = bundle(python, "dist", "--package", "numpy", cwd=tmp_path)
    assert done.returncode == 2
    assert "numpy: no Pyodide wheel on PyPI" in done.stderr
    assert "packages_base_url=" in done.stderr
    assert not (tmp_path / "dist").exists()
    assert list(tmp_path.iterdir()) == []
