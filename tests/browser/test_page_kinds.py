"""The same scenarios from a py page (PyScript's Pyodide runs the bridge on the page) and
from an mpy page (MicroPython; its ``workerbridge`` is the thin layer over the host worker,
``workerbridge.host``): hashing, progress, cancel, typed errors, a custom module, storage
and jobs. Each snippet is the body of ``async def __case()``, in the Python both run."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from conftest import Harness

SETUP = """
import asyncio
import js
import workerbridge
from workerbridge import WorkerBridge
B = WorkerBridge.default()

def now():
    return js.performance.now() / 1000

async def outcome(coro):
    try:
        await coro
    except workerbridge.WorkerBridgeError as exc:
        return [type(exc).__name__, exc.code]
    return None
"""


def run(h: Harness, kind: str, body: str, timeout: float = 120) -> Any:
    code = "async def __case():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return h.py(code + ("\nawait __case()" if kind == "py" else ""), timeout)


@pytest.fixture(scope="module", params=["py", "mpy"])
def page(request: Any) -> tuple[str, Harness]:
    kind = request.param
    h = request.getfixturevalue("harness" if kind == "py" else "mpy_harness")
    run(h, kind, f"exec({SETUP!r}, globals())\nreturn 1")
    return kind, h


def test_hashes_of_bytes_buffers_and_files_match_subtle(page: tuple[str, Harness]):
    kind, h = page
    got = run(h, kind, """
        buf = js.testUtil.randomBuffer(3 * 1024 * 1024 + 7)
        want = await js.testUtil.subtleHex("SHA-256", buf)
        file = js.testUtil.file(buf, "x.bin")
        by_file = await WorkerBridge.crypto.hash_file(file)
        by_buffer = await B.crypto.hash_file(buf, "SHA-256")
        small = await WorkerBridge.crypto.hash_file(b"abc", "SHA-1")
        return [by_file == want, by_buffer == want, buf.byteLength, small]
    """)
    # The buffer was moved to the worker (transferred), from either page.
    assert got == [True, True, 0, "a9993e364706816aba3e25717850c26c9cd0d89d"]


def test_progress_is_monotone_and_ends_at_the_total(page: tuple[str, Harness]):
    kind, h = page
    reports = run(h, kind, """
        seen = []
        buf = js.Uint8Array.new(96 * 1024 * 1024).buffer
        file = js.testUtil.file(buf, "p.bin")
        await B.crypto.hash_file(file, on_progress=lambda p: seen.append([p.done, p.total, p.percent]))
        return seen
    """)
    assert len(reports) >= 2, reports
    dones = [r[0] for r in reports]
    assert dones == sorted(dones)
    assert all(r[1] == 96 * 1024 * 1024 for r in reports)
    assert reports[-1][0] == reports[-1][1] and reports[-1][2] == 100.0


def test_cancelling_the_task_stops_the_work_and_the_worker_serves_on(page: tuple[str, Harness]):
    kind, h = page
    latency, after, cancelled = run(h, kind, """
        before = (await B.request("system", "stats"))["cancelled"]
        buf = js.Uint8Array.new(768 * 1024 * 1024).buffer  # seconds of hashing
        task = asyncio.create_task(B.crypto.hash_file(buf))
        await asyncio.sleep(0.5)
        t0 = now()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        latency = now() - t0
        t1 = now()
        await B.crypto.hash_file(b"next")
        after = now() - t1
        stats = await B.request("system", "stats")
        return [latency, after, stats["cancelled"] - before]
    """)
    assert latency < 0.1
    assert after < 1.0  # the long hash really stopped: the worker answers at once
    assert cancelled == 1


def test_a_cancel_token_raises_workerbridge_cancelled(page: tuple[str, Harness]):
    kind, h = page
    outcome, waited = run(h, kind, """
        token = workerbridge.SharedCancellation()
        buf = js.Uint8Array.new(768 * 1024 * 1024).buffer
        task = asyncio.create_task(B.crypto.hash_file(buf, cancel=token))
        await asyncio.sleep(0.5)
        t0 = now()
        token.cancel()
        try:
            await task
            return ["finished", now() - t0]
        except workerbridge.CancelledError as exc:
            return [type(exc).__name__, now() - t0]
    """)
    assert outcome == "CancelledError" and waited < 0.5


def test_bad_input_raises_typed_errors_and_the_bridge_serves_on(page: tuple[str, Harness]):
    kind, h = page
    got = run(h, kind, """
        out = [await outcome(WorkerBridge.crypto.hash_file(b"x", "MD5")),
               await outcome(B.request("nope", "op")),
               await outcome(WorkerBridge.crypto.hash_file(12345)),
               await outcome(WorkerBridge.crypto.encrypt_file(b"x", b"short key"))]
        try:
            await WorkerBridge.crypto.hash_file(b"x", "MD5")
        except workerbridge.InvalidInputError:
            out.append("caught as InvalidInputError")
        out.append(await WorkerBridge.crypto.hash_file(b""))
        return out
    """)
    assert got == [["InvalidInputError", "invalid_input"],
                   ["UnknownOperationError", "unknown_op"],
                   ["InvalidTypeError", "invalid_type"],
                   ["InvalidInputError", "invalid_input"],
                   "caught as InvalidInputError",
                   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]


def test_a_custom_module_runs_with_progress_and_its_errors_are_typed(page: tuple[str, Harness]):
    kind, h = page
    got = run(h, kind, """
        W = WorkerBridge(modules=["./wordcount.py"])
        seen = []
        n = await W.request("text", "word_count", {"text": "a b\\nc d e\\nf"},
                            on_progress=lambda p: seen.append(p.done))
        failed = None
        try:
            await W.request("text", "word_count", {"text": None})
        except workerbridge.RemoteError as exc:
            failed = [type(exc).__name__, exc.remote_type, "None" in str(exc)]
        await W.close()
        return [n, seen[-1], failed]
    """)
    # A foreign exception crosses as RemoteError naming its type, never its message.
    assert got == [6, 3, ["RemoteError", "AttributeError", False]]


def test_storage_round_trips_records(page: tuple[str, Harness]):
    kind, h = page
    got = run(h, kind, f"""
        S = WorkerBridge.storage
        name = "kinds-{kind}-" + str(int(now() * 1000))
        await S.define(name, 1, {{"notes": {{}}}})
        a = await S.create("notes", {{"id": "n1", "text": "hé", "n": [1, 2.5, None]}})
        got = await S.get("notes", "n1")
        missing = await S.get("notes", "nope")
        count = await S.count("notes")
        bad = await outcome(S.get("nowhere", "x"))
        return [a == got, got, missing, count, bad]
    """)
    assert got == [True, {"id": "n1", "text": "hé", "n": [1, 2.5, None]}, None, 1,
                   ["UnknownCollectionError", "unknown_collection"]]


def test_a_job_runs_and_its_result_is_stored(page: tuple[str, Harness]):
    kind, h = page
    got = run(h, kind, f"""
        J = B.jobs
        await J.queue("kinds-{kind}", concurrency=2)
        job = await J.add("kinds-{kind}", "system.echo", {{"x": 1}})
        result = await job.result(timeout=30)
        status = await job.status()
        async def bad_backoff():
            # Backoff checks itself where it is built: on the page, or in the host
            return await J.add("kinds-{kind}", "system.echo", {{}}, attempts=3,
                               backoff=workerbridge.Backoff(factor=0.5))
        slow = await J.add("kinds-{kind}", "system.echo", {{"y": 2}}, attempts=3,
                           backoff=workerbridge.Backoff(base=0.5, jitter=False))
        retry = [await outcome(bad_backoff()), await slow.result(timeout=30)]
        await J.close(timeout=0)
        return [len(job.id) > 0, result, status["state"], status["attempt"], retry]
    """)
    assert got == [True, {"x": 1}, "completed", 1,
                   [["InvalidInputError", "invalid_input"], {"y": 2}]]


def test_shared_state_crosses_to_a_worker_and_back(page: tuple[str, Harness]):
    kind, h = page
    got = run(h, kind, """
        counter = workerbridge.SharedCounter(5)
        W = WorkerBridge(modules=["./wordcount.py"])
        total = await W.request("text", "count_into", {"text": "a b c", "counter": counter.buffer})
        await W.close()
        flag = workerbridge.SharedFlag()
        flag.set()
        toggled = flag.toggle()
        progress = workerbridge.SharedProgress(100)
        progress.set(40)
        seen = []
        stop = progress.subscribe(lambda info: seen.append(info.done))
        await asyncio.sleep(0.1)  # the subscription looks at the buffer from here on
        progress.increment(10)
        await asyncio.sleep(0.2)
        stop()
        token = workerbridge.SharedCancellation()
        token.cancel()
        big = workerbridge.SharedProgress(6 * 2 ** 30)  # byte counts past 32 bits
        big.set(3 * 2 ** 30)
        after = big.increment(2 ** 31)
        return [total, counter.get(), counter.is_shared, flag.is_set(), toggled,
                progress.get().percent, seen[-1], token.is_cancelled(),
                [big.get().done, big.get().total, after, big.percent()]]
    """)
    # The worker added 3 words to the page's counter, through shared memory.
    assert got == [8, 8, True, False, False, 50.0, 50, True,
                   [5 * 2 ** 30, 6 * 2 ** 30, 5 * 2 ** 30, 500 / 6]]
