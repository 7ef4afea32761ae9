"""Host tests of pipeline stage graphs (workerbridge.jobs.graph)."""

from __future__ import annotations

import pytest

from workerbridge import InvalidInputError, InvalidTypeError
from workerbridge.jobs.graph import Stage, build, insert


def stages(*names: str) -> list[Stage]:
    return [Stage(n, f"p.{n}") for n in names]


def test_stages_run_in_order_unless_a_branch_fans_out():
    g = build(stages("writer", "router", "ws", "audit"), {"router": ["ws", "audit"]})
    assert g.entry == "writer" and g.version == 1
    assert [g.successors(s) for s in ("writer", "router", "ws", "audit")] == [
        ("router",), ("ws", "audit"), ("audit",), ()]
    g = build(stages("writer", "router", "ws", "audit"),
              {"router": ["ws", "audit"], "ws": []})
    assert g.successors("ws") == ()


def test_inserting_by_name_makes_a_new_version():
    g = build(stages("writer", "router", "ws"))
    after = insert(g, Stage("clean", "p.clean"), after="writer")
    assert after.version == 2 and after.successors("writer") == ("clean",)
    assert after.successors("clean") == ("router",)
    before = insert(after, Stage("check", "p.check"), before="writer")
    assert before.entry == "check" and before.successors("check") == ("writer",)
    beside = insert(before, Stage("audit", "p.audit"), beside="router")
    assert beside.successors("clean") == ("router", "audit")
    assert beside.successors("audit") == () and beside.version == 4
    assert [s.name for s in beside.stages] == ["check", "writer", "clean", "router", "audit",
                                               "ws"]


@pytest.mark.parametrize("make", [
    lambda: build(stages("a", "b"), {"b": ["a"]}),             # back to the first: a cycle
    lambda: build(stages("a", "b", "c"), {"c": ["b"]}),        # b -> c -> b
    lambda: build(stages("a", "b"), {"a": ["nope"]}),
    lambda: build(stages("a", "b"), {"nope": ["a"]}),
    lambda: build(stages("a", "a")),
    lambda: build(stages("a", "b"), {"a": ["b", "b"]}),
    lambda: insert(build(stages("a")), Stage("x", "p.x"), after="nope"),
    lambda: insert(build(stages("a")), Stage("a", "p.a"), after="a"),
    lambda: insert(build(stages("a")), Stage("x", "p.x"), beside="a"),
    lambda: insert(build(stages("a")), Stage("x", "p.x")),
    lambda: Stage("has space", "p.x"),
    lambda: Stage("a", "p.a", concurrency=0),
    lambda: Stage("a", "p.a", prefetch=0),
])
def test_bad_graphs_are_refused(make):
    with pytest.raises(InvalidInputError):
        make()


def test_bad_types_are_refused():
    with pytest.raises(InvalidTypeError):
        build([])
    with pytest.raises(InvalidTypeError):
        build(stages("a"), {"a": "b"})


def test_stage_workers_are_checked():
    for bad, error in (((0, 2), InvalidInputError), ((3, 2), InvalidInputError),
                       ((1,), InvalidTypeError), ((1.0, 2), InvalidTypeError),
                       ("1-4", InvalidTypeError)):
        with pytest.raises(error):
            Stage("s", "a.b", workers=bad)
    with pytest.raises(InvalidInputError, match="no workers"):
        Stage("t", "outbox:x", workers=(1, 2))
    with pytest.raises(InvalidInputError, match="scaling"):
        Stage("s", "a.b", scaling={"up_cooldown": 1.0})
    assert Stage("s", "a.b", workers=[1, 4]).workers == (1, 4)
