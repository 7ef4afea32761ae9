"""Host tests of schedules (workerbridge.jobs.schedule): cron through cronsim, daylight
saving, catch-up of missed runs, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workerbridge import InvalidInputError
from workerbridge.jobs.schedule import check_cron, due, first_run, once_due, zone


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_new_schedule_runs_first_after_now_in_its_zone():
    # 02:00 in Paris is 01:00 UTC in winter.
    assert first_run("0 2 * * *", "Europe/Paris", utc(2026, 1, 10, 12, 0)) == utc(2026, 1, 11, 1)
    assert first_run("0 2 * * *", "UTC", utc(2026, 1, 10, 2, 0)) == utc(2026, 1, 11, 2)


def test_daylight_saving_runs_fire_once_a_day():
    # 2026-03-29: Paris goes from 02:00 to 03:00; 02:30 does not exist that day and fires
    # at 03:00 local (01:00 UTC). 2026-10-25: 02:30 happens twice and fires once.
    now, runs = utc(2026, 3, 27, 12), []
    next_run = first_run("30 2 * * *", "Europe/Paris", now)
    while len(runs) < 4:
        now = next_run + timedelta(seconds=5)
        fired = due("30 2 * * *", "Europe/Paris", next_run, now)
        runs += fired.runs
        next_run = fired.next_run
    assert runs == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30),
                    utc(2026, 3, 31, 0, 30)]
    next_run = first_run("30 2 * * *", "Europe/Paris", utc(2026, 10, 24, 12))
    autumn = []
    for _ in range(3):
        fired = due("30 2 * * *", "Europe/Paris", next_run, next_run + timedelta(seconds=1))
        autumn += fired.runs
        next_run = fired.next_run
    assert autumn == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30),
                      utc(2026, 10, 27, 1, 30)]


def test_nothing_is_due_before_next_run():
    fired = due("*/5 * * * *", "UTC", utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 10, 4, 59))
    assert fired.runs == () and fired.next_run == utc(2026, 1, 1, 10, 5)


# Every 10 minutes; the last fire was taken for 10:00, and no tab was open until 10:51:30.
CRON, NEXT, NOW = "*/10 * * * *", utc(2026, 1, 1, 10, 10), utc(2026, 1, 1, 10, 51, 30)
MISSED = [utc(2026, 1, 1, 10, m) for m in (10, 20, 30, 40, 50)]


@pytest.mark.parametrize(("policy", "runs"), [
    ("skip", [utc(2026, 1, 1, 10, 50)]),  # 90 s late: on time within a grace of 120 s
    ("once", [utc(2026, 1, 1, 10, 50)]),
    ("all", MISSED),
])
def test_catch_up_policies(policy, runs):
    fired = due(CRON, "UTC", NEXT, NOW, catch_up=policy, grace=120)
    assert list(fired.runs) == runs
    assert fired.dropped == len(MISSED) - len(runs)
    assert fired.next_run == utc(2026, 1, 1, 11, 0)
    late = due(CRON, "UTC", NEXT, NOW, catch_up=policy, grace=60)
    assert list(late.runs) == ([] if policy == "skip" else runs)


def test_all_is_capped_at_max_catch_up_latest_first_kept():
    fired = due(CRON, "UTC", NEXT, NOW, catch_up="all", max_catch_up=2)
    assert list(fired.runs) == MISSED[-2:] and fired.dropped == 3


def test_a_long_gap_counts_every_dropped_run():
    fired = due("0 * * * *", "UTC", utc(2026, 1, 1, 1), utc(2026, 1, 3, 0, 0, 10),
                catch_up="once")
    assert list(fired.runs) == [utc(2026, 1, 3, 0)]
    assert fired.dropped == 47 and fired.next_run == utc(2026, 1, 3, 1)


def test_one_time_schedules():
    at = utc(2026, 5, 1, 9)
    assert not once_due(at, at - timedelta(seconds=1))
    assert once_due(at, at + timedelta(seconds=30), "skip")
    assert not once_due(at, at + timedelta(hours=2), "skip")
    assert once_due(at, at + timedelta(hours=2), "once")


@pytest.mark.parametrize("bad", ["", "* * *", "61 * * * *", "* * 31 2 * * *", "every day"])
def test_malformed_cron_is_refused(bad):
    with pytest.raises(InvalidInputError, match="malformed cron"):
        check_cron(bad)


def test_unknown_zones_and_policies_are_refused():
    with pytest.raises(InvalidInputError, match="unknown time zone"):
        zone("Mars/Olympus")
    with pytest.raises(InvalidInputError, match="catch_up"):
        due(CRON, "UTC", NEXT, NOW, catch_up="some")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_catch_up"):
        due(CRON, "UTC", NEXT, NOW, max_catch_up=0)
