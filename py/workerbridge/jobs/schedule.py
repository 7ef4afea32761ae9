"""Cron and one-time schedules: when a schedule fires, and what to do with runs missed
while no tab of the origin was open (``catch_up``).

Pure logic over an injected clock; cron expressions are read by ``cronsim`` (Debian cron
semantics, daylight-saving aware): on the night the clocks go forward, a run at a time
that does not exist that day fires at the first minute that does; on the night they go
back, a run at a time that happens twice fires once.

A schedule keeps ``next_run``, the first run it has not fired. A tab that finds
``next_run <= now`` takes the fire in one transaction that moves ``next_run`` on, so one
tab fires each run. The runs due then are split in two: the one that is on time (due
within ``grace`` seconds) and those missed while nothing ran. The missed ones follow the
schedule's policy:

- ``"skip"``: drop them; only an on-time run fires;
- ``"once"``: fire one run for all of them (the latest; an on-time run counts as it);
- ``"all"``: fire each of them, the latest ``max_catch_up`` at most, and the on-time one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

from workerbridge.core.errors import InvalidInputError, InvalidTypeError

CatchUp = Literal["skip", "once", "all"]
CATCH_UP = ("skip", "once", "all")
GRACE = 60.0  # seconds late a run may fire and still count as on time


def zone(tz: str) -> tzinfo:
    """A time zone by IANA name; InvalidInputError for an unknown one."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(tz, str):
        raise InvalidTypeError(f"tz must be an IANA time zone name, not {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(f"unknown time zone {tz!r} (an IANA name such as "
                                "'Europe/Paris' or 'UTC')") from None


def check_cron(expr: str) -> str:
    """A cron expression cronsim accepts (5 fields, or 6 with seconds first)."""
    from cronsim import CronSim, CronSimError

    if not isinstance(expr, str):
        raise InvalidTypeError(f"cron must be a string, not {expr!r}")
    try:
        CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise InvalidInputError(f"malformed cron expression {expr!r}: {exc}") from None
    return expr


def check_catch_up(catch_up: str, max_catch_up: int) -> None:
    if catch_up not in CATCH_UP:
        raise InvalidInputError(f"catch_up must be one of {', '.join(CATCH_UP)}, not "
                                f"{catch_up!r}")
    if isinstance(max_catch_up, bool) or not isinstance(max_catch_up, int) or max_catch_up < 1:
        raise InvalidInputError(f"max_catch_up must be an int ≥ 1, not {max_catch_up!r}")


def runs_after(expr: str, tz: str, after: datetime) -> Iterator[datetime]:
    """The cron runs strictly after ``after``, in UTC."""
    from cronsim import CronSim

    for run in CronSim(expr, after.astimezone(zone(tz))):
        yield run.astimezone(UTC)


def first_run(expr: str, tz: str, now: datetime) -> datetime:
    """A new schedule's ``next_run``: the first run after ``now``."""
    return next(runs_after(expr, tz, now))


@dataclass(frozen=True, slots=True)
class Fires:
    """What a tab that took a schedule's fire does: the runs to start now (their
    scheduled times, oldest first), how many missed runs were dropped, and the new
    ``next_run``."""

    runs: tuple[datetime, ...]
    dropped: int
    next_run: datetime


def due(expr: str, tz: str, next_run: datetime, now: datetime, catch_up: CatchUp = "skip",
        max_catch_up: int = 100, grace: float = GRACE) -> Fires:
    """The runs of a cron schedule due at ``now`` (all of ``[next_run, now]``), by the
    catch-up policy, and the next run after ``now``."""
    check_catch_up(catch_up, max_catch_up)
    if now < next_run:
        return Fires((), 0, next_run)
    pending = [next_run]
    total = 1
    for run in runs_after(expr, tz, next_run):
        if run > now:
            upcoming = run
            break
        total += 1
        pending.append(run)
        if len(pending) > max_catch_up + 1:  # keep the latest ones only
            pending.pop(0)
    on_time = [r for r in pending if (now - r).total_seconds() <= grace]
    missed = [r for r in pending if r not in on_time]
    if catch_up == "skip":
        runs = on_time
    elif catch_up == "once":
        runs = on_time[-1:] or missed[-1:]
    else:
        runs = (missed + on_time)[-max_catch_up:]
    return Fires(tuple(runs), total - len(runs), upcoming)


def once_due(at: datetime, now: datetime, catch_up: CatchUp = "once",
             grace: float = GRACE) -> bool:
    """Whether a one-time schedule fires at ``now``: on time, or missed and caught up
    (``"skip"`` drops a run missed by more than ``grace``)."""
    check_catch_up(catch_up, 1)
    if now < at:
        return False
    return catch_up != "skip" or (now - at) <= timedelta(seconds=grace)
