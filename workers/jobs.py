"""The ``jobs`` channel: running a job's handler in a worker.

``run`` calls the job's own registered handler with ``ctx.job`` set (its id, queue and
attempt). A handler's exception comes back as a result that names its type and its
bases, for the recovery table, and not its message, which may quote the payload (a
workerbridge error's own message is kept: it never does). The job store itself is
written by the page.

Its page half: ``workerbridge.jobs.engine``.
"""

from __future__ import annotations

import json
from typing import Any

from workerbridge.core.errors import CancelledError, UnknownOperationError, WorkerBridgeError
from workerbridge.core.platform import IN_PYODIDE
from workerbridge.jobs.policy import type_names
from workerbridge.jobs.subscriptions import CHANNEL, check_change, slim
from workerbridge.runtime.dispatch import Context, JobInfo, handler, lookup


@handler("jobs", "run")
async def run_job(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Run a job's handler; {"ok": result} or {"error": {"types", "message"}}."""
    channel, _, op = str(payload["handler"]).partition(".")
    fn = lookup(channel, op)
    if fn is None:
        raise UnknownOperationError(f"no handler {channel[:40]}.{op[:40]} in this worker")
    job = payload["job"]
    ctx.job = JobInfo(job["id"], job["queue"], int(job["attempt"]), job.get("step"))
    try:
        return {"ok": await fn(ctx, payload.get("payload"))}
    except CancelledError:
        raise
    except WorkerBridgeError as exc:  # our own messages never quote data
        return {"error": {"types": type_names(exc), "message": str(exc)}}
    except Exception as exc:
        return {"error": {"types": type_names(exc),
                          "message": f"the handler raised {type(exc).__name__}"}}


_channel: Any = None


@handler("subscriptions", "publish")
async def publish_change(ctx: Context, change: Any) -> dict[str, Any]:
    """A pipeline's router stage: send a change (a writer stage's result) to every tab's
    subscriptions, and pass it on slim (without its record) to the next stage. Tabs route
    a change's key once, so running this again after a crash reaches nobody twice."""
    global _channel
    checked = check_change(change)
    if IN_PYODIDE:
        import js

        if _channel is None:
            _channel = js.BroadcastChannel.new(CHANNEL)
        _channel.postMessage(json.dumps(checked))
    return slim(checked)
