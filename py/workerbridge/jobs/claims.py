"""Which waiting jobs to claim next: order, due times, concurrency, groups, rate limits.

Pure logic: the claim transaction reads the waiting jobs and what runs now, asks
``choose`` which to take, and writes their leases in the same transaction, so two tabs
never take the same job. The rules:

- a job is not taken before it is due (``due_at``: its delay, or its retry's backoff);
- higher priority first, first in first out within a priority (``seq``, the order
  ``add`` committed them in);
- at most ``concurrency`` jobs of a queue run at once, across every tab;
- at most ``group_concurrency`` jobs of one ``group`` key run at once, and groups take
  turns: among jobs of one priority, each group's first job comes before any group's
  second, so one busy key cannot starve the others;
- a queue with a ``rate_limit`` of (n, seconds) starts at most n jobs in any window of
  that many seconds;
- a queue with ``per_tab`` n runs at most n of its jobs in one tab at once (a pipeline
  stage's ``prefetch``), leaving the rest to other tabs.

Leases (``lease_expired``): a claim holds a job until its lease ends; the running tab
renews it, and a job whose lease ended without an answer (its tab closed or crashed) is
waiting again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from workerbridge.core.errors import InvalidInputError, InvalidTypeError


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's limits (``jobs.queue(name, concurrency=..., ...)``)."""

    concurrency: int = 1
    group_concurrency: int = 1
    rate_limit: tuple[int, float] | None = None  # (jobs, per seconds)
    per_tab: int | None = None  # jobs of it one tab holds at once (a stage's prefetch)

    def __post_init__(self) -> None:
        for name in ("concurrency", "group_concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidTypeError(f"{name} must be an int, not {value!r}")
            if value < 1:
                raise InvalidInputError(f"{name} must be at least 1, not {value}")
        if self.per_tab is not None and (isinstance(self.per_tab, bool)
                                         or not isinstance(self.per_tab, int)
                                         or self.per_tab < 1):
            raise InvalidInputError(f"prefetch must be an int ≥ 1, not {self.per_tab!r}")
        if self.rate_limit is not None:
            try:
                count, per = self.rate_limit
            except (TypeError, ValueError):
                raise InvalidTypeError("rate_limit must be (jobs, seconds)") from None
            if isinstance(count, bool) or not isinstance(count, int) or count < 1 \
                    or isinstance(per, bool) or not isinstance(per, int | float) or per <= 0:
                raise InvalidInputError(f"rate_limit must be (jobs ≥ 1, seconds > 0), not "
                                        f"{self.rate_limit!r}")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A waiting job, as the claim sees it."""

    id: str
    queue: str
    priority: int
    seq: int
    due_at: float
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Running:
    """A job that holds a lease now."""

    queue: str
    group: str | None = None


def choose(waiting: Iterable[Candidate], now: float, limits: Mapping[str, QueueLimits],
           running: Iterable[Running] = (), capacity: int | None = None,
           recent_starts: Mapping[str, Sequence[float]] | None = None,
           held: Mapping[str, int] | None = None) -> list[str]:
    """The ids to claim now, in the order to start them; at most ``capacity`` (the
    claiming tab's free worker slots), None for no cap. ``recent_starts``: each queue's
    start times, for its rate limit; ``held``: each queue's jobs the claiming tab runs
    now, for its ``per_tab`` limit."""
    mine: Counter[str] = Counter(held or {})
    per_queue: Counter[str] = Counter()
    per_group: Counter[tuple[str, str]] = Counter()
    for r in running:
        per_queue[r.queue] += 1
        if r.group is not None:
            per_group[(r.queue, r.group)] += 1
    started: dict[str, int] = {}
    for queue, limit in limits.items():
        if limit.rate_limit is not None:
            count, per = limit.rate_limit
            times = (recent_starts or {}).get(queue, ())
            started[queue] = count - sum(1 for t in times if now - per < t <= now)
    due = sorted((c for c in waiting if c.due_at <= now and c.queue in limits),
                 key=lambda c: (-c.priority, c.seq))
    # Each job's turn within its group (0 for a group's first job at a priority): sorting
    # by it interleaves the groups.
    turn: Counter[tuple[str, int, str | None]] = Counter()
    ranked = []
    for c in due:
        key = (c.queue, c.priority, c.group)
        ranked.append((-c.priority, turn[key] if c.group is not None else 0, c.seq, c))
        turn[key] += 1
    ranked.sort(key=lambda r: r[:3])
    chosen: list[str] = []
    for _, _, _, c in ranked:
        if capacity is not None and len(chosen) >= capacity:
            break
        limit = limits[c.queue]
        if per_queue[c.queue] >= limit.concurrency:
            continue
        if c.group is not None and per_group[(c.queue, c.group)] >= limit.group_concurrency:
            continue
        if c.queue in started and started[c.queue] <= 0:
            continue
        if limit.per_tab is not None and mine[c.queue] >= limit.per_tab:
            continue
        chosen.append(c.id)
        mine[c.queue] += 1
        per_queue[c.queue] += 1
        if c.group is not None:
            per_group[(c.queue, c.group)] += 1
        if c.queue in started:
            started[c.queue] -= 1
    return chosen


def lease_expired(lease_until: float | None, now: float) -> bool:
    """Whether a claim's lease has ended (its tab stopped renewing it)."""
    return lease_until is not None and lease_until <= now
