"""Host tests of writing a bundle: its layout, its lock and index, the runtime's pins, and
that a refusal leaves the folder as it was. Wheels come from a folder of small wheels
made here through real pip (offline); the runtime from the checkout's node_modules, or
from npm tarballs served by a local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_bundle_wheels import make_wheel
from workerbridge.bundle.fetch import WheelCache
from workerbridge.bundle.runtime import PYODIDE_FILES, RuntimeFiles, pins
from workerbridge.bundle.wheels import BundleError
from workerbridge.bundle.writer import read_requirements, write_bundle

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("index")
    make_wheel(src, "micropip", "0.11.1", files=["micropip/__init__.py"])
    make_wheel(src, "cronsim", "2.8", files=["cronsim/__init__.py"])
    make_wheel(src, "tzdata", "2026.6", files=["tzdata/__init__.py"])
    make_wheel(src, "python-dateutil", "2.9.0", ["six>=1.5"], ["dateutil/__init__.py"])
    make_wheel(src, "six", "1.17.0", files=["six.py"])
    make_wheel(src, "oldsix-user", "1.0", ["six<1.10"], ["oldsix_user.py"])
    make_wheel(src, "fastthing", "1.0", [], ["fastthing/__init__.py"],
               tag="cp314-cp314-pyemscripten_2026_0_wasm32")
    return src


@pytest.fixture(scope="module")
def runtime() -> RuntimeFiles:
    if not (NODE_MODULES / "pyodide").is_dir():
        pytest.fail("node_modules is missing: run `python3 build.py` first")
    return RuntimeFiles(NODE_MODULES)


def write(out: Path, reqs: list[str], index: Path, runtime: RuntimeFiles, cache: Path):
    return write_bundle(out, reqs, runtime=runtime,
                        cache=WheelCache(cache, ["--no-index", "--find-links", str(index)]))


def test_a_bundle_holds_the_runtime_the_package_and_the_wheels_with_lock_and_index(
        tmp_path, index, runtime):
    done = write(tmp_path / "site" / "dist", ["python-dateutil", "fastthing"], index, runtime,
                 tmp_path / "cache")
    out = tmp_path / "site" / "dist"
    assert done.out == out
    for name in PYODIDE_FILES:
        if name != "pyodide-lock.json":
            assert (out / "pyodide" / name).read_bytes() == \
                (NODE_MODULES / "pyodide" / name).read_bytes()
    assert (out / "pyscript" / "core.js").is_file()
    assert not list((out / "pyscript").rglob("*.map"))
    for name in ("worker.mjs", "snapshot.mjs", "prestart.mjs", "preboot.mjs", "remote.mjs",
                 "mpy.py", "workerbridge.zip"):
        assert (out / "workerbridge" / name).is_file()
    lock = json.loads((out / "packages" / "pyodide-lock.json").read_text())
    assert sorted(lock["packages"]) == ["cronsim", "fastthing", "micropip", "python-dateutil",
                                        "six", "tzdata"]
    assert lock["info"]["abi_version"] == "2026_0"
    for entry in lock["packages"].values():
        wheel = out / "packages" / entry["file_name"]
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == entry["sha256"]
    assert lock["packages"]["python-dateutil"]["depends"] == ["six"]
    # Pyodide's own lock is the bundle's, its wheels named from pyodide/ (a page's PyScript
    # `packages` resolve there).
    page_lock = json.loads((out / "pyodide" / "pyodide-lock.json").read_text())
    assert page_lock["info"] == lock["info"]
    assert {k: v["file_name"] for k, v in page_lock["packages"].items()} == \
        {k: "../packages/" + v["file_name"] for k, v in lock["packages"].items()}
    # The PEP 503 index links each wheel, relative, with its hash.
    root_page = (out / "packages" / "simple" / "index.html").read_text()
    assert '<a href="six/">six</a>' in root_page
    six = lock["packages"]["six"]
    page = (out / "packages" / "simple" / "six" / "index.html").read_text()
    assert f'href="../../{six["file_name"]}#sha256={six["sha256"]}"' in page
    meta = json.loads((out / "workerbridge" / "bundle.json").read_text())
    assert meta["lock_hash"] == done.lock_hash and len(done.lock_hash) == 16
    assert meta["pyodide"] == pins()["pyodide"]["version"]
    config = json.loads((out / "pyscript.json").read_text())
    assert config["interpreter"] == "./dist/pyodide/pyodide.mjs"
    # An mpy page's MicroPython comes from the bundle too.
    mpy = json.loads((out / "mpy.json").read_text())
    assert mpy == {"interpreter": "./dist/micropython/micropython.mjs",
                   "files": {"./workerbridge/mpy.py": "./workerbridge.py"}}
    assert (out / "micropython" / "micropython.wasm").read_bytes()


def test_the_same_bundle_twice_writes_the_same_bytes(tmp_path, index, runtime):
    first = write(tmp_path / "a", ["six"], index, runtime, tmp_path / "cache")
    second = write(tmp_path / "b", ["six"], index, runtime, tmp_path / "cache")
    assert first.lock_hash == second.lock_hash
    for rel in ("workerbridge/workerbridge.zip", "packages/pyodide-lock.json",
                "workerbridge/bundle.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


@pytest.mark.parametrize(("reqs", "says"), [
    (["linuxonly-not-here"], "not found on the package index"),
    (["python-dateutil", "oldsix-user"], "conflict: oldsix-user 1.0 needs six<1.10"),
])
def test_a_refusal_leaves_the_folder_as_it_was(tmp_path, index, runtime, reqs, says):
    out = tmp_path / "dist"
    write(out, ["six"], index, runtime, tmp_path / "cache")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(BundleError, match=says):
        write(out, reqs, index, runtime, tmp_path / "cache")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "dist"]  # no leftovers
    with pytest.raises(BundleError):
        write(tmp_path / "new", reqs, index, runtime, tmp_path / "cache")
    assert not (tmp_path / "new").exists()


def test_a_folder_that_is_not_a_bundle_is_never_replaced(tmp_path, index, runtime):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="is not a workerbridge bundle"):
        write(mine, ["six"], index, runtime, tmp_path / "cache")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_requirements_files(tmp_path):
    f = tmp_path / "requirements-worker.txt"
    f.write_text("# workers\nattrs\n\npython-dateutil==2.9.0.post0  # dates\n")
    assert read_requirements(f) == ["attrs", "python-dateutil==2.9.0.post0"]
    f.write_text("--index-url https://example.org/simple\nattrs\n")
    with pytest.raises(BundleError, match="pip options"):
        read_requirements(f)


def test_the_runtime_pins_are_the_npm_lock():
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    for name, pin in pins().items():
        entry = lock[f"node_modules/{name}"]
        assert pin == {"version": entry["version"], "integrity": entry["integrity"]}


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    served = tmp_path / "registry"
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, seen
    server.shutdown()


def test_runtime_from_npm_tarballs_checked_against_their_integrity(tmp_path, registry,
                                                                   monkeypatch):
    url, served, seen = registry
    contents = {
        "pyodide": {name: f"pyodide {name}".encode() for name in PYODIDE_FILES}
        | {"pyodide.js.map": b"map", "README.md": b"readme"},
        "@pyscript/core": {"package.json": b"{}", "dist/core.js": b"core",
                           "dist/core.js.map": b"map", "src/x.js": b"src"},
    }
    fake_pins = {}
    for name, files in contents.items():
        data = _tarball(files)
        leaf = served / name / "-" / f"{name.rsplit('/', 1)[-1]}-1.0.0.tgz"
        leaf.parent.mkdir(parents=True)
        leaf.write_bytes(data)
        digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
        fake_pins[name] = {"version": "1.0.0", "integrity": f"sha512-{digest}"}
    monkeypatch.setattr("workerbridge.bundle.runtime.pins", lambda: fake_pins)
    source = RuntimeFiles(cache=tmp_path / "cache", registry=url)
    got = {target: path.read_bytes() for target, path in source.files()}
    assert got == {**{f"pyodide/{n}": f"pyodide {n}".encode() for n in PYODIDE_FILES},
                   "pyscript/core.js": b"core"}
    assert source.fetched == 2 and len(seen) == 2
    again = RuntimeFiles(cache=tmp_path / "cache", registry=url)
    assert dict((t, p.read_bytes()) for t, p in again.files()) == got
    assert again.fetched == 0 and len(seen) == 2, "a second build fetches nothing"
    # A tarball that does not match its pin is refused, and nothing of it is kept.
    bad = served / "pyodide" / "-" / "pyodide-1.0.0.tgz"
    bad.write_bytes(_tarball({"pyodide.mjs": b"evil"}))
    with pytest.raises(BundleError, match="does not match its pinned integrity hash"):
        list(RuntimeFiles(cache=tmp_path / "other", registry=url).files())
    assert not any((tmp_path / "other").rglob("pyodide.mjs"))
