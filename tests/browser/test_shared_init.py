"""The shared-state constructors take initial values, positional or keyword, on the page
and in a worker, with and without cross-origin isolation; a worker that wraps the page's
buffer sees the page's values (wrapping never resets them)."""

from __future__ import annotations

import pytest

from conftest import Harness

CHECK = """
from workerbridge import WorkerBridge, SharedCounter, SharedFlag, SharedProgress
SB = await WorkerBridge(modules=["./faults.py"]).start()
c, f, p = SharedCounter(3), SharedFlag(initial=True), SharedProgress(total=12)
page = [c.get(), SharedCounter(initial=4).get(), f.is_set(), SharedFlag(True).is_set(),
        p.get().total, SharedProgress(5).get().total, SharedCounter().get()]
payload = {"counter": c.buffer, "flag": f.buffer, "progress": p.buffer} if c.is_shared else {}
worker = await SB.request("faults", "shared_init", payload)
await SB.close()
[c.is_shared, page, worker]
"""


@pytest.mark.parametrize("isolated", [True, False])
def test_shared_state_takes_initial_values_on_both_sides(harness: Harness, plain_harness: Harness,
                                                         isolated: bool):
    h = harness if isolated else plain_harness
    shared, page, worker = h.py(CHECK)
    assert shared is isolated
    assert page == [3, 4, True, True, 12, 5, 0]
    assert worker[0] == [7, -2, True, False, 9, 4]
    assert worker[1] == ([3, True, 12] if isolated else None)
