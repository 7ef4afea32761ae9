"""Third-party packages in workers, in real Chromium, from the wheels the build fetched
from PyPI into dist/packages (pyproject.toml's [tool.workerbridge] packages).

Every request that leaves 127.0.0.1 is aborted for this page, and the test that runs
last checks none was even tried: nothing loads from a CDN or PyPI.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import DIST, PAGE_HELPERS, Harness, start_server

SETUP = """
import asyncio
from workerbridge import WorkerPool, WorkerBridge, PackageNotFoundError

def infos(pool):
    return [{k: v for k, v in i.items() if k not in ("ops", "control")}
            for i in pool.ready_info()]

async def reports(pool, use, n=None):
    # one report from every worker (calls that linger a little spread over the pool)
    n = n or 3 * pool.size
    got = await asyncio.gather(*[pool.execute("pkgs", "report", {"use": use, "date": "2024-01-31"})
                                 for _ in range(n)])
    return got
"""


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Pyodide distribution of our own: a lock naming attrs and idna, and their
    wheels, served apart from the bundle (what packages_base_url points at)."""
    root = tmp_path_factory.mktemp("pydist")
    lock = json.loads((DIST / "packages" / "pyodide-lock.json").read_text())
    lock["packages"] = {k: v for k, v in lock["packages"].items() if k in ("attrs", "idna")}
    for entry in lock["packages"].values():
        shutil.copy2(DIST / "packages" / entry["file_name"], root / entry["file_name"])
    (root / "pyodide-lock.json").write_text(json.dumps(lock))
    return root


@pytest.fixture(scope="module")
def h(browser: Any, distribution: Path) -> Iterator[Harness]:
    srv, origin = start_server(isolation=True, extra=(f"/pydist={distribution}",))
    context = browser.new_context()
    foreign: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    harness = Harness(context.new_page(), origin)
    harness.foreign = foreign  # type: ignore[attr-defined]
    harness.py(PAGE_HELPERS + SETUP)
    yield harness
    context.close()
    srv.shutdown()


def test_pure_packages_with_their_dependencies_go_into_the_snapshot(h: Harness):
    h.py("""
        PURE = WorkerPool(["./pkgs.py"], size=2, packages=["attrs", "python-dateutil"],
                          fallback="never")
        await PURE.wait_all_ready()
    """)
    infos = h.py("infos(PURE)")
    assert sorted(i["snapshot"] for i in infos) == ["loaded", "made"]
    for info in infos:
        # python-dateutil's dependency came along, dependencies first.
        assert info["packages"] == ["attrs 26.1.0", "six 1.17.0", "python-dateutil 2.9.0.post0"]
        assert "snapshot_reason" not in info
    for report in h.py('await reports(PURE, ["dateutil", "attrs"])'):
        assert report["next_month"] == "2024-02-29T00:00:00"
        assert report["point"] == "Point(x=1, y=2)"
        site = "/lib/python3.14/site-packages/"
        assert report["modules"]["dateutil"].startswith(site + "dateutil/")
        assert report["modules"]["six"] == site + "six.py"
        assert report["modules"]["msgspec"] is None  # not asked for, not loaded


def test_a_snapshot_boot_unpacks_the_wheels_again(h: Harness):
    # A worker that boots from the snapshot has the packages' modules in memory; it must
    # also have their files (a lazy import, package data, importlib.metadata).
    got = h.py("""
        from workerbridge.pool.webworker import _compiled
        await PURE.terminate()
        AGAIN = WorkerPool(["./pkgs.py"], size=1, packages=["attrs", "python-dateutil"],
                           fallback="never")
        await AGAIN.wait_all_ready()
        info = infos(AGAIN)[0]
        files = await AGAIN.execute("pkgs", "imported",
                                    {"names": ["dateutil.tz", "dateutil.zoneinfo", "attr._make"]})
        [info["snapshot"], files]
    """)
    assert got == ["loaded", ["dateutil.tz", "dateutil.zoneinfo", "attr._make"]]
    tz = h.py("""
        await AGAIN.execute("pkgs", "report", {"use": ["dateutil"], "date": "2024-03-31T10:00:00+02:00"})
    """)
    assert tz["next_month"] == "2024-04-30T10:00:00+02:00"
    h.py("await AGAIN.terminate()")


