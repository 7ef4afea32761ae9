"""What the gateway and the workers share: the broker, the task, the events, the retries.

Every call is one taskiq task, ``workerbridge.run``, on RabbitMQ through taskiq's AMQP
broker: a durable quorum queue, persistent messages, acknowledged only once the outcome is
saved (taskiq's ``WHEN_SAVED``), so the job of a worker that dies mid-run is delivered to
another. Outcomes, progress and starts travel back as *events* on a direct exchange:

    routing key "jobs"        durable jobs -> the gateways' job table (a durable queue)
    routing key <gateway id>  plain requests -> the gateway holding the caller's socket

Cancels go out on a fanout exchange that every worker listens to (taskiq has no cancel of a
running task). Retries are taskiq's own (``SmartRetryMiddleware`` re-sends the message with
its task id, after a delay through the broker's delay queue); which errors retry, and after
how long, is decided by the jobs' own policy (``jobs.policy.decide``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import asdict
from typing import Any

import aio_pika
import msgpack
from pamqp.commands import Basic
from taskiq import AsyncResultBackend, TaskiqResult
from taskiq.depends.progress_tracker import TaskProgress
from taskiq.exceptions import NoResultError
from taskiq.formatters.proxy_formatter import ProxyFormatter
from taskiq.kicker import AsyncKicker
from taskiq.message import BrokerMessage, TaskiqMessage
from taskiq.middlewares import SmartRetryMiddleware
from taskiq.serializers import MSGPackSerializer
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue
from taskiq_aio_pika.queue import QueueType

from workerbridge.core.errors import (
    CancelledError,
    RemoteError,
    WorkerBridgeError,
)
from workerbridge.jobs.policy import Backoff, Fail, Retry, decide, type_names

log = logging.getLogger("workerbridge.fleet")

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
TASK = "workerbridge.run"
EXCHANGE = "workerbridge"
TASK_QUEUE = "workerbridge.tasks"
DELAY_QUEUE = "workerbridge.delay"
DEAD_QUEUE = "workerbridge.dead"
EVENTS = "workerbridge.events"
JOB_EVENTS = "workerbridge.job-events"
JOBS_KEY = "jobs"
CANCELS = "workerbridge.cancel"
HEALTH_KEY = "health"
# A message delivered this many times without an outcome (its worker died each time) goes
# to the dead-letter queue instead of killing worker after worker (a quorum queue's limit).
DELIVERY_LIMIT = 20


def broker_url(url: str | None = None) -> str:
    return url or os.environ.get("WORKERBRIDGE_BROKER", DEFAULT_BROKER)


def make_broker(url: str | None = None, *, worker: bool = False,
                backend: AsyncResultBackend[Any] | None = None,
                prefetch: int = 10) -> AioPikaBroker:
    """The taskiq broker, as a worker (listening, with the retry policy) or a sender."""
    broker = AioPikaBroker(
        broker_url(url), qos=prefetch,
        exchange=Exchange(name=EXCHANGE),
        task_queues=[Queue(name=TASK_QUEUE, type=QueueType.QUORUM,
                           arguments={"x-delivery-limit": DELIVERY_LIMIT})],
        dead_letter_queue=Queue(name=DEAD_QUEUE, type=QueueType.CLASSIC),
        delay_queue=Queue(name=DELAY_QUEUE, type=QueueType.CLASSIC),
    ).with_serializer(MSGPackSerializer())
    broker.formatter = BinaryFormatter(broker)
    if backend is not None:
        broker = broker.with_result_backend(backend)
    if worker:
        broker.is_worker_process = True
        broker = broker.with_middlewares(PolicyRetry())
    return broker


class BinaryFormatter(ProxyFormatter):
    """taskiq's formatter, keeping bytes as bytes (msgpack carries them as they are; the
    default dumps the message in JSON mode first, which turns bytes into text)."""

    def dumps(self, message: TaskiqMessage) -> BrokerMessage:
        return BrokerMessage(task_id=message.task_id, task_name=message.task_name,
                             message=self.broker.serializer.dumpb(message.model_dump()),
                             labels=message.labels)


def labels_for(*, reply: str, rid: int | None = None, job: str | None = None,
               progress: bool = False, attempts: int = 1, backoff: Backoff | None = None,
               recovery: dict[str, Retry | Fail] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """The task labels that say where a call's events go and how it retries."""
    labels: dict[str, Any] = {"reply": reply, "progress": int(progress)}
    if rid is not None:
        labels["rid"] = rid
    if job is not None:
        labels["job"] = job
    if attempts > 1 or recovery:
        labels["retry_on_error"] = True
        labels["max_retries"] = attempts
        labels["policy"] = json.dumps(_policy(attempts, backoff, recovery or {}))
    if timeout is not None:
        labels["timeout"] = timeout
    return labels


