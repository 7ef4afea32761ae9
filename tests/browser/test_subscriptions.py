"""Subscriptions to changes across real tabs (BroadcastChannel), a MessagePort and DOM
events: each subscriber hears of exactly the changes its pattern and filter match, once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import PAGE_HELPERS, Harness

SETUP = """
import asyncio, json, js
from pyodide.ffi import create_proxy
from workerbridge import WorkerBridge
S = WorkerBridge().subscriptions   # no worker is needed to route changes
GOT = {}

def into(name):
    def cb(delivery):
        GOT.setdefault(name, []).append(delivery)
    return cb
"""


@pytest.fixture(scope="module")
def tabs(browser: Any, server: str) -> Iterator[list[Harness]]:
    context = browser.new_context()
    pages = [Harness(context.new_page(), server) for _ in range(3)]
    for h in pages:
        h.py(PAGE_HELPERS + SETUP)
    yield pages
    context.close()


def test_a_change_reaches_exactly_the_matching_subscribers_once(tabs: list[Harness]):
    one, two, three = tabs
    one.py("""
        await S.subscribe({"app": "a", "model": "task"}, deliver=into("all"))
        await S.subscribe({"app": "a", "model": "task"}, filter={"priority": {"$eq": "high"}},
                          deliver=into("high"))
    """)
    two.py("""
        await S.subscribe({"app": "a", "model": "task", "user": "ann"}, deliver=into("ann"))
        await S.subscribe({"app": "a", "model": "task", "id": "t2"}, deliver=into("t2"),
                          full=True)
        await S.subscribe({"app": "a", "model": "task"})   # deliver="tab": a DOM event
        js.window.addEventListener("workerbridge:change", create_proxy(
            lambda e: GOT.setdefault("tab", []).append(json.loads(e.detail))))
        pipe = js.MessageChannel.new()   # as an iframe would get it
        pipe.port2.onmessage = create_proxy(
            lambda e: GOT.setdefault("port", []).append(json.loads(e.data)))
        await S.subscribe({"app": "a", "model": "task", "user": "bob"}, deliver=pipe.port1)
    """)
    three.py("""
        await S.subscribe({"app": "a", "model": "note"}, deliver=into("notes"))
        await S.subscribe({"app": "b", "model": "task"}, deliver=into("other-app"))
        await S.publish({"event": "model_created",
                         "channel": {"app": "a", "model": "task", "id": "t1", "user": "ann"},
                         "record": {"id": "t1", "priority": "high"}})
        await S.publish({"event": "model_updated",
                         "channel": {"app": "a", "model": "task", "id": "t2", "user": "bob"},
                         "record": {"id": "t2", "priority": "low", "title": "x"},
                         "patch": [{"op": "replace", "path": "/title", "value": "x"}]})
        await S.publish({"event": "model_deleted",
                         "channel": {"app": "a", "model": "task", "id": "t1", "user": "ann"}})
    """)
    seen = "await asyncio.sleep(0.5)\n{k: [(d['event'], d['id']) for d in v] for k, v in GOT.items()}"
    assert one.py(seen) == {
        "all": [["model_created", "t1"], ["model_updated", "t2"], ["model_deleted", "t1"]],
        "high": [["model_created", "t1"]]}
    assert two.py(seen) == {
        "ann": [["model_created", "t1"], ["model_deleted", "t1"]],
        "t2": [["model_updated", "t2"]],
        "tab": [["model_created", "t1"], ["model_updated", "t2"], ["model_deleted", "t1"]],
        "port": [["model_updated", "t2"]]}
    assert three.py(seen) == {}
    # Slim by default: channels and the patch, the record only when asked for.
    full, slim = two.py("[GOT['t2'][0], GOT['port'][0]]")
    assert full["record"] == {"id": "t2", "priority": "low", "title": "x"}
    assert "record" not in slim and slim["channels"] == ["a/bob/task/*"]
    assert slim["patch"] == [{"op": "replace", "path": "/title", "value": "x"}]


def test_bad_subscriptions_and_changes_are_refused(tabs: list[Harness]):
    got = tabs[0].py("""
        [await failure(S.subscribe({"app": "a", "model": "t", "room": "x"})),
         await failure(S.subscribe({"app": "a"})),
         await failure(S.subscribe({"app": "a", "model": "t"}, filter={"n": {"$nope": 1}})),
         await failure(S.subscribe({"app": "a", "model": "t"}, deliver=42)),
         await failure(S.publish({"event": "model_moved", "channel": {}})),
         await failure(S.publish({"event": "model_updated",
                                  "channel": {"app": "a", "model": "t", "id": "1"},
                                  "patch": [{"op": "frob"}]}))]
    """)
    assert [e[0] for e in got] == ["InvalidInputError", "InvalidInputError",
                                   "InvalidFilterError", "InvalidTypeError",
                                   "InvalidInputError", "InvalidInputError"]
