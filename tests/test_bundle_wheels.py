"""Host tests of the bundle's wheel logic: which wheels fit Pyodide 314, what a wheel
needs there (markers evaluated for Pyodide, not for this machine), the closure of a set
of packages, and the lock in Pyodide's format. The wheels are small zips made here."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from workerbridge.bundle.lock import lock_entry, lock_hash, lock_text, make_lock
from workerbridge.bundle.wheels import (
    BundleError,
    WheelInfo,
    canonical,
    closure,
    fits_pyodide,
    parse_wheel_name,
    read_wheel,
    requirements,
)


def make_wheel(tmp: Path, name: str, version: str, requires: list[str] = (),
               files: list[str] = (), top_level: str | None = None,
               tag: str = "py3-none-any") -> Path:
    path = tmp / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", "\n".join(meta) + "\n")
        for f in files:
            z.writestr(f, "")
        if top_level is not None:
            z.writestr(f"{info}/top_level.txt", top_level)
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\n"
                                    f"Root-Is-Purelib: {'true' if 'any' in tag else 'false'}\n"
                                    f"Tag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.parametrize(("file_name", "fits"), [
    ("attrs-25.1.0-py3-none-any.whl", True),
    ("six-1.17.0-py2.py3-none-any.whl", True),
    ("msgspec-0.23.0-cp314-cp314-pyemscripten_2026_0_wasm32.whl", True),
    ("thing-1.0-cp312-abi3-pyemscripten_2026_0_wasm32.whl", True),
    ("thing-1.0-cp314-cp314-manylinux_2_17_x86_64.whl", False),
    ("thing-1.0-cp313-cp313-pyemscripten_2026_0_wasm32.whl", False),
    ("thing-1.0-cp315-abi3-pyemscripten_2026_0_wasm32.whl", False),
    ("thing-1.0-py2-none-any.whl", False),
    ("thing-1.0-cp314-cp314-pyodide_2025_0_wasm32.whl", False),
])
def test_which_wheels_fit_pyodide_314(file_name, fits):
    assert fits_pyodide(parse_wheel_name(file_name)) is fits


def test_wheel_names_are_parsed_and_bad_ones_refused():
    w = parse_wheel_name("python_dateutil-2.9.0.post0-1-py2.py3-none-any.whl")
    assert (w.name, w.version, w.build, w.python_tags, w.pure) == \
        ("python_dateutil", "2.9.0.post0", "1", ("py2", "py3"), True)
    for bad in ("thing-1.0.tar.gz", "thing-1.0-any.whl"):
        with pytest.raises(BundleError):
            parse_wheel_name(bad)
    assert canonical("Python_Dateutil") == "python-dateutil"


def test_read_wheel_takes_metadata_imports_and_hash(tmp_path):
    path = make_wheel(tmp_path, "Demo_Pkg", "1.2", ["six>=1.5"],
                      ["demo/__init__.py", "demo/x.py", "helper.py", "_private.py"])
    info = read_wheel(path)
    assert (info.name, info.version, info.imports, info.pure) == \
        ("demo-pkg", "1.2", ("demo", "helper"), True)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    listed = read_wheel(make_wheel(tmp_path, "other", "1", top_level="alpha\nbeta\n_c\n"))
    assert listed.imports == ("alpha", "beta")


def test_markers_are_evaluated_for_pyodide_not_for_this_machine(tmp_path):
    info = read_wheel(make_wheel(tmp_path, "pkg", "1", [
        "six>=1.5",
        'colorama; sys_platform == "win32"',
        'pyodide-helper; sys_platform == "emscripten"',
        'old-backport; python_version < "3.11"',
        'tzdata; extra == "tz"',
    ]))
    assert requirements(info) == [("six", ">=1.5"), ("pyodide-helper", "")]
    assert ("tzdata", "") in requirements(info, ["tz"])


def test_closure_in_dependency_order_with_missing_and_conflicting_packages(tmp_path):
    def info(name, version, requires=()):
        return read_wheel(make_wheel(tmp_path, name, version, list(requires)))

    available = {w.name: w for w in (
        info("python-dateutil", "2.9.0", ["six>=1.5"]), info("six", "1.17.0"),
        info("loop-a", "1", ["loop-b"]), info("loop-b", "1", ["loop-a"]),
        info("needs-new-six", "1", ["six>=2"]), info("needs-ghost", "1", ["ghost"]))}
    assert [w.name for w in closure(["python-dateutil"], available)] == \
        ["six", "python-dateutil"]
    assert {w.name for w in closure(["loop-a"], available)} == {"loop-a", "loop-b"}
    with pytest.raises(BundleError, match=re.escape(
            "conflict: needs-new-six 1 needs six>=2, but the bundle has six 1.17.0")):
        closure(["needs-new-six"], available)
    with pytest.raises(BundleError, match="ghost: needed by needs-ghost 1"):
        closure(["needs-ghost"], available)
    with pytest.raises(BundleError, match="conflict: the bundle's packages needs six<1"):
        closure(["six<1"], available)


def test_the_lock_is_pyodides_format_and_stable(tmp_path):
    dateutil = read_wheel(make_wheel(tmp_path, "python-dateutil", "2.9.0", ["six>=1.5"],
                                     ["dateutil/__init__.py"]))
    six = read_wheel(make_wheel(tmp_path, "six", "1.17.0", files=["six.py"]))
    entry = lock_entry(dateutil)
    assert entry == {"depends": ["six"], "file_name": dateutil.file_name,
                     "imports": ["dateutil"], "install_dir": "site",
                     "name": "python-dateutil", "package_type": "package",
                     "sha256": dateutil.sha256, "tool": {}, "unvendored_tests": False,
                     "version": "2.9.0"}
    lock = make_lock([dateutil, six])
    assert lock["info"]["abi_version"] == "2026_0" and lock["info"]["python"] == "3.14.2"
    assert list(lock["packages"]) == ["python-dateutil", "six"]
    assert lock_text(lock) == lock_text(make_lock([six, dateutil]))
    assert json.loads(lock_text(lock)) == lock and len(lock_hash(lock)) == 16
    with pytest.raises(BundleError, match="does not hold: six"):
        make_lock([dateutil])


def test_wheel_info_is_a_value():
    a = WheelInfo("x", "1", "x-1-py3-none-any.whl", "0" * 64, (), ("x",), True)
    assert a == WheelInfo("x", "1", "x-1-py3-none-any.whl", "0" * 64, (), ("x",), True)