def _policy(attempts: int, backoff: Backoff | None, recovery: dict[str, Retry | Fail]
            ) -> dict[str, Any]:
    def rule(r: Retry | Fail) -> dict[str, Any]:
        if isinstance(r, Fail):
            return {"fail": True}
        delay = r.delay
        return {"attempts": r.attempts,
                "delay": delay if not isinstance(delay, Backoff) else asdict(delay)}

    return {"attempts": attempts, "backoff": asdict(backoff or Backoff()),
            "recovery": {name: rule(r) for name, r in recovery.items()}}


def _unpolicy(text: str) -> tuple[int, Backoff, dict[str, Retry | Fail]]:
    raw = json.loads(text)

    def delay(d: Any) -> float | Backoff | None:
        return Backoff(**d) if isinstance(d, dict) else d

    table: dict[str, Retry | Fail] = {
        name: Fail() if r.get("fail") else Retry(r["attempts"], delay(r.get("delay")))
        for name, r in raw["recovery"].items()}
    return int(raw["attempts"]), Backoff(**raw["backoff"]), table


def error_fields(exc: BaseException) -> dict[str, Any]:
    """An exception as an event's code, message and type names. Foreign messages may quote
    payload data: only their type leaves the worker (as in a browser worker)."""
    if isinstance(exc, RemoteError):
        code, message, kind = exc.code, str(exc), exc.remote_type or "RemoteError"
    elif isinstance(exc, WorkerBridgeError):
        code, message, kind = exc.code, str(exc), type(exc).__name__
    elif isinstance(exc, asyncio.CancelledError | TimeoutError) and not isinstance(
            exc, WorkerBridgeError):
        if isinstance(exc, TimeoutError):
            code, message, kind = "timeout", "the job ran past its timeout", "RequestTimeoutError"
        else:
            code, message, kind = CancelledError.code, "cancelled by the caller", \
                "CancelledError"
    else:
        code, kind = "remote", type(exc).__name__
        message = f"the handler raised {kind}"
    return {"code": code, "message": message, "error_type": kind, "types": type_names(exc)}


class PolicyRetry(SmartRetryMiddleware):
    """taskiq's retry, deciding by the job's own policy: which error types retry, how many
    attempts in all, and the delay (``jobs.policy.decide``, as in the browser queue)."""

    def __init__(self) -> None:
        super().__init__(default_retry_count=1, no_result_on_retry=True)

    async def on_error(self, message: TaskiqMessage, result: TaskiqResult[Any],
                       exception: BaseException) -> None:
        text = message.labels.get("policy")
        if not text or isinstance(exception, NoResultError | asyncio.CancelledError):
            return
        retries = int(message.labels.get("_retries", 0))
        attempts, backoff, table = _unpolicy(str(text))
        decision = decide(retries + 1, attempts, type_names(exception), backoff, table)
        if decision.action != "retry":
            return
        again: AsyncKicker[Any, Any] = AsyncKicker(
            task_name=message.task_name, broker=self.broker,
            labels={k: v for k, v in message.labels.items() if k != "delay"},
        ).with_task_id(message.task_id).with_labels(_retries=retries + 1)
        if decision.delay > 0:
            again = again.with_labels(delay=round(decision.delay, 3))
        await again.kiq(*message.args, **message.kwargs)
        result.error = NoResultError()
        backend = self.broker.result_backend
        if isinstance(backend, FleetBackend):
            await backend.event(message.labels, {"kind": "retrying", "task": message.task_id,
                                                 "attempt": retries + 1,
                                                 "delay": decision.delay,
                                                 **error_fields(exception)})


