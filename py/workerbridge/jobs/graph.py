"""A pipeline's stages and how events flow between them (pure).

Stages run in order: each stage's result goes to the next one, unless ``branches`` names
the stages a stage publishes to instead (fan-out: every one of them gets the event). The
first stage takes what ``pipeline.publish`` is given; a stage with no successor ends the
event's way. Stages can be inserted by name, before, after or beside another stage, and
each change makes a new version of the definition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.jobs.policy import Backoff, Retry

NAME = re.compile(r"[A-Za-z_][\w-]{0,99}")
TRANSPORT = "outbox:"  # the handler of a stage that sends its events to an outbox


def _bounds(workers: Any) -> tuple[int, int]:
    if not isinstance(workers, tuple | list) or len(workers) != 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in workers):
        raise InvalidTypeError("a stage's workers is (min, max), two ints")
    low, high = workers
    if not 1 <= low <= high:
        raise InvalidInputError(f"a stage's workers (min, max) need 1 ≤ min ≤ max, not "
                                f"{tuple(workers)!r}")
    return low, high


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: ``handler`` ("channel.op") gets an event and returns the event to pass
    on, or None to drop it (a filter); with ``split``, a list of events, each passed on.
    ``concurrency``: its jobs running at once across tabs; ``prefetch``: at most that
    many of them in one tab (None: as many as the tab's capacity allows); ``retry``: its
    retry policy (a job that fails for good is a dead letter).

    ``workers=(min, max)``: the stage runs in a pool of its own, made like the engine's,
    that grows from ``min`` to ``max`` workers under the stage's backlog and shrinks when
    it is idle (``scaling``: that pool's ``scale_up_at``, ``scale_down_at``,
    ``up_cooldown``, ``down_cooldown``). This tab's own choice: it is not part of the
    stored definition.

    A transport stage's handler is ``"outbox:NAME"``: it runs nothing, and the events
    it gets are appended to that outbox (``jobs.outbox``) by the transaction that ends
    the stage before it. It ends its way."""

    name: str
    handler: str
    concurrency: int = 1
    prefetch: int | None = None
    split: bool = False
    retry: Retry | None = None
    timeout: float | None = None
    workers: tuple[int, int] | None = None
    scaling: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise InvalidInputError(f"a stage name is an identifier (dashes allowed), not "
                                    f"{self.name!r}")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) \
                or self.concurrency < 1:
            raise InvalidInputError("a stage's concurrency is an int ≥ 1")
        if self.prefetch is not None and (isinstance(self.prefetch, bool)
                                          or not isinstance(self.prefetch, int)
                                          or self.prefetch < 1):
            raise InvalidInputError("a stage's prefetch is an int ≥ 1 or None")
        if not isinstance(self.handler, str) or not self.handler:
            raise InvalidTypeError("a stage's handler is 'channel.op' or 'outbox:NAME'")
        if self.transport and not NAME.fullmatch(self.handler[len(TRANSPORT):]):
            raise InvalidInputError("a transport stage's handler is 'outbox:NAME', NAME an "
                                    "identifier")
        if self.workers is not None:
            low, high = _bounds(self.workers)
            if self.transport:
                raise InvalidInputError("a transport stage runs no handler: it has no workers")
            object.__setattr__(self, "workers", (low, high))
        if self.scaling is not None and (self.workers is None
                                         or not isinstance(self.scaling, Mapping)):
            raise InvalidInputError("scaling is a dict of a scaled stage's thresholds and "
                                    "cooldowns (give workers=(min, max) too)")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise InvalidTypeError("a stage's retry is a Retry(...)")

    @property
    def transport(self) -> bool:
        return self.handler.startswith(TRANSPORT)

    def attempts_backoff(self) -> tuple[int, Backoff]:
        from workerbridge.jobs.flow import retry_fields

        return retry_fields(self.retry)


@dataclass(frozen=True, slots=True)
class Graph:
    """A checked pipeline definition: its stages in order, each one's successors, and
    its version (1, then one more for each change)."""

    stages: tuple[Stage, ...]
    edges: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = 1

    @property
    def entry(self) -> str:
        return self.stages[0].name

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise InvalidInputError(f"no stage {name[:60]!r} in this pipeline")

    def successors(self, name: str) -> tuple[str, ...]:
        self.stage(name)
        return self.edges.get(name, ())

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "entry": self.entry,
                "stages": [s.name for s in self.stages],
                "edges": {k: list(v) for k, v in self.edges.items()}}


