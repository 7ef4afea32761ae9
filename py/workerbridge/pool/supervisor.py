"""Keeping a pool's workers alive: boot, READY, loss, restart, heartbeats, fallback.

``Supervisor`` is the half of ``WorkerPool`` that looks after its workers (``_Slot``s);
the pool's other half queues and dispatches calls. The policy: a worker that crashes,
closes itself, stops answering heartbeats while idle, or ignores the interrupt after a
timeout or cancel is terminated and replaced; one that keeps failing to boot is given up
after ``max_boot_failures`` tries, and when none is left the pool either falls back to
the page's thread or fails every caller with ``WorkerCrashedError``. A worker that
refuses to boot for a reason only the page can fix (a package its bundle lacks) fails
the pool at once, with that typed error: no retry, no fallback.

An autoscaled pool also grows and shrinks here: ``_autoscale`` asks the pure policy
(``scaling``) and boots workers, or retires idle ones, as it answers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from workerbridge.core.envelope import PROTOCOL_VERSION
from workerbridge.core.errors import (
    PackageError,
    ShutdownError,
    WorkerBridgeError,
    WorkerCrashedError,
    error_from_code,
)
from workerbridge.pool.connection import Connection
from workerbridge.pool.scaling import PoolLoad, ScaleEvent, ScalePolicy, Scaler

log = logging.getLogger("workerbridge.pool")

SlotState = Literal["booting", "ready", "dead", "failed"]

# Boot errors no retry can cure: every worker of the pool would fail the same way.
REFUSALS = frozenset({PackageError.code, "missing_package", "unauthorized"})


class PoolTransport(Protocol):
    alive: bool

    @property
    def isolated(self) -> bool: ...
    def send(self, message: dict[str, Any], transfer: Sequence[Any],
             prompt: bool = False) -> None: ...
    def interrupt(self, request_id: int) -> None: ...
    def set_control(self, buffer: Any) -> None: ...
    def terminate(self) -> None: ...


# (on_message, on_crash) -> a transport whose worker is booting
TransportFactory = Callable[
    [Callable[[dict[str, Any]], None], Callable[[str], None]], PoolTransport
]


@dataclass(slots=True)
class _Slot:
    index: int
    state: SlotState = "booting"
    transport: PoolTransport | None = None
    connection: Connection | None = None
    ready_info: dict[str, Any] = field(default_factory=dict)
    boot_failures: int = 0
    ping: int | None = None  # id of the heartbeat in flight
    ping_sent: float = 0.0
    assigned: int = 0  # attempts dispatched here and not finished

    @property
    def load(self) -> int:
        """Requests this worker holds: ours in progress, or cancelled and not yet let go."""
        if self.connection is None:
            return self.assigned
        # A heartbeat is not work: it must not steer the strategy.
        return max(self.assigned, self.connection.in_flight - (self.ping is not None))


class Supervisor:
    """Worker lifecycle for ``WorkerPool``; the attributes below are set by the pool."""

    _factory: TransportFactory
    _fallback_factory: TransportFactory | None
    _fallback: bool
    _fallback_where: str  # where the fallback runs handlers, for its warning
    _slots: list[_Slot]
    _held: list[_Slot]  # waiting for the first worker's snapshot before they boot
    _first_ready: asyncio.Future[None] | None
    _closing: bool
    _closed: bool
    _restarts: int
    _tasks: set[asyncio.Future[Any]]
    _clock: Callable[[], float]
    _queue: list[Any]  # calls waiting for a worker
    _scaler: Scaler | None  # None: a fixed size
    _scale_soon: bool  # a look at the policy is scheduled
    _scale_ups: int
    _scale_downs: int
    on_scale: Callable[[ScaleEvent], None] | None
    size: int  # the most workers the pool runs
    boot_timeout: float
    max_boot_failures: int
    heartbeat_interval: float
    heartbeat_timeout: float
    cancel_grace: float

    def _pump(self) -> None:  # the pool's dispatcher: a worker became ready or has room
        raise NotImplementedError

    def _queue_failed(self, error: WorkerBridgeError) -> None:  # no worker will ever run
        raise NotImplementedError

    def _boot(self, slot: _Slot) -> None:
        slot.state = "booting"
        slot.ready_info = {}

        def on_message(raw: dict[str, Any]) -> None:
            # An ERROR with no id is the worker speaking of itself: a failed boot, or
            # (code "crashed") a worker about to close itself.
            if isinstance(raw, dict) and raw.get("kind") == "error" and raw.get("id") is None \
                    and raw.get("v") == PROTOCOL_VERSION \
                    and (slot.state == "booting" or raw.get("code") == "crashed"):
                reason = str(raw.get("message", "the worker failed to boot"))
                if slot.state == "booting" and raw.get("code") in REFUSALS \
                        and slot.transport is transport:
                    self._refused(error_from_code(str(raw["code"]), reason))
                else:
                    on_crash(reason)
            elif slot.connection is not None and slot.transport is transport:
                slot.connection.handle_message(raw)

        def on_crash(reason: str) -> None:
            if slot.transport is transport:
                self._lost(slot, reason)

        def on_ready(info: Any) -> None:
            if slot.transport is not transport or slot.state != "booting":
                return
            slot.ready_info = dict(info) if isinstance(info, dict) else {}
            if slot.ready_info.get("snapshot_reason"):
                log.warning("worker %d: %s", slot.index, slot.ready_info["snapshot_reason"])
            transport.set_control(slot.ready_info.get("control"))
            slot.state = "ready"
            slot.boot_failures = 0
            slot.ping_sent = 0.0
            if self._first_ready is not None and not self._first_ready.done():
                self._first_ready.set_result(None)
            self._release_held()
            self._pump()

        factory = self._factory
        if self._fallback and self._fallback_factory is not None:
            factory = self._fallback_factory
        try:
            transport: PoolTransport = factory(on_message, on_crash)
        except Exception as exc:
            self._boot_failed(slot, f"{type(exc).__name__}: {exc}")
            return
        slot.transport = transport
        slot.connection = Connection(transport, on_ready=on_ready, on_settled=self._pump)
        start = getattr(transport, "start", None)
        if start is not None:
            start()
        booted_at = self._clock()

        async def watchdog() -> None:
            while slot.transport is transport and slot.state == "booting":
                if self._clock() - booted_at > self.boot_timeout:
                    self._lost(slot, f"not ready within {self.boot_timeout:g} s")
                    return
                await asyncio.sleep(0.1)

        self._spawn(watchdog())

    def _lost(self, slot: _Slot, reason: str) -> None:
        """A worker died or was judged dead: settle its calls, then replace it."""
        was_booting = slot.state == "booting"
        log.warning("worker %d lost: %s", slot.index, reason)
        transport, connection = slot.transport, slot.connection
        slot.transport, slot.connection = None, None
        slot.state = "dead"
        slot.assigned = 0
        slot.ping = None
        if transport is not None:
            transport.terminate()
        if connection is not None:
            connection.destroy(WorkerCrashedError(f"the worker crashed: {reason}"))
        if self._closing:
            return
        if was_booting:
            self._boot_failed(slot, reason)
        else:
            self._restarts += 1
            self._boot(slot)

    def _release_held(self) -> None:
        """Boot the workers that waited for the first one (ready, or failed to boot)."""
        held, self._held = self._held, []
        for slot in held:
            if not self._closing:
                self._boot(slot)

    def _boot_failed(self, slot: _Slot, reason: str) -> None:
        self._release_held()
        slot.boot_failures += 1
        slot.state = "dead"
        if slot.boot_failures >= self.max_boot_failures:
            slot.state = "failed"
            log.error("worker %d failed to boot %d times; giving up: %s",
                      slot.index, slot.boot_failures, reason)
            if all(s.state == "failed" for s in self._slots):
                self._all_failed(reason)
            return
        delay = min(5.0, 0.2 * 2 ** (slot.boot_failures - 1))

        async def retry_boot() -> None:
            await asyncio.sleep(delay)
            if not self._closing and slot.state == "dead":
                self._restarts += 1
                self._boot(slot)

        self._spawn(retry_boot())

    def _all_failed(self, reason: str) -> None:
        if self._fallback_factory is not None and not self._fallback:
            warnings.warn(f"no worker could boot ({reason}); running handlers "
                          f"{self._fallback_where} instead", RuntimeWarning, stacklevel=1)
            self._fallback = True
            for slot in self._slots[1:]:
                slot.state = "failed"
            self._slots[0].boot_failures = 0
            self._boot(self._slots[0])
            return
        error = WorkerCrashedError(
            f"no worker could boot after {self.max_boot_failures} tries each: {reason}")
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_exception(error)
            self._first_ready.exception()  # retrieved here; start() re-raises it
        self._queue_failed(error)

    def _refused(self, error: WorkerBridgeError) -> None:
        """A worker refused to boot for a reason every worker shares: fail the pool now."""
        log.error("the pool's workers cannot boot: %s", error)
        self._held = []
        for slot in self._slots:
            transport, connection = slot.transport, slot.connection
            slot.transport, slot.connection, slot.state = None, None, "failed"
            if transport is not None:
                transport.terminate()
            if connection is not None:
                connection.destroy(error)
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_exception(error)
            self._first_ready.exception()  # retrieved here; start() re-raises it
        self._queue_failed(error)

    # --- growing and shrinking (autoscaled pools) -------------------------------------------

    def _grown(self) -> bool:
        """True when an autoscaled pool is as large as it gets: every worker it may run
        is ready (or given up)."""
        return self._fallback or (len(self._slots) >= self.size and not any(
            s.state in ("booting", "dead") for s in self._slots))

    def _autoscale_soon(self) -> None:
        """Ask the policy on the loop's next turn, once: a burst of calls submitted
        together is then judged as one backlog, not one call at a time."""
        if self._scaler is None or self._scale_soon:
            return
        self._scale_soon = True
        asyncio.get_event_loop().call_soon(self._autoscale)

    def _autoscale(self) -> None:
        """Ask the policy, and boot or retire workers as it says (autoscaled pools only,
        once the first worker is ready: the others boot from its snapshot)."""
        self._scale_soon = False
        scaler, first = self._scaler, self._first_ready
        if scaler is None or self._fallback or self._closing or first is None \
                or not first.done() or first.exception() is not None:
            return
        ready = [s for s in self._slots if s.state == "ready"]
        booting = sum(1 for s in self._slots if s.state in ("booting", "dead"))
        busy = sum(1 for s in ready if s.load)
        queued = len(self._queue)
        step = scaler.decide(PoolLoad(len(ready), booting, busy, queued))
        if step == 0:
            return
        before = len(ready) + booting
        changed = self._grow(step) if step > 0 else -self._retire_idle(-step)
        if changed == 0:
            return
        event = ScaleEvent("up" if changed > 0 else "down", before, before + changed,
                           queued, busy, self._clock())
        if changed > 0:
            self._scale_ups += 1
        else:
            self._scale_downs += 1
        log.info("pool %s: %d -> %d workers (%d waiting, %d busy)", event.direction,
                 event.before, event.after, queued, busy)
        if self.on_scale is not None:
            try:
                self.on_scale(event)
            except Exception:  # the page's hook must not stop the pool's dispatch
                log.exception("on_scale raised")

    async def _scale_loop(self, policy: ScalePolicy) -> None:
        """Looks again now and then: a quiet spell ends, a cooldown runs out, while no
        call settles to prompt a look."""
        tick = min(1.0, max(0.05, min(policy.up_cooldown, policy.down_cooldown) / 4))
        while not self._closing:
            await asyncio.sleep(tick)
            self._autoscale()

    def _grow(self, count: int) -> int:
        """Boot up to ``count`` more workers, within the pool's ``size``; how many. They
        take the same boot path as the first (from its snapshot, when there is one)."""
        used = {s.index for s in self._slots}
        free = (i for i in itertools.count() if i not in used)
        added = max(0, min(count, self.size - len(self._slots)))
        for _ in range(added):
            slot = _Slot(next(free))
            self._slots.append(slot)
            self._boot(slot)
        self._slots.sort(key=lambda s: s.index)
        return added

    def _retire_idle(self, count: int) -> int:
        """Terminate up to ``count`` ready workers with nothing in flight (the highest
        numbered first); how many. A worker with a call in flight is never retired."""
        idle = [s for s in self._slots if s.state == "ready" and s.load == 0]
        retired = idle[::-1][:count]
        for slot in retired:
            self._slots.remove(slot)
            transport, connection = slot.transport, slot.connection
            slot.transport, slot.connection, slot.state = None, None, "dead"
            if connection is not None:  # holds at most a heartbeat
                connection.destroy(ShutdownError("the worker was retired"))
            if transport is not None:
                transport.terminate()
        return len(retired)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- health ----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat_interval)
            for slot in self._slots:
                if slot.state == "ready":
                    self._check(slot)

    def _check(self, slot: _Slot) -> None:
        connection = slot.connection
        assert connection is not None
        if connection.overdue_cancels(self.cancel_grace):
            self._lost(slot, "it ignored a cancel (still running after the grace period)")
            return
        if slot.ping is not None:
            if self._clock() - slot.ping_sent > self.heartbeat_timeout:
                self._lost(slot, f"no heartbeat answer within {self.heartbeat_timeout:g} s")
            return
        if connection.in_flight:
            return  # busy with work: judged by task timeouts and cancels instead
        slot.ping_sent = self._clock()

        def answered(result: Any, error: BaseException | None) -> None:
            if slot.connection is connection:
                slot.ping = None

        try:
            slot.ping = connection.start("system", "stats", on_done=answered)
        except Exception:
            slot.ping = None
