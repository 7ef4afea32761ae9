"""Live queries and sync between tabs, in real Chromium: two pages of one origin, each
with its own Pyodide, its own WorkerBridge and worker, sharing one IndexedDB database.

To make two updates concurrent for real, a tab keeps its worker busy in a pure-Python
loop (tests/pages/faults.py) and makes its update meanwhile: the update is stamped on the
page when called, and commits only after the loop, while the other tab writes freely.
(Holding an IndexedDB transaction open would not do: Chromium then holds every other
transaction of the database, whatever its collections.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conftest import PAGE_HELPERS, Harness

SETUP = """
import asyncio, json, time, uuid
import js
from workerbridge import WorkerBridge
F = WorkerBridge(modules=["./faults.py"])
S = F.storage
COLLS = {"docs": {"indexes": ["n"]}}
events = []
S.on("conflict-resolved", events.append)

async def until(pred, limit=10.0):
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True

def union_tags(older, newer):
    return {**older, **newer, "tags": sorted(set(older["tags"]) | set(newer["tags"]))}

def busy(seconds=2.0):
    # the worker spins: storage calls made meanwhile are stamped now and run after it
    return asyncio.ensure_future(F.request("faults", "spin", {"seconds": seconds}))

def later(coro):
    return asyncio.ensure_future(coro)
""" + PAGE_HELPERS


@pytest.fixture(scope="module")
def tabs(harness: Harness) -> Iterator[tuple[Harness, Harness]]:
    """This origin's test page and a second tab of it, in the same browser context."""
    harness.py(SETUP)
    page = harness.page.context.new_page()
    second = Harness(page, harness.origin)
    second.py(SETUP)
    yield harness, second
    page.close()


def both(tabs: tuple[Harness, Harness], code: str) -> list:
    return [t.py(code) for t in tabs]


def fresh(tabs: tuple[Harness, Harness], strategy: str | None = None) -> str:
    """One new database open in both tabs (with ``strategy`` for "docs" in both)."""
    name = "sync-" + uuid.uuid4().hex
    both(tabs, f"""
        events.clear()
        await S.define({name!r}, 1, COLLS)
        if {strategy!r} is not None:
            if {strategy!r} == "tags":
                S.register_merge_function("tags", union_tags)
            await S.set_conflict_strategy("docs", {strategy!r})
    """)
    return name


def test_watch_fires_in_both_tabs_and_unsubscribe_stops_it(tabs):
    a, b = tabs
    fresh(tabs)
    both(tabs, """
        seen = []
        stop = S.watch("docs", {"n": {"$gte": 10}}, seen.append)
        await until(lambda: len(seen) == 1)
    """)
    a.py('await S.create("docs", {"id": "x", "n": 10, "s": "one"})')
    # Both tabs hear it: the writing one from its own worker, the other through the channel.
    got = both(tabs, 'await until(lambda: len(seen) == 2); seen[-1]')
    assert got == [[{"id": "x", "n": 10, "s": "one"}]] * 2
    b.py('await S.update("docs", {"id": "x"}, {"s": "two"})')
    b.py('await S.create("docs", {"id": "y", "n": 3})')  # outside the filter: no new call
    got = both(tabs, 'await until(lambda: len(seen) == 3); await asyncio.sleep(0.3); seen[2:]')
    assert got == [[[{"id": "x", "n": 10, "s": "two"}]]] * 2
    # A burst of 41 commits reaches each tab as fewer calls, the last one complete.
    b.py("""
        await S.bulk_create("docs", [{"id": f"z{i:02}", "n": 0} for i in range(40)])
        await asyncio.gather(*(S.update("docs", {"id": f"z{i:02}"}, {"n": 20 + i})
                               for i in range(40)))
    """)
    counts = both(tabs, """
        await until(lambda: len(seen[-1]) == 41)
        await asyncio.sleep(0.3)
        [len(seen) - 3, [r["id"] for r in seen[-1]] == ["x"] + [f"z{i:02}" for i in range(40)]]
    """)
    for calls, complete in counts:
        assert complete and 1 <= calls < 41
    a.py("stop(); calls = len(seen)")
    b.py('await S.delete("docs", {"id": "x"})')
    after = both(tabs, 'await until(lambda: len(seen[-1]) == 40, 3); await asyncio.sleep(0.3); '
                       '[len(seen), len(seen[-1])]')
    assert after[0][0] == a.py("calls") and after[0][1] == 41  # tab A no longer called
    assert after[1][1] == 40
    b.py("stop()")


def test_concurrent_updates_converge_by_lww_in_both_tabs(tabs):
    a, b = tabs
    fresh(tabs)
    a.py('await S.create("docs", {"id": "r", "n": 1, "title": "start"})')
    both(tabs, """
        seen = []
        stop = S.watch("docs", {"id": "r"}, seen.append)
        await until(lambda: seen and seen[-1][0]["title"] == "start")
    """)
    # Tab A's update is stamped first but commits last: the later stamp (B's) wins.
    a.py("""
        stall = busy()
        late = later(S.update("docs", {"id": "r"}, {"title": "from A", "a": 1}))
        await asyncio.sleep(0.1)
    """)
    b.py('await S.update("docs", {"id": "r"}, {"title": "from B", "b": 1})')
    n_a = a.py("await stall; await late")
    final = {"id": "r", "n": 1, "title": "from B", "b": 1}
    out = both(tabs, """
        await until(lambda: seen[-1][0]["title"] == "from B")
        await asyncio.sleep(0.3)
        [await S.get("docs", "r"), seen[-1], events]
    """)
    assert n_a == 0
    assert out[0][0] == out[1][0] == final
    assert out[0][1] == out[1][1] == [final]
    assert out[1][2] == []
    (event,) = out[0][2]
    assert {k: event[k] for k in ("collection", "id", "strategy", "winner")} == \
        {"collection": "docs", "id": "r", "strategy": "lww", "winner": "stored"}
    # An update stamped later than the stored version simply wins, in either tab.
    assert a.py('await S.update("docs", {"id": "r"}, {"title": "A again"})') == 1
    assert b.py('(await S.get("docs", "r"))["title"]') == "A again"
    both(tabs, "stop()")


