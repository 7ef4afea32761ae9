"""The gateway's record of durable jobs and schedules, in SQLite.

RabbitMQ holds a job's message until a worker has saved its outcome; this table holds what
a caller asks about afterwards: state, attempt, progress, result or error. Workers' events
reach it through a durable queue, acknowledged only once applied, so an outcome is never
lost between the broker and the table. Schedules live here too, read by taskiq's scheduler
through ``TableSource``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
from taskiq import ScheduledTask, ScheduleSource

from workerbridge.fleet.broker import TASK, labels_for, new_id

ENDED = ("completed", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, queue TEXT NOT NULL, handler TEXT NOT NULL, payload BLOB,
  state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL,
  options TEXT NOT NULL, done INTEGER, total INTEGER, result BLOB, error TEXT,
  worker TEXT, schedule TEXT, created REAL NOT NULL, started REAL, ended REAL);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created);
CREATE TABLE IF NOT EXISTS schedules (
  name TEXT PRIMARY KEY, kind TEXT NOT NULL, cron TEXT, tz TEXT, at REAL,
  spec TEXT NOT NULL, fired INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
"""


def pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def unpack(data: bytes | None) -> Any:
    return None if data is None else msgpack.unpackb(data, raw=False)


class JobTable:
    """Jobs and schedules in one SQLite file; ``wait`` lets a caller await a job's end."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    # --- jobs -------------------------------------------------------------------------------

    def insert(self, job_id: str, queue: str, handler: str, payload: Any, attempts: int,
               options: dict[str, Any], schedule: str | None = None) -> bool:
        """Record a waiting job; False if that id exists already."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO jobs (id, queue, handler, payload, state, attempts, "
            "options, schedule, created) VALUES (?, ?, ?, ?, 'waiting', ?, ?, ?, ?)",
            (job_id, queue, handler, pack(payload), attempts, json.dumps(options), schedule,
             time.time()))
        return cur.rowcount == 1

    def delete(self, job_id: str) -> None:
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def get(self, job_id: str, *, full: bool = False) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return self._record(row, full)

    def _record(self, row: tuple[Any, ...], full: bool) -> dict[str, Any]:
        names = ("id", "queue", "handler", "payload", "state", "attempt", "attempts",
                 "options", "done", "total", "result", "error", "worker", "schedule",
                 "created", "started", "ended")
        record = dict(zip(names, row, strict=True))
        record["options"] = json.loads(record["options"])
        record["error"] = json.loads(record["error"]) if record["error"] else None
        if full:
            record["payload"] = unpack(record["payload"])
            record["result"] = unpack(record["result"])
        else:
            del record["payload"], record["result"]
        return record

    def listing(self, queue: str | None, state: str | None, limit: int | None
                ) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", list[Any]()
        if queue is not None:
            sql, args = sql + " AND queue = ?", [*args, queue]
        if state is not None:
            sql, args = sql + " AND state = ?", [*args, state]
        sql += " ORDER BY created LIMIT ?"
        rows = self.db.execute(sql, (*args, -1 if limit is None else int(limit))).fetchall()
        return [self._record(r, False) for r in rows]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))

    def cancel(self, job_id: str) -> str | None:
        """Mark a job cancelled unless it ended; its state before (None: no such job)."""
        record = self.get(job_id)
        if record is None:
            return None
        if record["state"] not in ENDED:
            self.db.execute("UPDATE jobs SET state = 'cancelled', ended = ?, error = ? "
                            "WHERE id = ?", (time.time(), json.dumps({
                                "code": "cancelled", "message": "cancelled by the caller",
                                "error_type": "CancelledError"}), job_id))
            self._wake(job_id)
        return str(record["state"])

    def apply(self, event: dict[str, Any]) -> None:
        """A worker's event about a job: started, progress, retrying, result, error. A job
        that was cancelled (or ended) keeps its state."""
        job_id = event.get("job")
        kind = event.get("kind")
        if not isinstance(job_id, str):
            return
        live = "state NOT IN ('completed', 'failed', 'cancelled')"
        if kind == "started":
            self.db.execute(f"UPDATE jobs SET state = 'active', attempt = ?, worker = ?, "
                            f"started = ? WHERE id = ? AND {live}",
                            (event.get("attempt", 1), event.get("worker"), event.get("at"),
                             job_id))
        elif kind == "progress":
            self.db.execute(f"UPDATE jobs SET done = ?, total = ? WHERE id = ? AND {live}",
                            (event.get("done"), event.get("total"), job_id))
        elif kind == "retrying":
            self.db.execute(f"UPDATE jobs SET state = 'waiting', error = ? WHERE id = ? "
                            f"AND {live}", (json.dumps(_error(event)), job_id))
        elif kind == "result":
            self.db.execute(f"UPDATE jobs SET state = 'completed', result = ?, ended = ? "
                            f"WHERE id = ? AND {live}",
                            (pack(event.get("value")), event.get("at"), job_id))
            self._wake(job_id)
        elif kind == "error":
            state = "cancelled" if event.get("code") == "cancelled" else "failed"
            self.db.execute(f"UPDATE jobs SET state = ?, error = ?, ended = ? WHERE id = ? "
                            f"AND {live}", (state, json.dumps(_error(event)), event.get("at"),
                                            job_id))
            self._wake(job_id)

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any] | None:
        """The job once it has ended (or as it is when ``timeout`` runs out)."""
        record = self.get(job_id, full=True)
        if record is None or record["state"] in ENDED or timeout == 0:
            return record
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(job_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(job_id, None)
        return self.get(job_id, full=True)

    def _wake(self, job_id: str) -> None:
        for future in self._waiters.pop(job_id, []):
            if not future.done():
                future.set_result(None)

    # --- schedules --------------------------------------------------------------------------

    def put_schedule(self, name: str, kind: str, spec: dict[str, Any], *, cron: str | None = None,
                     tz: str | None = None, at: float | None = None) -> dict[str, Any]:
        self.db.execute("INSERT OR REPLACE INTO schedules (name, kind, cron, tz, at, spec, "
                        "fired, created) VALUES (?, ?, ?, ?, ?, ?, COALESCE((SELECT fired "
                        "FROM schedules WHERE name = ?), 0), ?)",
                        (name, kind, cron, tz, at, json.dumps(spec), name, time.time()))
        found = self.schedule(name)
        assert found is not None
        return found

    def drop_schedule(self, name: str) -> bool:
        return self.db.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 1

    def schedule(self, name: str) -> dict[str, Any] | None:
        rows = [r for r in self.schedules() if r["name"] == name]
        return rows[0] if rows else None

    def schedules(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT name, kind, cron, tz, at, spec, fired, created FROM "
                               "schedules ORDER BY name").fetchall()
        return [{"name": n, "kind": k, "cron": c, "tz": tz, "at": at, "spec": json.loads(s),
                 "fired": f, "created": made} for n, k, c, tz, at, s, f, made in rows]

    def fired(self, name: str) -> None:
        self.db.execute("UPDATE schedules SET fired = fired + 1 WHERE name = ?", (name,))


class TableSource(ScheduleSource):
    """taskiq's scheduler reads the table's schedules through this: a cron schedule as
    taskiq's ``cron`` with its time zone as ``cron_offset``, a one-time run as ``time``.
    Each run becomes a job of its own in the table before it is sent (``pre_send``)."""

    def __init__(self, table: JobTable, on_fire: Callable[[str], None] | None = None) -> None:
        self.table = table
        self.on_fire = on_fire

    async def get_schedules(self) -> list[ScheduledTask]:
        from datetime import UTC, datetime

        out = []
        for row in self.table.schedules():
            common: dict[str, Any] = {
                "task_name": TASK, "labels": {"wb_schedule": row["name"]},
                "args": [], "kwargs": {}, "schedule_id": _schedule_id(row)}
            if row["kind"] == "cron":
                out.append(ScheduledTask(**common, cron=row["cron"], cron_offset=row["tz"]))
            elif row["at"] is not None:
                out.append(ScheduledTask(**common, time=datetime.fromtimestamp(row["at"], UTC)))
        return out

    def _row(self, schedule_id: str) -> dict[str, Any] | None:
        """The schedule a scheduled task came from, if it still stands as it was."""
        row = self.table.schedule(schedule_id.rsplit("#", 1)[0])
        return row if row is not None and _schedule_id(row) == schedule_id else None

    async def pre_send(self, task: ScheduledTask) -> None:
        from taskiq.exceptions import ScheduledTaskCancelledError

        row = self._row(task.schedule_id)
        if row is None:
            raise ScheduledTaskCancelledError()
        spec = row["spec"]
        job_id = new_id()
        self.table.insert(job_id, spec["queue"], spec["handler"], spec.get("payload"),
                          spec.get("attempts", 1), {"timeout": spec.get("timeout")},
                          schedule=row["name"])
        channel, op = spec["handler"].split(".", 1)
        task.task_id = job_id
        task.args = [{"channel": channel, "op": op, "payload": spec.get("payload"),
                      "queue": spec["queue"]}]
        task.labels = labels_for(reply="jobs", job=job_id, attempts=spec.get("attempts", 1),
                                 timeout=spec.get("timeout"))
        self.table.fired(row["name"])
        if self.on_fire is not None:
            self.on_fire(job_id)

    async def post_send(self, task: ScheduledTask) -> None:
        row = self._row(task.schedule_id)
        if row is not None and row["kind"] == "once":
            self.table.drop_schedule(row["name"])


def _schedule_id(row: dict[str, Any]) -> str:
    """A schedule's id for taskiq's scheduler: its name and when it was (re)declared. The
    scheduler remembers which one-time runs it sent by id, so a schedule declared again
    under the same name must get a new one, or it would never fire."""
    return f"{row['name']}#{row['created']!r}"


def _error(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in ("code", "message", "error_type", "types")}