def build(stages: Sequence[Stage], branches: Mapping[str, Sequence[str]] | None = None,
          version: int = 1) -> Graph:
    """Stages in order, with ``branches`` overriding where a stage publishes."""
    if not isinstance(stages, Sequence) or not stages or \
            not all(isinstance(s, Stage) for s in stages):
        raise InvalidTypeError("stages must be a non-empty list of Stage(...)")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise InvalidInputError("the stages of a pipeline need distinct names")
    branches = branches or {}
    if not isinstance(branches, Mapping):
        raise InvalidTypeError("branches is a dict: stage -> [stages it publishes to]")
    edges: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        if name in branches:
            targets = branches[name]
            if isinstance(targets, str) or not isinstance(targets, Sequence):
                raise InvalidTypeError(f"branches[{name!r}] is a list of stage names")
            edges[name] = tuple(targets)
        elif i + 1 < len(names):
            edges[name] = (names[i + 1],)
    for name in branches:
        if name not in names:
            raise InvalidInputError(f"branches names an unknown stage {str(name)[:60]!r}")
    return _checked(Graph(tuple(stages), edges, version))


def _checked(graph: Graph) -> Graph:
    names = {s.name for s in graph.stages}
    if graph.stages[0].transport:
        raise InvalidInputError("a transport stage (outbox:...) cannot be the first: "
                                "publish to the outbox itself")
    for stage in graph.stages:
        if stage.transport and graph.edges.get(stage.name):
            raise InvalidInputError(f"the transport stage {stage.name!r} ends its way: "
                                    "put it last, or give it branches=[]")
    for source, targets in graph.edges.items():
        for target in targets:
            if target not in names:
                raise InvalidInputError(f"stage {source!r} publishes to an unknown stage "
                                        f"{str(target)[:60]!r}")
            if target == graph.entry:
                raise InvalidInputError(f"stage {source!r} publishes back to the first "
                                        f"stage {target!r}: a cycle")
        if len(set(targets)) != len(targets):
            raise InvalidInputError(f"stage {source!r} names a branch twice")
    # A cycle anywhere: depth-first, with the stages on the current path.
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in graph.edges.get(name, ()):
            if state.get(nxt) == 1:
                cycle = " -> ".join([*path[path.index(nxt):], nxt])
                raise InvalidInputError(f"the stages form a cycle: {cycle}")
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[name] = 2

    for stage in graph.stages:
        if stage.name not in state:
            visit(stage.name, [stage.name])
    return graph


def insert(graph: Graph, stage: Stage, *, before: str | None = None,
           after: str | None = None, beside: str | None = None) -> Graph:
    """A new version with ``stage`` inserted: ``after`` X (it takes X's results and
    passes its own to where X's went), ``before`` X (it takes what X took and passes its
    results to X), or ``beside`` X (it takes what X takes too, and passes its results
    nowhere: post-processing, auditing)."""
    if not isinstance(stage, Stage):
        raise InvalidTypeError("insert takes a Stage(...)")
    if sum(x is not None for x in (before, after, beside)) != 1:
        raise InvalidInputError("insert takes one of before=, after=, beside=")
    if any(s.name == stage.name for s in graph.stages):
        raise InvalidInputError(f"the pipeline has a stage {stage.name!r} already")
    edges = dict(graph.edges)
    stages = list(graph.stages)
    if after is not None:
        graph.stage(after)
        edges[stage.name] = edges.get(after, ())
        edges[after] = (stage.name,)
        stages.insert([s.name for s in stages].index(after) + 1, stage)
    else:
        target = before if before is not None else beside
        assert target is not None
        graph.stage(target)
        for source, targets in list(edges.items()):
            if target in targets:
                edges[source] = (*targets, stage.name) if beside is not None else \
                    tuple(stage.name if t == target else t for t in targets)
        if before is not None:
            edges[stage.name] = (target,)
        index = [s.name for s in stages].index(target)
        if beside is not None and index == 0:
            raise InvalidInputError("nothing publishes to the first stage: insert beside "
                                    "it has no input (insert before it)")
        stages.insert(index if before is not None else index + 1, stage)
    edges = {k: v for k, v in edges.items() if v}
    return _checked(replace(graph, stages=tuple(stages), edges=edges,
                            version=graph.version + 1))
