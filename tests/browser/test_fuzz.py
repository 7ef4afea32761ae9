"""Hostile messages at both ends of the wire, in real Chromium (generator: pages/fuzz.py).

Page to worker: 10,000 malformed messages posted straight to a real worker. Every one
that names a usable id is answered with an ERROR envelope under that id (and no ERROR
names an id that no message named); none crashes or stalls the worker; a valid request
sent after them is answered correctly.

Worker to page: 10,000 malformed messages posted by a real worker to the page. None
raises into the page, none settles a call it does not answer (three calls wait in the
worker meanwhile, and then get their own results), and the worker is not replaced.

Seeded: a failure names its seed, and the same seed posts the same messages.
"""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import Harness

COUNT = 10_000

SETUP = """
import asyncio, json, js
from workerbridge import WorkerBridge

FZ = await WorkerBridge(workers=1, modules=["./fuzz.py"]).start()
FUZZ = {"__name__": "fuzzgen"}
exec(compile(await (await js.fetch("./fuzz.py")).text(), "fuzz.py", "exec"), FUZZ)

# Every message the worker posts, as JSON text, in order (a listener beside the bridge's).
record = js.Function.new("w", '''
    const got = [];
    const text = (v) => JSON.stringify(v, (k, x) => (typeof x === "bigint" ? String(x) : x));
    const listen = (e) => got.push(typeof e.data === "string" ? e.data : text(e.data));
    w.addEventListener("message", listen);
    return { got, stop: () => w.removeEventListener("message", listen) };''')

def errors_named(texts):
    # ids of the ERROR envelopes among the worker's messages (batches opened), None if none
    ids = []
    for text in texts:
        env = json.loads(text)
        for m in env["messages"] if env.get("kind") == "batch" else [env]:
            if m.get("kind") == "error":
                ids.append(m.get("id"))
    return ids

def clean():
    return not FZ.pool.pending_ids() and FZ.pool.pending() == 0
"""


def setup(h: Harness) -> Harness:
    h.py(SETUP)
    return h


@pytest.fixture(scope="module")
def isolated(harness: Harness) -> Harness:
    return setup(harness)


@pytest.fixture(scope="module")
def plain(plain_harness: Harness) -> Harness:
    return setup(plain_harness)


def junk_to_worker(h: Harness, seed: int) -> None:
    expected, refused, named, answer, restarts, clean = h.py(f"""
        recorder = record(FZ.pool._slots[0].transport.worker)
        expected, refused = FUZZ["post_all"](FZ.pool._slots[0].transport.worker,
                                              FUZZ["Junk"]({seed}), {COUNT})
        # The worker answers in order: once this is answered, so is every message before it.
        answer = await FZ.request("system", "echo", {{"after": "junk"}}, timeout=120)
        recorder.stop()
        [expected, refused, errors_named(recorder.got), answer, FZ.stats().restarts, clean()]
    """, timeout=300)
    assert 0 < refused < COUNT // 10, "detached buffers in transfer lists: the browser refuses"
    assert len(expected) > COUNT // 2, f"seed {seed}: too few messages name a usable id"
    with_ids = Counter(i for i in named if i is not None)
    missing = Counter(expected) - with_ids
    extra = with_ids - Counter(expected)
    assert not missing and not extra, (
        f"seed {seed}: {sum(missing.values())} of {len(expected)} unanswered (e.g. "
        f"{list(missing)[:5]}), {sum(extra.values())} answered unasked (e.g. {list(extra)[:5]}); "
        f"{named.count(None)} errors without an id")
    assert answer == {"after": "junk"}
    assert restarts == 0 and clean


def test_junk_posted_to_a_worker_is_answered_and_the_worker_keeps_serving(isolated: Harness):
    junk_to_worker(isolated, seed=1)


def test_junk_posted_to_a_worker_without_isolation(plain: Harness):
    junk_to_worker(plain, seed=2)


def test_junk_posted_to_the_page_is_dropped_and_settles_nothing(isolated: Harness):
    result = isolated.py(f"""
        errors = js.Function.new('''
            const c = {{ n: 0, seen: [] }};
            const note = (what) => {{ c.n++; if (c.seen.length < 5) c.seen.push(String(what)); }};
            addEventListener("error", (e) => note(e.message));
            addEventListener("unhandledrejection", (e) => note(e.reason));
            return c;''')()
        holds = [FZ.pool.submit("fuzz", "hold", {{"tag": i}}) for i in range(3)]
        while FZ.stats().in_flight < 3:
            await asyncio.sleep(0.01)
        avoid = FZ.pool.pending_ids()
        posted, refused = await FZ.request(
            "fuzz", "to_page", {{"seed": 3, "count": {COUNT}, "avoid": avoid}}, timeout=300)
        await asyncio.sleep(0.2)  # any late effect of the junk on the page
        settled = [h.done() for h in holds]
        await FZ.request("fuzz", "release", {{}})
        results = await asyncio.gather(*holds)
        [posted, refused, len(avoid), settled, results, [errors.n, list(errors.seen)],
         FZ.stats().restarts,
         clean(), await FZ.request("system", "echo", 5)]
    """, timeout=300)
    posted, refused, pending, settled, results, errors, restarts, clean, echo = result
    assert posted + refused == COUNT and posted > COUNT * 0.9
    assert pending == 3 and settled == [False, False, False], "junk settled a waiting call"
    assert results == [0, 1, 2]
    assert errors[0] == 0, f"junk raised into the page: {errors[1]}"
    assert restarts == 0 and clean and echo == 5
