"""The durable outbox and the seed's writer -> router -> transport pipeline, in real
Chromium against a real server (``tests/outbox_server.py``: the ``websockets`` package
and an HTTP endpoint, in a child process started and killed by pid): every event reaches
the server's effects exactly once, in order per key, through lost acknowledgements, a
killed server, a reload and an offline spell."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PAGE_HELPERS, Harness
from outbox_server import ServerProcess

SETUP = """
import asyncio, js, json, time
from workerbridge import WorkerBridge, Stage
from workerbridge.jobs import engine as _engine
B = WorkerBridge(workers=2, packages=["jsonpatch"], fallback="never")
await B.start()
await B.pool.wait_all_ready()
"""


def page(context: Any, origin: str) -> Harness:
    h = Harness(context.new_page(), origin)
    h.py(PAGE_HELPERS + SETUP)
    return h


@pytest.fixture(scope="module")
def ctx(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture(scope="module")
def h(ctx: Any, server: str) -> Iterator[Harness]:
    tab = page(ctx, server)
    yield tab
    tab.page.close()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "effects.jsonl")
    proc.start()
    yield proc
    proc.kill()


def in_order_per_key(effects: list[list[Any]], order: list[str]) -> bool:
    """Each key's effects came in the order the events were added."""
    rank = {ident: n for n, ident in enumerate(order)}
    last: dict[Any, int] = {}
    for ident, key in effects:
        if rank[ident] < last.get(key, -1):
            return False
        last[key] = rank[ident]
    return True


def test_every_event_lands_once_in_order_through_drops_a_kill_and_a_reload(
        ctx: Any, server: str, remote: ServerProcess):
    # Every third batch applied but never acknowledged; and nothing more past 60 effects,
    # so the kill below surely comes mid-stream.
    remote.set_mode(drop_every=3, hold_after=60)
    tab = page(ctx, server)
    box = (f'J = _engine.Jobs(B.pool, db="t-outbox")\n'
           f'box = await J.outbox("server", url="{remote.ws_url}", batch=20, '
           f'headers={{"authorization": "Bearer t0k"}})\n')
    ids = tab.py(box + textwrap.dedent("""
        ids = await box.add_many([{"n": n} for n in range(300)],
                                 keys=[f"k{n % 5}" for n in range(300)])
        ids
    """))
    assert remote.wait_for(60)["effects"]
    remote.kill()  # mid-stream: the connection drops, sending backs off
    time.sleep(1.0)
    stats = tab.py("[box.stats.failures, box.stats.last_error, await box.pending()]")
    assert stats[0] >= 1 and stats[1] in ("connection closed", "timeout"), stats
    assert stats[2] > 0
    remote.start(hold_after=150)  # held again, so the reload surely comes mid-stream
    assert len(remote.wait_for(150)["effects"]) >= 150
    tab.page.reload()  # the reloaded tab sends the rest
    tab.page.wait_for_function("window.pyReady === true", timeout=120_000)
    tab.py(PAGE_HELPERS + SETUP)
    remote.set_mode()
    left = tab.py(box + "[await box.flush(60), await box.pending(), box.stats.sent > 0]")
    assert left == [True, 0, True]
    state = remote.state()
    got = [ident for ident, _ in state["effects"]]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got)) == 300  # none lost
    assert state["duplicates"] > 0  # resent after lost acks, and dropped by the server
    assert in_order_per_key(state["effects"], ids)
    assert {"authorization": "Bearer t0k"} in state["hellos"]
    tab.py("await J.close(timeout=0)")
    tab.page.close()


def test_http_posts_are_retried_until_acknowledged(h: Harness, remote: ServerProcess):
    remote.set_mode(fail_every=2)  # every second POST answers 503
    got = h.py(f"""
        J = _engine.Jobs(B.pool, db="t-outbox-http")
        box = await J.outbox("api", url="{remote.http_url}", batch=10,
                             headers={{"authorization": "Bearer h"}})
        ids = await box.add_many([{{"n": n}} for n in range(50)])
        ok = await box.flush(30)
        out = [ok, ids, box.stats.retries, await box.pending()]
        await J.close(timeout=0)
        out
    """)
    ok, ids, retries, pending = got
    state = remote.state()
    assert ok and pending == 0 and retries >= 1
    assert [ident for ident, _ in state["effects"]] == ids  # in order, each once
    assert state["duplicates"] == 0
    assert {"authorization": "Bearer h"} in state["hellos"]


def test_sending_pauses_while_offline_and_resumes(ctx: Any, h: Harness,
                                                  remote: ServerProcess):
    h.py(f"""
        J = _engine.Jobs(B.pool, db="t-outbox-offline")
        box = await J.outbox("off", url="{remote.ws_url}", batch=5)
    """)
    ctx.set_offline(True)
    try:
        before = h.py("""
            ids = await box.add_many([{"n": n} for n in range(10)])
            await asyncio.sleep(1.0)
            [js.navigator.onLine, box.stats.offline, await box.pending()]
        """)
        assert before == [False, True, 10]
        assert remote.state()["effects"] == []
    finally:
        ctx.set_offline(False)
    after = h.py("[await box.flush(20), await box.pending(), ids]")
    assert after[:2] == [True, 0]
    assert [ident for ident, _ in remote.state()["effects"]] == after[2]
    h.py("await J.close(timeout=0)")


