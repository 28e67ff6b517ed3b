"""NCRONTAB (six fields, seconds first): parsing, and the next occurrence after a moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devhost.host.ncrontab import CronError, parse
from devhost.host.timer_trigger import IntervalSchedule, parse_schedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # every second / every n seconds
        ("* * * * * *", "2025-01-01T00:00:00", "2025-01-01T00:00:01"),
        ("*/1 * * * * *", "2025-01-01T00:00:59.500", "2025-01-01T00:01:00"),
        ("*/15 * * * * *", "2025-01-01T00:00:15", "2025-01-01T00:00:30"),
        ("*/15 * * * * *", "2025-01-01T00:00:46", "2025-01-01T00:01:00"),
        # the documented examples
        ("0 */5 * * * *", "2025-01-01T10:02:03", "2025-01-01T10:05:00"),
        ("0 */5 * * * *", "2025-01-01T10:55:00", "2025-01-01T11:00:00"),
        ("0 0 * * * *", "2025-01-01T10:00:00", "2025-01-01T11:00:00"),
        ("0 0 */2 * * *", "2025-01-01T01:00:00", "2025-01-01T02:00:00"),
        ("0 0 9-17 * * *", "2025-01-01T17:00:00", "2025-01-02T09:00:00"),
        ("0 30 9 * * 1-5", "2025-01-03T09:30:00", "2025-01-06T09:30:00"),  # Fri -> Mon
        ("0 0 0 * * 0", "2025-01-01T00:00:00", "2025-01-05T00:00:00"),  # next Sunday
        ("0 0 0 * * 7", "2025-01-01T00:00:00", "2025-01-05T00:00:00"),  # 7 is Sunday too
        ("0 0 0 1 1 *", "2025-01-01T00:00:00", "2026-01-01T00:00:00"),
        ("0 0 12 * * *", "2025-12-31T12:00:00", "2026-01-01T12:00:00"),
        # lists, ranges with steps, value/step
        ("5,10,20 * * * * *", "2025-01-01T00:00:10", "2025-01-01T00:00:20"),
        ("0 10-30/10 * * * *", "2025-01-01T00:10:00", "2025-01-01T00:20:00"),
        ("0 10-30/10 * * * *", "2025-01-01T00:30:00", "2025-01-01T01:10:00"),
        ("0 45/5 * * * *", "2025-01-01T00:50:00", "2025-01-01T00:55:00"),
        ("0 45/5 * * * *", "2025-01-01T00:55:00", "2025-01-01T01:45:00"),
        ("0,30 0 0 * * *", "2025-01-01T00:00:00", "2025-01-01T00:00:30"),
        # names
        ("0 0 0 1 Jan,Jul *", "2025-02-01T00:00:00", "2025-07-01T00:00:00"),
        ("0 0 8 * * Mon-Fri", "2025-01-04T08:00:00", "2025-01-06T08:00:00"),  # Sat -> Mon
        ("0 0 8 * * sat", "2025-01-01T00:00:00", "2025-01-04T08:00:00"),
        # month lengths and leap years
        ("0 0 0 31 * *", "2025-01-31T00:00:00", "2025-03-31T00:00:00"),
        ("0 0 0 29 2 *", "2025-01-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 0 0 30 * *", "2025-01-30T00:00:00", "2025-03-30T00:00:00"),
        # day of month AND day of week (NCrontab), not OR (Vixie cron): Friday the 13th
        ("0 0 0 13 * 5", "2025-01-01T00:00:00", "2025-06-13T00:00:00"),
    ],
)
def test_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert parse(expression).next_after(at(after)) == at(expected)


def test_next_is_strictly_after_and_drops_fractions() -> None:
    schedule = parse("*/10 * * * * *")
    assert schedule.next_after(at("2025-01-01T00:00:10")) == at("2025-01-01T00:00:20")
    assert schedule.next_after(at("2025-01-01T00:00:09.999")) == at("2025-01-01T00:00:10")


def test_occurrences_follow_one_another_across_midnight_and_year_end() -> None:
    got = parse("0 0 */8 * * *").occurrences(at("2025-12-31T10:00:00"), 4)
    assert got == [
        at("2025-12-31T16:00:00"),
        at("2026-01-01T00:00:00"),
        at("2026-01-01T08:00:00"),
        at("2026-01-01T16:00:00"),
    ]


def test_every_occurrence_matches_and_none_is_skipped() -> None:
    schedule = parse("*/20 */7 1-3 * * *")
    start = at("2025-03-01T00:00:00")
    got = schedule.occurrences(start, 60)
    assert all(schedule.matches(t) for t in got)
    brute: list[datetime] = []
    t = start + timedelta(seconds=1)
    while len(brute) < 60:
        if schedule.matches(t):
            brute.append(t)
        t += timedelta(seconds=1)
    assert got == brute


def test_the_timezone_is_kept() -> None:
    assert parse("0 0 * * * *").next_after(at("2025-01-01T00:30:00")).tzinfo is UTC


def test_fields_are_sets() -> None:
    s = parse("0 0 9-11,14 * Jan-Mar 1-5")
    assert s.hours == {9, 10, 11, 14}
    assert s.months == {1, 2, 3}
    assert s.weekdays == {1, 2, 3, 4, 5}
    assert s.seconds == {0}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * * *", "has 5 fields; NCRONTAB needs 6"),
        ("* * * * * * *", "has 7 fields"),
        ("60 * * * * *", "second field '60': 60 is outside 0-59"),
        ("* 60 * * * *", "minute field"),
        ("* * 24 * * *", "hour field '24'"),
        ("* * * 0 * *", "day field '0': 0 is outside 1-31"),
        ("* * * * 13 *", "month field '13'"),
        ("* * * * * 8", "day-of-week field '8'"),
        ("*/0 * * * * *", "the step after '/' must be a whole number of at least 1"),
        ("*/x * * * * *", "step"),
        ("10-5 * * * * *", "range 10-5 runs backwards"),
        ("a * * * * *", "'a' is not a number"),
        ("* * * * Foo *", "'Foo' is not a number or a name"),
        ("1,,2 * * * * *", "empty list item"),
        ("0 0 0 30 2 *", "never occurs"),
        ("0 0 0 31 4,6 *", "never occurs"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=None) as err:
        parse(expression)
    assert message in str(err.value)


def test_a_timespan_schedule_is_an_interval() -> None:
    schedule = parse_schedule("00:00:30")
    assert schedule == IntervalSchedule(timedelta(seconds=30))
    assert schedule.next_after(at("2025-01-01T00:00:00")) == at("2025-01-01T00:00:30")
    with pytest.raises(CronError):
        parse_schedule("00:00:00")
