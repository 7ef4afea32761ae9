"""The fleet's gateway: a Starlette app under uvicorn between pages and taskiq workers.

    python -m workerbridge.fleet gateway [--host 127.0.0.1] [--port 8765] [--module ...]

``/v1/ws`` speaks the browser transport's envelopes (``wire``: JSON text frames, binary
frames for bytes), validated by the same protocol module. ``/v1/jobs`` is a REST fallback
for durable jobs, ``/v1/health`` reports the broker and the workers seen. Every route wants
the token in ``WORKERBRIDGE_FLEET_TOKEN`` (compared in constant time): as
``Authorization: Bearer``, or from a browser as the WebSocket subprotocol
``bearer.<token>``. A browser's ``Origin`` must be allowed. Frames and bodies have size
limits. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from taskiq.kicker import AsyncKicker
from taskiq.serializers import MSGPackSerializer

from workerbridge.core.envelope import (
    PROTOCOL_VERSION,
    Cancel,
    DecodeError,
    Error,
    Progress,
    Ready,
    Request,
    decode,
    encode,
    response_wire,
    split_batch,
)
from workerbridge.core.errors import (
    InvalidInputError,
    InvalidTypeError,
    UnknownOperationError,
    UnsupportedError,
    WorkerBridgeError,
)
from workerbridge.fleet.broker import (
    CANCELS,
    EVENTS,
    HEALTH_KEY,
    JOB_EVENTS,
    JOBS_KEY,
    TASK,
    broker_url,
    labels_for,
    make_broker,
    new_id,
)
from workerbridge.fleet.table import ENDED, JobTable, TableSource
from workerbridge.fleet.wire import decode_frame, encode_frame
from workerbridge.fleet.worker import BROWSER_ONLY, fleet_ops, load_modules
from workerbridge.jobs.policy import Backoff, Fail, RecoveryKey, Retry, recovery_table

log = logging.getLogger("workerbridge.fleet")

SUBPROTOCOL = "workerbridge.v1"
MAX_FRAME = 16 * 1024 * 1024  # bytes of one WebSocket frame (and of a REST body)
SEEN_FOR = 3.0  # seconds a worker counts as alive after its last heartbeat
CANCEL_GRACE = 1.0  # seconds a started job has to confirm a cancel before the gateway does
DEFAULT_ORIGINS = r"https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?"
_JOB_OPTIONS = {"queue", "handler", "payload", "job_id", "priority", "delay", "attempts",
                "backoff", "timeout", "group", "recovery"}


class Unauthorized(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Gateway:
    """The gateway's state: the broker, the events, the job table, the open sockets."""

    def __init__(self, *, token: str, broker: str | None = None,
                 origins: str = DEFAULT_ORIGINS, max_frame: int = MAX_FRAME,
                 db: str | Path = ":memory:", scheduler: bool = True) -> None:
        if not token:
            raise SystemExit("the gateway needs a token: set WORKERBRIDGE_FLEET_TOKEN")
        self.token = token.encode()
        self.url = broker_url(broker)
        self.origins = re.compile(origins)
        self.max_frame = max_frame
        self.id = f"gateway.{new_id()[:12]}"
        self.broker = make_broker(self.url)
        self.table = JobTable(db)
        self.ops = sorted(set(fleet_ops()))
        self.routes: dict[str, Session] = {}  # task id -> the socket that asked
        self.workers: dict[str, dict[str, Any]] = {}
        self.connection: Any = None
        self._cancels: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._scheduler = scheduler

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.startup()
        self.connection = await aio_pika.connect_robust(self.url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=256)
        events = await channel.declare_exchange(EVENTS, aio_pika.ExchangeType.DIRECT,
                                                durable=True)
        self._cancels = await channel.declare_exchange(CANCELS, aio_pika.ExchangeType.FANOUT)
        mine = await channel.declare_queue(exclusive=True, auto_delete=True)
        await mine.bind(events, self.id)
        await mine.bind(events, HEALTH_KEY)
        jobs = await channel.declare_queue(JOB_EVENTS, durable=True)
        await jobs.bind(events, JOBS_KEY)
        await mine.consume(self._on_event)
        await jobs.consume(self._on_job_event)
        if self._scheduler:
            self._tasks.append(asyncio.ensure_future(self._run_scheduler()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.connection is not None:
            await self.connection.close()
        await self.broker.shutdown()

    async def _run_scheduler(self) -> None:
        from datetime import timedelta

        from taskiq import TaskiqScheduler
        from taskiq.api import run_scheduler_task

        scheduler = TaskiqScheduler(self.broker, [TableSource(self.table)])
        # taskiq's loop rounds its next tick down to a whole second: an interval under 1 s
        # sleeps a negative time and spins until the second ends.
        await run_scheduler_task(scheduler, interval=timedelta(seconds=1),
                                 loop_interval=timedelta(seconds=1))

    # --- events from the workers -----------------------------------------------------------

    async def _on_event(self, message: Any) -> None:
        event = MSGPackSerializer().loadb(message.body)
        await message.ack()
        if event.get("kind") == "alive":
            self.workers[str(event.get("worker"))] = {**event, "seen": time.monotonic()}
            return
        session = self.routes.get(str(event.get("task")))
        if session is not None:
            session.on_event(event)

    async def _on_job_event(self, message: Any) -> None:
        event = MSGPackSerializer().loadb(message.body)
        self.table.apply(event)
        await message.ack()

    def alive(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{k: v for k, v in w.items() if k not in ("seen", "kind")}
                for w in self.workers.values() if now - w["seen"] <= SEEN_FOR]

    def health(self) -> dict[str, Any]:
        broker = self.connection is not None and not self.connection.is_closed
        workers = self.alive()
        return {"ok": broker and bool(workers), "broker": broker, "workers": workers,
                "jobs": self.table.counts(), "protocol": PROTOCOL_VERSION}

    # --- sending work ----------------------------------------------------------------------

    async def kick(self, task_id: str, call: dict[str, Any], labels: dict[str, Any]) -> None:
        kicker: AsyncKicker[Any, Any] = AsyncKicker(TASK, self.broker, labels)
        await kicker.with_task_id(task_id).kiq(call)

    async def cancel_task(self, task_id: str) -> None:
        await self._cancels.publish(aio_pika.Message(task_id.encode()), routing_key="",
                                    mandatory=False)

    def target(self, options: dict[str, Any]) -> tuple[str, str, str, str]:
        """A job's or a schedule's queue and handler, checked: (queue, handler, channel, op)."""
        queue, handler = options.get("queue"), options.get("handler")
        if not isinstance(queue, str) or not queue:
            raise InvalidInputError("a queue name is a non-empty string")
        if not isinstance(handler, str) or "." not in handler:
            raise InvalidInputError("handler is 'channel.op' of a registered handler")
        channel, op = handler.split(".", 1)
        self.check_op(channel, op)
        return queue, handler, channel, op

    def check_op(self, channel: str, op: str) -> None:
        name = f"{channel}.{op}"
        if channel in BROWSER_ONLY:
            raise UnsupportedError(f"{name[:80]} runs only in a browser: {BROWSER_ONLY[channel]}")
        if name not in self.ops:
            raise UnknownOperationError(f"no handler for {name[:80]} in the fleet")

    # --- jobs (the same calls as the browser's queue) --------------------------------------

    async def add_job(self, options: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(options, dict):
            raise InvalidTypeError("a job is a dict of add()'s arguments")
        unknown = set(options) - _JOB_OPTIONS
        if unknown:
            raise InvalidInputError(f"unknown job option {sorted(unknown)[0][:40]!r}")
        queue, handler, channel, op = self.target(options)
        if options.get("priority", 0) not in (0, None):
            raise UnsupportedError("job priorities: the fleet's quorum queue has none")
        if options.get("group") is not None:
            raise UnsupportedError("job groups (per-group concurrency) have no fleet "
                                   "equivalent yet")
        attempts = options.get("attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise InvalidInputError("attempts must be an int ≥ 1")
        delay = _seconds("delay", options.get("delay", 0) or 0)
        timeout = options.get("timeout")
        if timeout is not None:
            timeout = _seconds("timeout", timeout)
        backoff = _backoff(options.get("backoff"))
        recovery = _recovery(options.get("recovery"))
        job_id = options.get("job_id") or new_id()
        if not isinstance(job_id, str) or len(job_id) > 200:
            raise InvalidInputError("job_id is a string of at most 200 characters")
        if not self.table.insert(job_id, queue, handler, options.get("payload"), attempts,
                                 {"delay": delay, "timeout": timeout}):
            return {"id": job_id, "existing": True}
        labels = labels_for(reply=JOBS_KEY, job=job_id, attempts=attempts, backoff=backoff,
                            recovery=recovery, timeout=timeout)
        if delay > 0:
            labels["delay"] = delay
        try:
            await self.kick(job_id, {"channel": channel, "op": op,
                                     "payload": options.get("payload"), "queue": queue},
                            labels)
        except BaseException:
            self.table.delete(job_id)
            raise
        return {"id": job_id, "existing": False}

    async def cancel_job(self, job_id: str) -> bool:
        before = self.table.cancel(str(job_id))
        if before is None or before in ENDED:
            return False
        await self.cancel_task(str(job_id))
        return True

    def put_schedule(self, options: dict[str, Any]) -> dict[str, Any]:
        name = options.get("name")
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidInputError("a schedule name is a non-empty string")
        queue, handler, _, _ = self.target(options)
        if options.get("catch_up", "skip") != "skip":
            raise UnsupportedError("catch_up: taskiq's scheduler does not run missed runs")
        spec = {"handler": handler, "queue": queue, "payload": options.get("payload"),
                "attempts": options.get("attempts", 1), "timeout": options.get("timeout")}
        if "cron" in options:
            cron = options["cron"]
            if not isinstance(cron, str) or len(cron.split()) != 5:
                raise (UnsupportedError("cron with seconds: taskiq's scheduler counts "
                                        "minutes (5 fields)")
                       if isinstance(cron, str) and len(cron.split()) == 6
                       else InvalidInputError("cron must have 5 fields"))
            from workerbridge.jobs.schedule import check_cron, zone

            check_cron(cron)
            tz = options.get("tz", "UTC")
            zone(tz)
            return self.table.put_schedule(name, "cron", spec, cron=cron, tz=tz)
        at = options.get("at")
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise InvalidInputError("at is a time in seconds since the epoch")
        return self.table.put_schedule(name, "once", spec, at=float(at))

    async def fleet_call(self, op: str, payload: Any) -> Any:
        """The gateway's own operations (channel "fleet"): jobs and health."""
        args = payload if isinstance(payload, dict) else {}
        if op == "health":
            return self.health()
        if op == "jobs.add":
            return await self.add_job(args)
        if op == "jobs.get":
            return _public(self.table.get(str(args.get("id")), full=bool(args.get("full"))))
        if op == "jobs.wait":
            timeout = args.get("timeout")
            timeout = None if timeout is None else _seconds("timeout", timeout)
            return _public(await self.table.wait(str(args.get("id")), timeout))
        if op == "jobs.cancel":
            return await self.cancel_job(str(args.get("id")))
        if op == "jobs.list":
            return self.table.listing(args.get("queue"), args.get("state"), args.get("limit"))
        if op == "jobs.schedule":
            return self.put_schedule(args)
        if op == "jobs.unschedule":
            return self.table.drop_schedule(str(args.get("name")))
        if op == "jobs.schedules":
            return self.table.schedules()
        raise UnknownOperationError(f"no fleet operation {op[:60]!r}")

    # --- auth ------------------------------------------------------------------------------

    def authorize(self, headers: Any) -> str | None:
        """Check the origin and the token; the subprotocol to answer with (browsers)."""
        origin = headers.get("origin")
        if origin is not None and not self.origins.fullmatch(origin):
            raise Unauthorized(4403, "this origin may not use the fleet")
        given, chosen = None, None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        for proto in _protocols(headers):
            if proto.startswith("bearer."):
                given = given or proto[7:]
            if proto == SUBPROTOCOL:
                chosen = SUBPROTOCOL
        if given is None or not hmac.compare_digest(given.encode(), self.token):
            raise Unauthorized(4401, "a missing or wrong token")
        return chosen


class Session:
    """One WebSocket: its requests in flight, by the page's ids and by task ids."""

    def __init__(self, gateway: Gateway, ws: WebSocket) -> None:
        self.gateway = gateway
        self.ws = ws
        self.by_rid: dict[int, str] = {}
        self.rid_of: dict[str, int] = {}
        self.started: set[str] = set()
        self.told_starts: set[str] = set()  # tasks whose worker reports their start
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()

    def send(self, message: dict[str, Any]) -> None:
        if not self._closed:
            self._out.put_nowait(message)

    async def writer(self) -> None:
        while True:
            message = await self._out.get()
            frame = encode_frame(message)
            if isinstance(frame, str):
                await self.ws.send_text(frame)
            else:
                await self.ws.send_bytes(frame)

    def settle(self, task_id: str) -> int | None:
        rid = self.rid_of.pop(task_id, None)
        if rid is not None:
            self.by_rid.pop(rid, None)
        self.started.discard(task_id)
        self.told_starts.discard(task_id)
        self.gateway.routes.pop(task_id, None)
        return rid

    def on_event(self, event: dict[str, Any]) -> None:
        task_id = str(event.get("task"))
        rid = self.rid_of.get(task_id)
        if rid is None:
            return
        kind = event.get("kind")
        if kind == "started":
            self.started.add(task_id)
        elif kind == "progress":
            self.send(encode(Progress(rid, int(event.get("done", 0)),
                                      int(event.get("total", 0)))))
        elif kind == "result":
            self.settle(task_id)
            self.send(response_wire(rid, event.get("value")))
        elif kind == "error":
            self.settle(task_id)
            self.send(encode(Error(rid, str(event.get("code", "remote")),
                                   str(event.get("message", "")),
                                   str(event.get("error_type", "")))))

    async def handle(self, frame: str | bytes) -> None:
        try:
            raw = decode_frame(frame)
        except DecodeError as exc:
            self.send(encode(Error(None, exc.code, str(exc), "ProtocolError")))
            return
        for item in split_batch(raw):
            await self._handle_one(item)

    async def _handle_one(self, raw: object) -> None:
        try:
            env = decode(raw)
        except DecodeError as exc:
            self.send(encode(Error(exc.request_id, exc.code, str(exc), "ProtocolError")))
            return
        if isinstance(env, Request):
            await self._request(env)
        elif isinstance(env, Cancel):
            await self._cancel(env.id)
        else:
            self.send(encode(Error(None, "protocol", f"the gateway does not accept "
                                   f"{type(env).__name__.upper()} envelopes", "ProtocolError")))

    async def _request(self, req: Request) -> None:
        if req.id in self.by_rid:
            self.send(encode(Error(req.id, "protocol", f"request id {req.id} is already "
                                   "running", "ProtocolError")))
            return
        try:
            if req.channel == "system" and req.op == "stats":  # the pool's heartbeat
                self.send(response_wire(req.id, {"served": 0, "cancelled": 0,
                                                 "active": len(self.by_rid)}))
                return
            if req.channel == "fleet":
                result = await self.gateway.fleet_call(req.op, req.payload)
                self.send(response_wire(req.id, result))
                return
            self.gateway.check_op(req.channel, req.op)
            task_id = new_id()
            self.by_rid[req.id] = task_id
            self.rid_of[task_id] = req.id
            self.gateway.routes[task_id] = self
            if req.progress is not None:
                self.told_starts.add(task_id)
            labels = labels_for(reply=self.gateway.id, rid=req.id,
                                progress=req.progress is not None, timeout=req.timeout)
            await self.gateway.kick(task_id, {"channel": req.channel, "op": req.op,
                                              "payload": req.payload}, labels)
        except WorkerBridgeError as exc:
            if req.channel != "fleet":
                task = self.by_rid.get(req.id)
                if task is not None:
                    self.settle(task)
            self.send(encode(Error(req.id, exc.code, str(exc), type(exc).__name__)))
        except Exception as exc:
            log.exception("the gateway failed a request")
            task = self.by_rid.get(req.id)
            if task is not None:
                self.settle(task)
            self.send(encode(Error(req.id, "remote", f"the gateway raised {type(exc).__name__}",
                                   type(exc).__name__)))

    async def _cancel(self, rid: int) -> None:
        task_id = self.by_rid.get(rid)
        if task_id is None:
            return
        await self.gateway.cancel_task(task_id)
        if task_id in self.told_starts and task_id not in self.started:
            # Not started: its worker will skip it. (A call without progress reports no
            # start: its worker's answer, or the grace below, settles it.)
            self.settle(task_id)
            self.send(encode(Error(rid, "cancelled", "cancelled by the caller",
                                   "CancelledError")))
            return

        async def confirm() -> None:  # a worker that does not confirm in time
            await asyncio.sleep(CANCEL_GRACE)
            if self.rid_of.get(task_id) == rid:
                self.settle(task_id)
                self.send(encode(Error(rid, "cancelled", "cancelled by the caller",
                                       "CancelledError")))

        waiter = asyncio.ensure_future(confirm())
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    async def close(self) -> None:
        """The socket went away: stop what it started."""
        self._closed = True
        for task_id in list(self.rid_of):
            self.settle(task_id)
            await self.gateway.cancel_task(task_id)


def make_app(gateway: Gateway) -> Starlette:
    async def health(request: HttpRequest) -> Response:
        try:
            gateway.authorize(request.headers)
        except Unauthorized as exc:
            return JSONResponse({"error": exc.reason}, status_code=403 if exc.code == 4403
                                else 401)
        report = gateway.health()
        return JSONResponse(report, status_code=200 if report["ok"] else 503)

    async def ws_endpoint(ws: WebSocket) -> None:
        try:
            subprotocol = gateway.authorize(ws.headers)
        except Unauthorized as exc:
            # Accepted only to say why, then closed: nothing is served.
            await ws.accept(subprotocol=_offered(ws.headers))
            await ws.send_text(json.dumps(encode(Error(None, "unauthorized", exc.reason,
                                                       "AuthError"))))
            await ws.close(exc.code, exc.reason)
            return
        await ws.accept(subprotocol=subprotocol)
        session = Session(gateway, ws)
        session.send(encode(Ready({"ops": gateway.ops, "isolated": False, "remote": True,
                                   "max_frame": gateway.max_frame, "gateway": gateway.id})))
        writer = asyncio.ensure_future(session.writer())
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                frame = message.get("bytes") if message.get("bytes") is not None \
                    else message.get("text")
                if frame is not None:
                    await session.handle(frame)
        except WebSocketDisconnect:
            pass
        finally:
            await session.close()
            writer.cancel()
            if ws.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(RuntimeError):
                    await ws.close()

    async def rest(request: HttpRequest) -> Response:
        try:
            gateway.authorize(request.headers)
        except Unauthorized as exc:
            return JSONResponse({"error": exc.reason},
                                status_code=403 if exc.code == 4403 else 401)
        try:
            return await _rest(gateway, request)
        except WorkerBridgeError as exc:
            return JSONResponse({"error": str(exc), "code": exc.code,
                                 "error_type": type(exc).__name__}, status_code=400)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    return Starlette(routes=[
        Route("/v1/health", health),
        WebSocketRoute("/v1/ws", ws_endpoint),
        Route("/v1/jobs", rest, methods=["POST", "GET"]),
        Route("/v1/jobs/{job_id}", rest, methods=["GET", "DELETE"]),
    ], lifespan=lifespan)


async def _rest(gateway: Gateway, request: HttpRequest) -> Response:
    job_id = request.path_params.get("job_id")
    if request.method == "POST":
        size = int(request.headers.get("content-length") or 0)
        if size > gateway.max_frame:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > gateway.max_frame:
                return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            options = json.loads(body)
        except ValueError:
            raise InvalidInputError("the body is not JSON") from None
        return JSONResponse(await gateway.add_job(options), status_code=201)
    if job_id is None:
        query = request.query_params
        return JSONResponse(gateway.table.listing(query.get("queue"), query.get("state"),
                                                  int(query.get("limit", 100))))
    if request.method == "DELETE":
        return JSONResponse({"cancelled": await gateway.cancel_job(job_id)})
    wait = request.query_params.get("wait")
    record = await gateway.table.wait(job_id, float(wait)) if wait else \
        gateway.table.get(job_id, full=True)
    if record is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return JSONResponse(_jsonable(_public(record)))


def _protocols(headers: Any) -> list[str]:
    """The WebSocket subprotocols a client offered."""
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]


def _offered(headers: Any) -> str | None:
    return SUBPROTOCOL if SUBPROTOCOL in _protocols(headers) else None


def _public(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    out = dict(record)
    for key in ("created", "started", "ended"):
        if out.get(key) is not None:
            out[key] = datetime.fromtimestamp(out[key], UTC).isoformat()
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be seconds ≥ 0")
    return float(value)


def _backoff(raw: Any) -> Backoff | None:
    if raw is None or isinstance(raw, Backoff):
        return raw
    if not isinstance(raw, dict):
        raise InvalidTypeError("backoff is a dict of Backoff's fields")
    try:
        return Backoff(**raw)
    except TypeError:
        raise InvalidInputError("backoff takes base, factor, max and jitter") from None


def _recovery(raw: Any) -> dict[str, Retry | Fail] | None:
    """``{"KeyError": {"attempts": 3, "delay": 0.1}, "ValueError": {"fail": true}}``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidTypeError("recovery is a dict of error type name to a rule")
    rules: dict[RecoveryKey, Retry | Fail] = {}
    for name, rule in raw.items():
        if not isinstance(rule, dict):
            raise InvalidTypeError("a recovery rule is a dict")
        if rule.get("fail"):
            rules[str(name)] = Fail()
        else:
            delay = rule.get("delay")
            rules[str(name)] = Retry(rule.get("attempts", 1),
                                     _backoff(delay) if isinstance(delay, dict) else delay)
    return recovery_table(rules)


def main(argv: list[str]) -> None:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m workerbridge.fleet gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--broker", default=None)
    parser.add_argument("--module", action="append", default=[])
    parser.add_argument("--db", default=os.environ.get("WORKERBRIDGE_FLEET_DB",
                                                       ".workerbridge-fleet/jobs.db"))
    parser.add_argument("--origins", default=os.environ.get("WORKERBRIDGE_FLEET_ORIGINS",
                                                            DEFAULT_ORIGINS),
                        help="a regular expression of the page origins allowed")
    parser.add_argument("--max-frame", type=int, default=MAX_FRAME)
    parser.add_argument("--no-scheduler", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    load_modules(args.module)
    gateway = Gateway(token=os.environ.get("WORKERBRIDGE_FLEET_TOKEN", ""), broker=args.broker,
                      origins=args.origins, max_frame=args.max_frame, db=args.db,
                      scheduler=not args.no_scheduler)
    uvicorn.run(make_app(gateway), host=args.host, port=args.port, ws="websockets-sansio",
                ws_max_size=args.max_frame, log_level="warning", lifespan="on")