def test_vector_clocks_tell_concurrent_updates_from_ordered_ones(tabs):
    a, b = tabs
    fresh(tabs, "vector")
    a.py('await S.create("docs", {"id": "v", "n": 1})')
    # Ordered: each tab updates after hearing the other's update: no conflict.
    for i, tab in enumerate([a, b, a, b]):
        tab.py(f'await S.update("docs", {{"id": "v"}}, {{"step": {i}}})')
        both(tabs, "await asyncio.sleep(0.2)")  # the other tab hears it
    assert both(tabs, "events") == [[], []]
    # Concurrent: both tabs update before either commits (both workers are busy).
    for who in "AB":
        tabs["AB".index(who)].py(f"""
            stall = busy()
            mine = later(S.update("docs", {{"id": "v"}}, {{"who": {who!r}}}))
            await asyncio.sleep(0.1)
        """)
    out = both(tabs, """
        await stall; await mine
        await asyncio.sleep(0.3)
        [await S.get("docs", "v"), events]
    """)
    assert out[0][0] == out[1][0] == {"id": "v", "n": 1, "step": 3, "who": "B"}, out  # later HLC
    events = out[0][1] + out[1][1]
    assert len(events) == 1, events  # only the update that committed second conflicted
    assert events[0]["strategy"] == "vector" and events[0]["id"] == "v"
    assert events[0]["reason"].startswith("concurrent")
    assert events[0]["winner"] == ("update" if out[1][1] else "stored")


def test_a_merge_function_runs_on_the_page_and_its_result_is_stored(tabs):
    a, b = tabs
    fresh(tabs, "tags")
    # Tab A's worker restarts before the conflict: the strategy must reach the new worker
    # with the settings.
    crashed = a.py("""
        await S.create("docs", {"id": "m", "tags": ["base"]})
        await S.update("docs", {"id": "m"}, {"tags": ["base", "seed"]})
        restarts = F.stats().restarts
        crashed = await failure(F.request("faults", "close", {}, retries=0))
        await F.pool.wait_all_ready()
        [crashed[0], F.stats().restarts - restarts]
    """)
    assert crashed == ["WorkerCrashedError", 1]
    b.py("""
        seen = []
        stop = S.watch("docs", {"id": "m"}, seen.append)
        await until(lambda: seen and "seed" in seen[-1][0]["tags"])
    """)
    a.py("""
        stall = busy()
        mine = later(S.update("docs", {"id": "m"}, {"tags": ["a", "base", "seed"]}))
        await asyncio.sleep(0.1)
    """)
    b.py('await S.update("docs", {"id": "m"}, {"tags": ["b", "base", "seed"], "by": "B"})')
    out_a = a.py("""
        await stall
        n = await mine
        [n, await S.get("docs", "m"), events]
    """)
    merged = {"id": "m", "tags": ["a", "b", "base", "seed"], "by": "B"}
    n, got, events = out_a
    assert n == 1 and got == merged
    assert [(e["strategy"], e["winner"]) for e in events] == [("tags", "merged")]
    out_b = b.py("""
        await until(lambda: len(seen[-1][0]["tags"]) == 4)
        [await S.get("docs", "m"), seen[-1], events]
    """)
    assert out_b == [merged, [merged], []]
    b.py("stop()")


def test_bad_input_is_refused_and_the_worker_keeps_serving(tabs):
    a, _ = tabs
    fresh(tabs)
    out = a.py("""
        await S.create("docs", {"id": "k", "n": 1})
        res = [
            await failure(S.set_conflict_strategy("docs", "nope")),
            await failure(S.set_conflict_strategy("nope", "lww")),
            await failure(S.update("docs", {"id": "k"}, {"_v": 1})),
            await failure(S.create("docs", {"id": "k2", "_v": {"h": "x"}})),
            await failure(S.read("docs", {"_v.h": {"$exists": True}})),
            refused(S.watch, "docs", {"$bad": 1}, print),
            refused(S.watch, "docs", {}, "not callable"),
            refused(S.register_merge_function, "lww", union_tags),
        ]
        res + [await S.get("docs", "k"), await S.read("docs"), S.get_conflict_strategy("docs")]
    """)
    *errors, got, everything, strategy = out
    kinds = [e[0] for e in errors]
    assert kinds == ["InvalidInputError", "UnknownCollectionError", "InvalidInputError",
                     "InvalidInputError", "InvalidFilterError", "InvalidFilterError",
                     "InvalidTypeError", "InvalidInputError"]
    assert got == {"id": "k", "n": 1} and everything == [got] and strategy == "lww"