def test_a_compiled_package_turns_snapshots_off_and_loads_with_pure_ones(h: Harness):
    h.py("""
        MIXED = WorkerPool(["./pkgs.py"], size=2, packages=["msgspec", "python-dateutil"],
                           fallback="never")
        await MIXED.wait_all_ready()
    """)
    infos = h.py("infos(MIXED)")
    assert [i["snapshot"] for i in infos] == ["off", "off"]
    for info in infos:
        assert "msgspec is a compiled package" in info["snapshot_reason"]
        assert info["packages"] == ["msgspec 0.23.0", "six 1.17.0", "python-dateutil 2.9.0.post0"]
    for report in h.py('await reports(MIXED, ["msgspec", "dateutil"])'):
        assert report["msgspec_roundtrip"] == ["x", "y"]
        assert report["msgspec_raw"] == '{"name":"a","tags":["x","y"]}'
        assert report["msgspec_error"] == "Expected `str`, got `int` - at `$.name`"
        assert report["next_month"] == "2024-02-29T00:00:00"
        assert report["modules"]["msgspec"].endswith("/site-packages/msgspec/__init__.py")
    h.py("await MIXED.terminate()")


def test_packages_without_snapshots(h: Harness):
    report = h.py("""
        OFF = WorkerPool(["./pkgs.py"], size=1, packages=["idna", "attrs"], snapshot=False,
                         fallback="never")
        await OFF.start()
        r = await OFF.execute("pkgs", "report", {"use": ["idna", "attrs"]})
        r["snapshot"] = infos(OFF)[0]["snapshot"]
        await OFF.terminate()
        r
    """)
    assert report["idna"] == "xn--bcher-kva.example"
    assert report["point"] == "Point(x=1, y=2)"
    assert report["snapshot"] == "off"


def test_a_package_not_in_the_bundle_fails_start_with_the_command_that_adds_it(h: Harness):
    got = h.py("""
        MISSING = WorkerPool(["./pkgs.py"], size=2, packages=["attrs", "numpy"])
        import time
        t0 = time.monotonic()
        err = await failure(MISSING.start())
        # every later call gets the same typed error, and nothing hangs
        later = await failure(MISSING.execute("pkgs", "report", {"use": []}))
        stats = MISSING.stats()
        await MISSING.terminate()
        [err, later, stats.restarts, time.monotonic() - t0]
    """)
    err, later, restarts, _ = got
    assert err[0] == "PackageNotFoundError"
    assert '"numpy"' in err[1] and "python -m workerbridge bundle OUT --package numpy" in err[1]
    assert later[0] == "PackageNotFoundError"
    assert restarts == 0, "a package the bundle lacks is not a crash to retry"


def test_bad_packages_arguments_are_refused_on_the_page(h: Harness):
    got = h.py("""
        [refused(lambda: WorkerPool(["./pkgs.py"], packages="attrs")),
         refused(lambda: WorkerPool(["./pkgs.py"], packages=["attrs>=1"])),
         refused(lambda: WorkerPool("./plain-worker.mjs", packages=["attrs"])),
         refused(lambda: WorkerPool(["./pkgs.py"], packages=["attrs"], fallback="main"))]
    """)
    assert [g[0] for g in got] == ["InvalidTypeError", "InvalidInputError", "InvalidInputError",
                                   "InvalidInputError"]


