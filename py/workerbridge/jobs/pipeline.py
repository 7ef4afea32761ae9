"""Pipelines on the page: ``await jobs.pipeline(name, stages=[...], branches={...})``.

Each stage is a durable queue of the jobs engine (``pipeline:NAME:STAGE``) whose jobs run
the stage's handler in the pool's workers. The transaction that ends a stage's job also
adds the jobs of the stages after it, one per event it passes on (``store.complete``): so
an event is never lost between stages, and a stage that runs again after a crash adds
nothing twice (each next job's id is made from the job it came from). A job that fails
for good stays in its stage's queue as a dead letter, to inspect and replay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from workerbridge.core.errors import InvalidInputError, UnknownOperationError
from workerbridge.jobs import store
from workerbridge.jobs.claims import QueueLimits
from workerbridge.jobs.graph import Graph, Stage, build, insert


class Engine(Protocol):
    """What a pipeline uses of the jobs engine (``engine.Jobs``)."""

    pool: Any
    clock: Callable[[], float]
    _queues: dict[str, QueueLimits]
    _pools: dict[str, Any]

    async def _tx(self, program: Any, mode: str = ...) -> Any: ...
    def _known_ops(self) -> set[str] | None: ...
    def _ensure_running(self) -> None: ...
    def _kick(self) -> None: ...
    def _added(self, records: Sequence[dict[str, Any]], now: float) -> None: ...
    def handle(self, job_id: str) -> Any: ...


class Pipeline:
    """A handle on one pipeline; this tab runs its stages."""

    def __init__(self, jobs: Engine, name: str, graph: Graph) -> None:
        self._jobs = jobs
        self.name = name
        self.graph = graph

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, version={self.graph.version})"

    @property
    def version(self) -> int:
        return self.graph.version

    def _queues(self) -> list[str]:
        return [store.stage_queue(self.name, s.name) for s in self.graph.stages]

    async def _store(self, graph: Graph) -> None:
        ops = self._jobs._known_ops()
        for stage in graph.stages:
            if ops is not None and not stage.transport and stage.handler not in ops:
                raise UnknownOperationError(f"stage {stage.name!r}: no handler "
                                            f"{stage.handler[:80]!r} in the workers")
        record = await self._jobs._tx(store.put_pipeline(store.pipeline_record(self.name,
                                                                               graph)))
        self.graph = Graph(graph.stages, graph.edges, record["version"])
        for stage in graph.stages:
            if stage.transport:
                continue
            queue = store.stage_queue(self.name, stage.name)
            per_tab = stage.prefetch
            if stage.workers is not None:
                low, high = stage.workers
                if queue not in self._jobs._pools:
                    pool = self._jobs.pool.sibling(min_size=low, max_size=high,
                                                   **dict(stage.scaling or {}))
                    await pool.start()
                    self._jobs._pools[queue] = pool
                # Enough of its jobs at once for a backlog to show, and so to grow it.
                per_tab = per_tab or 2 * high
            self._jobs._queues[queue] = QueueLimits(stage.concurrency, per_tab=per_tab)
        self._jobs._ensure_running()
        self._jobs._kick()

    async def publish(self, event: Any, *, key: str | None = None) -> Any:
        """Add an event to the first stage; returns once it is durable. ``key`` names the
        event: publishing the same key again returns the first one's job."""
        (job,) = await self.publish_many([event], keys=None if key is None else [key])
        return job

    async def publish_many(self, events: Sequence[Any],
                           keys: Sequence[str] | None = None) -> list[Any]:
        """Many events in one transaction; a ``Job`` handle for each."""
        if keys is not None and len(keys) != len(events):
            raise InvalidInputError("keys, when given, name every event")
        for key in keys or ():
            if not isinstance(key, str) or not key or len(key) > 100:
                raise InvalidInputError("an event key is a non-empty string of at most "
                                        "100 characters")
        now = self._jobs.clock()
        named: list[str | None] = list(keys) if keys is not None else [None] * len(events)
        records = await self._jobs._tx(store.publish(
            self.name, list(zip(events, named, strict=True)), now))
        self._jobs._added(records, now)
        return [self._jobs.handle(r["id"]) for r in records]

    async def insert(self, stage: Stage, *, before: str | None = None,
                     after: str | None = None, beside: str | None = None) -> int:
        """Insert a stage by name (``graph.insert``); returns the new version. Events
        already past that point go on as they were routed."""
        await self._store(insert(self.graph, stage, before=before, after=after,
                                 beside=beside))
        return self.graph.version

    async def metrics(self) -> dict[str, dict[str, Any]]:
        """Per stage: waiting, running, done, failed, and run time p95 (seconds). A
        transport stage's waiting events are those its outbox holds."""
        rows = await self._jobs._tx(store.listing(), "readonly")
        per_queue = store.metrics_of((r for r in rows if r["queue"] in self._queues()),
                                     self._jobs.clock())
        out = {}
        for stage in self.graph.stages:
            if stage.transport:  # its events wait in the outbox, until acknowledged
                waiting = await self._jobs._tx(store.outbox_count(
                    stage.handler.partition(":")[2]), "readonly")
                out[stage.name] = {"waiting": waiting, "running": 0, "done": None,
                                   "failed": 0, "p95": None}
                continue
            q = per_queue.get(store.stage_queue(self.name, stage.name), {})
            out[stage.name] = {"waiting": q.get("waiting", 0) + q.get("delayed", 0),
                               "running": q.get("active", 0), "done": q.get("completed", 0),
                               "failed": q.get("failed", 0), "p95": q.get("run_time_p95")}
            pool = self._jobs._pools.get(store.stage_queue(self.name, stage.name))
            if pool is not None:  # a scaled stage: its workers now
                out[stage.name]["workers"] = pool.stats().size
        return out

    async def dead_letters(self) -> list[dict[str, Any]]:
        """The events that failed for good: stage, job id, event, error."""
        out = []
        for stage in self.graph.stages:
            rows = await self._jobs._tx(store.listing(
                store.stage_queue(self.name, stage.name), "failed"), "readonly")
            out += [{"stage": stage.name, "id": r["id"], "event": r["payload"],
                     "error": r["error"]} for r in rows]
        return out

    async def replay(self, job_id: str) -> bool:
        """Run a dead letter's stage again on its event."""
        done = bool(await self._jobs._tx(store.retry(job_id, self._jobs.clock())))
        self._jobs._kick()
        return done

    async def close(self, timeout: float = 10.0) -> bool:
        """Let the events in flight drain for up to ``timeout`` seconds, then stop running
        the stages in this tab; True if it drained. Nothing is lost: what is left stays
        stored, and runs when a tab runs this pipeline again."""
        deadline = time.monotonic() + timeout
        drained = False
        while True:
            counts = await self.metrics()
            if all(c["waiting"] == 0 and c["running"] == 0 for c in counts.values()):
                drained = True
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for queue in self._queues():
            self._jobs._queues.pop(queue, None)
        if drained:  # a scaled stage's own pool has nothing left to run
            for queue in self._queues():
                pool = self._jobs._pools.pop(queue, None)
                if pool is not None:
                    await pool.terminate()
        return drained


async def define(jobs: Engine, name: str, stages: Sequence[Stage],
                 branches: Mapping[str, Sequence[str]] | None = None) -> Pipeline:
    if not isinstance(name, str) or not name or ":" in name or len(name) > 100:
        raise InvalidInputError("a pipeline name is a non-empty string without ':'")
    pipeline = Pipeline(jobs, name, build(stages, branches))
    await jobs.pool.start()
    await pipeline._store(pipeline.graph)
    return pipeline
