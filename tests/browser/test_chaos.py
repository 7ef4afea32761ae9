"""A small chaos run in the suite (the full one is ``python3 build.py chaos``): calls keep
flowing through a pool of 4 while its workers are terminated, close themselves, die of an
uncaught error or get stuck ignoring the interrupt. Every call settles, typed, with its own
answer; the pool returns to full size."""

from __future__ import annotations

from conftest import CHAOS_SETUP, Harness


def test_chaos_every_call_settles_typed_with_its_own_answer(harness: Harness):
    harness.py(CHAOS_SETUP)
    report = harness.py("""
        r = await CHAOS["run_chaos"](CP, calls=600, concurrency=16, seed=5,
                                     kill_every=(40, 80))
        await CP.pool.terminate()
        r
    """, timeout=300)
    print(report)
    assert report["pending"] == 0, report
    assert report["wrong_results"] == 0, report
    assert report["untyped_errors"] == {}, report
    assert report["results"] + sum(report["errors"].values()) == report["calls"] == 600
    assert report["pool_size_after"] == 4, report
    # Every kind of kill happened, and each cost a worker: the run proved something.
    assert set(report["kills"]) == {"terminate", "close", "uncaught", "stuck"}, report
    assert report["restarts"] >= 4 and report["recoveries"] >= 1, report