def test_install_at_run_time_comes_from_the_bundle_index(h: Harness):
    got = h.py("""
        RUN = WorkerPool(["./pkgs.py"], size=1, fallback="never")
        await RUN.start()
        before = await RUN.execute("pkgs", "imported", {"names": ["dateutil", "six"]})
        done = await RUN.execute("pkgs", "install", {"requirements": ["python-dateutil"],
                                                     "import": "dateutil"})
        after = await RUN.execute("pkgs", "imported", {"names": ["dateutil", "six"]})
        missing = await failure(RUN.execute("pkgs", "install", {"requirements": ["numpy"],
                                                                "import": "numpy"}))
        still = await RUN.execute("pkgs", "report", {"use": ["dateutil"], "date": "2023-01-31"})
        await RUN.terminate()
        [before, done, after, missing, still["next_month"]]
    """)
    before, done, after, missing, next_month = got
    assert before == []
    assert done["installed"] == ["python-dateutil 2.9.0.post0"]
    assert done["version"] == "2.9.0.post0"
    assert after == ["dateutil", "six"]  # its dependency came from the index too
    assert missing[0] == "PackageNotFoundError" and "numpy" in missing[1]
    assert next_month == "2023-02-28T00:00:00"
    index = [u for u in h.requests if "/dist/packages/simple/" in u]
    assert any(u.endswith("/simple/python-dateutil/") for u in index), index
    assert any(u.endswith("/simple/six/") for u in index), index


def test_packages_base_url_resolves_against_that_distribution(h: Harness):
    got = h.py("""
        async def idna_pool(**options):
            pool = WorkerPool(["./pkgs.py"], size=1, packages=["idna"], fallback="never",
                              **options)
            await pool.start()
            r = await pool.execute("pkgs", "report", {"use": ["idna"]})
            state = infos(pool)[0]["snapshot"]
            await pool.terminate()
            return [r["idna"], state]

        # The same package from the bundle, twice (the second boots from the snapshot),
        # then from the other distribution: another lock, so another snapshot.
        runs = [await idna_pool(), await idna_pool(), await idna_pool(packages_base_url="./pydist/")]
        NOT_THERE = WorkerPool(["./pkgs.py"], size=1, packages=["six"],
                               packages_base_url="./pydist/")
        err = await failure(NOT_THERE.start())
        await NOT_THERE.terminate()
        [runs, err]
    """)
    runs, err = got
    assert runs == [["xn--bcher-kva.example", "made"], ["xn--bcher-kva.example", "loaded"],
                    ["xn--bcher-kva.example", "made"]]
    # six is in the bundle, but not in that distribution's lock: resolved there alone.
    assert err[0] == "PackageNotFoundError" and "/pydist/pyodide-lock.json" in err[1]
    assert any("/pydist/idna-" in u for u in h.requests)


def test_a_wheel_that_does_not_match_its_hash_is_refused(h: Harness, distribution: Path):
    # After the test above: the distribution's idna wheel is now corrupted on disk.
    wheel = next(p for p in distribution.iterdir() if p.name.startswith("idna-"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    got = h.py("""
        BROKEN = WorkerPool(["./pkgs.py"], size=1, packages=["idna"],
                            packages_base_url="./pydist/")
        err = await failure(BROKEN.start())
        stats = BROKEN.stats()
        await BROKEN.terminate()
        # the bundle's own idna still loads
        GOOD = WorkerPool(["./pkgs.py"], size=1, packages=["idna"], fallback="never")
        await GOOD.start()
        ok = (await GOOD.execute("pkgs", "report", {"use": ["idna"]}))["idna"]
        await GOOD.terminate()
        [err, stats.restarts, ok]
    """)
    err, restarts, ok = got
    assert err[0] == "PackageError" and "does not match the lock's sha256" in err[1]
    assert restarts == 0
    assert ok == "xn--bcher-kva.example"


def test_a_pyscript_page_loads_its_own_packages_from_the_bundle(h: Harness):
    # pages/packages.html: the page's own PyScript `packages`, through the bundle's lock and
    # index (docs/packages.md), under the same no-foreign-request rule.
    page = h.page.context.new_page()
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.goto(h.origin + "/packages.html")
    page.wait_for_function("window.pageResult !== undefined", timeout=120_000)
    assert page.evaluate("window.pageResult") == "2024-02-29 attrs 26.1.0"
    assert any(u.endswith("/dist/packages/python_dateutil-2.9.0.post0-py2.py3-none-any.whl")
               for u in seen)
    page.close()


def test_no_request_left_this_machine(h: Harness):
    # Runs last in this module: everything above booted, loaded and installed.
    assert h.foreign == []  # type: ignore[attr-defined]
    assert all(u.startswith(h.origin) or u.startswith(("blob:", "data:")) for u in h.requests)