def test_bad_outboxes_are_refused_and_write_nothing(h: Harness):
    got = h.py("""
        J = _engine.Jobs(B.pool, db="t-outbox-bad")
        out = [await failure(J.outbox("x", url=url)) for url in
               ("ftp://example.org/x", "javascript:alert(1)", "", "ws://", 42)]
        out += [await failure(J.outbox("x", url="ws://127.0.0.1:1/", batch=0)),
                await failure(J.outbox("x", url="ws://127.0.0.1:1/", headers={"a": 1})),
                await failure(J.outbox("a:b", url="ws://127.0.0.1:1/"))]
        ok = await J.outbox("x", url="ws://127.0.0.1:1/")
        out.append(await failure(ok.add({"n": 1}, id="")))
        out.append(await failure(ok.add({1, 2})))
        out.append(await ok.pending())
        await J.close(timeout=0)
        out
    """)
    assert [e[0] for e in got[:8]] == ["InvalidInputError"] * 5 + [
        "InvalidInputError", "InvalidTypeError", "InvalidInputError"]
    assert "ftp" in got[0][1] and "javascript" in got[1][1]
    assert got[8][0] == "InvalidInputError" and got[9][0] in ("InvalidInputError",
                                                              "InvalidTypeError")
    assert got[10] == 0


SEED = """
J = _engine.Jobs(B.pool, db="t-seed-jobs")
await B.storage.define("todo", 1, {"task": {"indexes": ["priority"]}})
server = await J.outbox("server", url=URL, batch=50)
P = await J.pipeline("changes", [
    Stage("writer", "storage.write_change"),      # persists, publishes the change
    Stage("router", "subscriptions.publish"),     # to every tab's subscribers, then slim
    Stage("transport", "outbox:server"),          # to the server, once per acknowledgement
])
def change(kind, ident, key, **more):
    return {"event": kind, "database": "todo", "version": 1, "key": key,
            "channel": {"app": "todo", "model": "task", "id": ident, "user": "ann"}, **more}
"""


def test_the_writer_router_transport_pipeline(ctx: Any, h: Harness, remote: ServerProcess):
    listener = page(ctx, h.origin)
    listener.py("""
        GOT = {"high": [], "all": []}
        S = B.subscriptions
        await S.subscribe({"app": "todo", "model": "task"}, deliver=GOT["all"].append)
        await S.subscribe({"app": "todo", "model": "task"},
                          filter={"priority": {"$eq": "high"}}, deliver=GOT["high"].append,
                          full=True)
    """)
    got = h.py(SEED.replace("URL", repr(remote.ws_url)) + textwrap.dedent("""
        await P.publish(change("model_created", "t1", "c1",
                               data={"title": "write", "priority": "low", "tags": []}))
        await P.publish(change("model_updated", "t1", "u1", patch=[
            {"op": "replace", "path": "/priority", "value": "high"},
            {"op": "add", "path": "/tags/-", "value": "urgent"}]))
        await P.publish(change("model_updated", "t1", "bad", patch=[
            {"op": "replace", "path": "/missing/deep", "value": 1}]))  # does not apply
        await P.publish(change("model_created", "t2", "c2", data={"title": "gone"}))
        await P.publish(change("model_deleted", "t2", "d2"))
        while True:
            m = await P.metrics()
            if m["transport"]["waiting"] == 0 and m["writer"]["done"] + m["writer"]["failed"] \\
                    == 5 and m["router"]["done"] == 4:
                break
            await asyncio.sleep(0.05)
        await server.flush(20)
        # A re-run of the writer with the same key writes nothing and answers the same.
        again = await B.pool.execute("storage", "write_change", change(
            "model_updated", "t1", "u1", patch=[{"op": "add", "path": "/tags/-",
                                                 "value": "urgent"}]))
        dead = await P.dead_letters()
        out = [await B.storage.get("task", "t1"), await B.storage.get("task", "t2"),
               again, [(d["stage"], d["error"]["type"]) for d in dead], m]
        await J.close(timeout=0)
        out
    """))
    t1, t2, again, dead, metrics = got
    assert t1 == {"id": "t1", "title": "write", "priority": "high", "tags": ["urgent"]}
    assert t2 is None
    assert again["key"] == "u1" and again["record"]["tags"] == ["urgent"]
    assert dead == [["writer", "InvalidInputError"]]
    assert metrics["writer"]["failed"] == 1
    # The subscriber in the other tab heard of each applied change once; the filtered
    # one only of the record while it was high, with the record as asked.
    seen = listener.py("""
        await asyncio.sleep(0.3)
        [[(d["event"], d["id"], d["key"]) for d in GOT["all"]],
         [(d["event"], d["record"]["priority"]) for d in GOT["high"]],
         "record" in GOT["all"][0]]
    """)
    assert seen[0] == [["model_created", "t1", "c1"], ["model_updated", "t1", "u1"],
                       ["model_created", "t2", "c2"], ["model_deleted", "t2", "d2"]]
    assert seen[1] == [["model_updated", "high"]] and seen[2] is False
    # The server got the four changes, slim (no record), once each.
    effects = remote.state()["effects"]
    assert len(effects) == 4 and remote.state()["duplicates"] == 0
    assert {key for _, key in effects} == {"c1", "u1", "c2", "d2"}
    listener.page.close()