_PERSISTENT = Basic.Properties(delivery_mode=2)
_TRANSIENT = Basic.Properties(delivery_mode=1)


class Events:
    """An AMQP connection that publishes events: outcomes with publisher confirms (the
    task's message is acknowledged only after), starts and progress without."""

    def __init__(self, url: str | None = None) -> None:
        self.url = broker_url(url)
        self.connection: Any = None
        self._confirmed: Any = None
        self._fast: Any = None
        self._exchange: Any = None

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(self.url)
        self._confirmed = await self.connection.channel()
        self._fast = await self.connection.channel(publisher_confirms=False)
        self._exchange = await self._confirmed.declare_exchange(
            EVENTS, aio_pika.ExchangeType.DIRECT, durable=True)
        queue = await self._confirmed.declare_queue(JOB_EVENTS, durable=True)
        await queue.bind(self._exchange, JOBS_KEY)
        await self._confirmed.declare_exchange(CANCELS, aio_pika.ExchangeType.FANOUT)

    async def publish(self, key: str, event: dict[str, Any], *, confirm: bool = True) -> None:
        """One event, published on the AMQP channel beneath aio-pika's: without an
        ``aio_pika.Message`` per event a worker spent about a fifth less CPU per no-op job
        here. An outcome the broker refuses raises, so its job is not acknowledged."""
        body = msgpack.packb(event, use_bin_type=True)
        channel = await (self._confirmed if confirm else self._fast).get_underlay_channel()
        answer = await channel.basic_publish(body, exchange=EVENTS, routing_key=key,
                                             properties=_PERSISTENT if confirm else _TRANSIENT)
        if confirm and not isinstance(answer, Basic.Ack):
            raise ConnectionError(f"the broker did not confirm an event ({answer!r})")

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


class FleetBackend(AsyncResultBackend[Any]):
    """taskiq's result backend, as events: ``set_result`` and ``set_progress`` (taskiq's
    progress API, fed by ``ctx.progress``) publish to where the call's labels say. Results
    are kept by the gateways' job table, not read back through here."""

    def __init__(self, events: Events, worker: str) -> None:
        self.events = events
        self.worker = worker

    async def startup(self) -> None:
        await self.events.start()

    async def shutdown(self) -> None:
        await self.events.close()

    async def event(self, labels: dict[str, Any], event: dict[str, Any],
                    confirm: bool = True) -> None:
        event = {**event, "worker": self.worker, "at": time.time()}
        for key in ("rid", "job"):
            if key in labels:
                event[key] = labels[key]
        reply = str(labels.get("reply", JOBS_KEY))
        await self.events.publish(reply, event, confirm=confirm)

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        labels = result.labels
        if result.is_err and result.error is not None:
            event = {"kind": "error", "task": task_id, **error_fields(result.error)}
        else:
            event = {"kind": "result", "task": task_id, "value": result.return_value}
        await self.event(labels, event)

    async def is_result_ready(self, task_id: str) -> bool:
        return False

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        raise NotImplementedError("results are read from the gateway's job table")

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        meta = progress.meta if isinstance(progress.meta, dict) else {}
        labels = meta.get("labels", {})
        await self.event(labels, {"kind": "progress", "task": task_id,
                                  "done": meta.get("done", 0), "total": meta.get("total", 0),
                                  "state": str(progress.state)}, confirm=False)

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        return None


def new_id() -> str:
    return uuid.uuid4().hex
