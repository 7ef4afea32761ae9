"""Host tests of fetching a bundle's wheels: real pip, offline, over a folder of small
wheels made here (``--no-index --find-links``) standing in for PyPI."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_bundle_wheels import make_wheel
from workerbridge.bundle.fetch import WheelCache, resolve
from workerbridge.bundle.wheels import BundleError


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("index")
    make_wheel(src, "python-dateutil", "2.9.0", ["six>=1.5", 'pywin32; sys_platform == "win32"'],
               ["dateutil/__init__.py"])
    make_wheel(src, "six", "1.16.0", files=["six.py"])
    make_wheel(src, "six", "1.17.0", files=["six.py"])
    make_wheel(src, "fastthing", "1.0", ["six"], ["fastthing/__init__.py"],
               tag="cp314-cp314-pyemscripten_2026_0_wasm32")
    make_wheel(src, "linuxonly", "1.0", tag="cp314-cp314-manylinux_2_17_x86_64")
    (src / "sdistonly-1.0.tar.gz").write_bytes(b"an sdist and nothing else")
    return src


def cache(root: Path, index: Path) -> WheelCache:
    return WheelCache(root, ["--no-index", "--find-links", str(index)])


def test_the_closure_is_fetched_once_and_then_comes_from_the_cache(tmp_path, index):
    first = cache(tmp_path / "cache", index)
    wheels = resolve(["python-dateutil", "fastthing"], first)
    assert [(w.name, w.version) for w in wheels] == \
        [("six", "1.17.0"), ("python-dateutil", "2.9.0"), ("fastthing", "1.0")]
    assert first.pip_runs == 3  # dateutil, fastthing, then six; never pywin32 (a win32 marker)
    again = cache(tmp_path / "cache", index)
    assert resolve(["python-dateutil", "fastthing"], again) == wheels
    assert again.pip_runs == 0, "a second run with nothing changed asks no index"


def test_a_version_specifier_picks_the_wheel(tmp_path, index):
    wheels = resolve(["six<1.17"], cache(tmp_path, index))
    assert [(w.name, w.version) for w in wheels] == [("six", "1.16.0")]


@pytest.mark.parametrize(("name", "says"), [
    ("linuxonly", "linuxonly: no Pyodide wheel on PyPI (pure Python, or built for "
                  "pyemscripten_2026_0_wasm32); serve a Pyodide distribution that has it and "
                  "set packages_base_url="),
    ("sdistonly", "sdistonly: the index has only source distributions of it, and a worker "
                  "loads wheels only; build a wheel elsewhere (pip wheel sdistonly"),
    ("not-on-the-index", "not-on-the-index: not found on the package index; check its name"),
])
def test_a_package_without_a_pyodide_wheel_is_refused_with_the_fix(tmp_path, index, name, says):
    with pytest.raises(BundleError) as info:
        resolve([name], cache(tmp_path, index))
    assert str(info.value).startswith(says)


def test_a_cached_wheel_that_changed_is_fetched_again(tmp_path, index):
    root = tmp_path / "cache"
    resolve(["six"], cache(root, index))
    (root / "six-1.17.0-py3-none-any.whl").write_bytes(b"not the same file")
    again = cache(root, index)
    assert [w.version for w in resolve(["six"], again)] == ["1.17.0"] and again.pip_runs == 1
