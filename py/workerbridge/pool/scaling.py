"""When an autoscaled ``WorkerPool`` grows or shrinks: a pure policy over an injected clock.

``Scaler.decide`` looks at the pool's load (``PoolLoad``) and answers how many workers to
boot (> 0), retire (< 0), or 0. The pool applies the answer (``workerpool``); this module
never touches a worker, so it is tested on the host with a fake clock.

- **Up**: when the requests waiting in the pool's queue reach ``scale_up_at`` per worker
  (ready or booting), the pool boots as many workers as bring that below ``scale_up_at``,
  all at once, up to ``max_size``; at most once per ``up_cooldown`` seconds.
- **Down**: once the queue has been empty and at most ``scale_down_at`` of the ready
  workers busy for ``down_cooldown`` seconds, with none booting, the idle workers beyond
  ``max(min_size, busy)`` are retired, all at once. A busy worker is never retired.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from workerbridge.core.errors import InvalidInputError, InvalidTypeError

__all__ = ["PoolLoad", "ScaleEvent", "ScalePolicy", "Scaler", "check_size"]

Direction = Literal["up", "down"]


def check_size(name: str, value: Any) -> int:
    """``value`` as a worker count (an int ≥ 1), else a typed error naming ``name``."""
    if type(value) is not int:  # bool is an int, and no count of workers
        raise InvalidTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidInputError(f"{name} must be at least 1, not {value}")
    return value


def _number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if type(value) not in (int, float):
        raise InvalidTypeError(f"{name} must be a number, not {type(value).__name__}")
    if not low <= value <= high or math.isnan(value):
        bounds = f"between {low:g} and {high:g}" if high < math.inf else f"at least {low:g}"
        raise InvalidInputError(f"{name} must be {bounds}, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """The bounds and thresholds of an autoscaled pool; checked when made.

    ``scale_up_at``: waiting requests per worker at which the pool grows (> 0);
    ``scale_down_at``: the share of ready workers busy (0 to 1) at or below which it may
    shrink; cooldowns in seconds (≥ 0, finite).
    """

    min_size: int = 1
    max_size: int = 4
    scale_up_at: float = 1.0
    scale_down_at: float = 0.5
    up_cooldown: float = 1.0
    down_cooldown: float = 30.0

    def __post_init__(self) -> None:
        check_size("min_size", self.min_size)
        check_size("max_size", self.max_size)
        if self.max_size < self.min_size:
            raise InvalidInputError(f"max_size ({self.max_size}) must be at least min_size "
                                    f"({self.min_size})")
        if _number("scale_up_at", self.scale_up_at, 0.0) == 0.0:
            raise InvalidInputError("scale_up_at must be above 0")
        _number("scale_down_at", self.scale_down_at, 0.0, 1.0)
        # Finite: an infinite cooldown is "never", which min_size/max_size already say.
        _number("up_cooldown", self.up_cooldown, 0.0, 1e9)
        _number("down_cooldown", self.down_cooldown, 0.0, 1e9)


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """What the pool holds at one moment."""

    ready: int  # workers that answered READY
    booting: int  # workers on their way to READY (or waiting to boot again)
    busy: int  # ready workers with at least one request in flight
    queued: int  # requests waiting in the pool's queue


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """One scaling step, as ``stats()`` counts it and ``on_scale`` hears it."""

    direction: Direction
    before: int  # workers (ready or booting) before the step
    after: int  # and after it
    queued: int  # requests waiting when it was decided
    busy: int  # ready workers busy when it was decided
    at: float  # the pool's clock, seconds


class Scaler:
    """Decides scaling steps for one pool; remembers when it last grew and since when
    the pool has been quiet."""

    def __init__(self, policy: ScalePolicy,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._last_up = -math.inf
        self._quiet_since: float | None = None

    def decide(self, load: PoolLoad) -> int:
        """Workers to boot (> 0) or retire (< 0) now; 0 for neither. A non-zero answer
        is taken as done: the caller applies it before it asks again."""
        p, now = self.policy, self._clock()
        workers = load.ready + load.booting
        if load.queued and load.queued >= p.scale_up_at * workers:
            self._quiet_since = None
            if now - self._last_up < p.up_cooldown or workers >= p.max_size:
                return 0
            wanted = math.floor(load.queued / p.scale_up_at) + 1  # brings it below
            grow = max(1, min(wanted - workers, p.max_size - workers))
            self._last_up = now
            return grow
        if load.queued or load.busy > p.scale_down_at * load.ready or load.booting:
            self._quiet_since = None
            return 0
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < p.down_cooldown:
            return 0
        idle = load.ready - load.busy
        shrink = min(idle, load.ready - max(p.min_size, load.busy))
        if shrink <= 0:
            return 0
        self._quiet_since = now  # the next step needs another quiet cooldown
        return -shrink
