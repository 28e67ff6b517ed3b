"""NCRONTAB expressions, as timer triggers write them: six fields, seconds first.

    {second} {minute} {hour} {day} {month} {day-of-week}
    0 */5 * * * *        every five minutes, on the minute
    0 30 9 * * Mon-Fri   09:30:00 on weekdays

Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (from a to the field's
maximum), or a comma-separated list of those. Months and days of the week may be named (`Jan`,
`Mon`); day of the week is 0-6 from Sunday, and 7 is Sunday too. As in NCrontab (which the
Functions host uses), a time matches when it matches every field: day of month AND day of week.

`parse(text).next_after(moment)` is the first matching second strictly after `moment`, computed on
the moment's own wall clock (the host passes UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

# The longest wait of a valid schedule: Feb 29 on a given day of the week (28-year cycle, longer
# across 2100, which is not a leap year).
_SEARCH_YEARS = 40
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(ValueError):
    """An expression that is not valid NCRONTAB (with seconds)."""


@dataclass(frozen=True)
class _Field:
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day-of-week", 0, 7, DAY_NAMES, 0),
)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def matches(self, moment: datetime) -> bool:
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.day in self.days
            and moment.month in self.months
            and _cron_weekday(moment) in self.weekdays
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first matching whole second strictly after `moment` (same tzinfo)."""
        t = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit_year = moment.year + _SEARCH_YEARS
        while t.year <= limit_year:
            if t.month not in self.months:
                t = _first_of_next_month(t)
            elif t.day not in self.days or _cron_weekday(t) not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                later = [s for s in self.seconds if s > t.second]
                if later:
                    t = t.replace(second=min(later))
                else:
                    t = t.replace(second=0) + timedelta(minutes=1)
            else:
                return t
        raise CronError(f"{self.expression!r} never occurs: no such day in the months it names")

    def occurrences(self, moment: datetime, count: int) -> list[datetime]:
        """The next `count` occurrences after `moment`."""
        out: list[datetime] = []
        for _ in range(count):
            moment = self.next_after(moment)
            out.append(moment)
        return out


def parse(expression: str) -> CronSchedule:
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise CronError(
            f"{expression!r} has {len(parts)} fields; NCRONTAB needs 6: "
            "{second} {minute} {hour} {day} {month} {day-of-week}"
        )
    values = [
        _parse_field(text, spec, expression) for text, spec in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = frozenset(0 if d == 7 else d for d in values[5])
    if min(values[3]) > max(_MONTH_DAYS[m - 1] for m in values[4]):
        raise CronError(f"{expression!r} never occurs: no month it names has day {min(values[3])}")
    return CronSchedule(
        expression=expression,
        seconds=values[0],
        minutes=values[1],
        hours=values[2],
        days=values[3],
        months=values[4],
        weekdays=weekdays,
    )


def _parse_field(text: str, spec: _Field, expression: str) -> frozenset[int]:
    out: set[int] = set()
    for item in text.split(","):
        out.update(_parse_item(item, spec, expression))
    return frozenset(out)


def _parse_item(item: str, spec: _Field, expression: str) -> Iterable[int]:
    def fail(why: str) -> CronError:
        return CronError(f"{expression!r}: {spec.label} field {item!r}: {why}")

    if not item:
        raise fail("empty list item")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise fail("the step after '/' must be a whole number of at least 1")
        step = int(step_text)
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, spec, fail), _value(last, spec, fail)
        if low > high:
            raise fail(f"range {low}-{high} runs backwards")
    else:
        low = _value(base, spec, fail)
        high = spec.high if slash else low
    return range(low, high + 1, step)


def _value(text: str, spec: _Field, fail: Callable[[str], CronError]) -> int:
    upper = text.strip().upper()
    if upper in spec.names:
        return spec.names.index(upper) + spec.names_start
    if not upper.isdigit():
        raise fail(f"{text!r} is not a number" + (" or a name" if spec.names else ""))
    value = int(upper)
    if not spec.low <= value <= spec.high:
        raise fail(f"{value} is outside {spec.low}-{spec.high}")
    return value


def _cron_weekday(moment: datetime) -> int:
    return (moment.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0


def _first_of_next_month(t: datetime) -> datetime:
    if t.month == 12:
        return t.replace(year=t.year + 1, month=1, day=1, hour=0, minute=0, second=0)
    return t.replace(month=t.month + 1, day=1, hour=0, minute=0, second=0)
