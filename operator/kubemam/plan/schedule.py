"""Five-field cron schedules (and the @daily-style macros), evaluated in UTC at minute resolution."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, moment: datetime) -> bool:
        if moment.month not in self.months:
            return False
        by_day = moment.day in self.days
        by_weekday = (moment.weekday() + 1) % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday  # cron's rule: either restricted field may match
        return by_day and by_weekday


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 1
        if step_text and not step_text.isdigit() or step < 1:
            raise ScheduleError(f"{name}: bad step in {part!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            if not (first.isdigit() and last.isdigit()):
                raise ScheduleError(f"{name}: bad range {body!r}")
            start, end = int(first), int(last)
        elif body.isdigit():
            start = int(body)
            end = high if step_text else start
        else:
            raise ScheduleError(f"{name}: {body!r} is not a number, range or *")
        if not (low <= start <= end <= high):
            raise ScheduleError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(expression: str) -> Cron:
    text = MACROS.get(expression.strip(), expression.strip())
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"{expression!r}: a schedule has five fields (minute hour day month weekday) or is "
                            f"one of {', '.join(MACROS)}")
    parsed = [_field(f, name, low, high) for f, (name, low, high) in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in parsed[4])
    return Cron(parsed[0], parsed[1], parsed[2], parsed[3], weekdays,
                days_restricted=fields[2] != "*", weekdays_restricted=fields[4] != "*")


def latest_slot(expression: str, after: datetime, now: datetime) -> datetime | None:
    """The latest scheduled minute in (after, now], or None: whether a run is due, and which one."""
    cron = parse(expression)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    while day + timedelta(days=1) > after:
        if cron.day_matches(day):
            for hour in sorted(cron.hours, reverse=True):
                for minute in sorted(cron.minutes, reverse=True):
                    slot = day.replace(hour=hour, minute=minute)
                    if slot <= after:
                        return None
                    if slot <= now:
                        return slot
        day -= timedelta(days=1)
    return None


def next_slot(expression: str, now: datetime, horizon_days: int = 400) -> datetime | None:
    """The first scheduled minute after now (within the horizon)."""
    cron = parse(expression)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(horizon_days):
        if cron.day_matches(day):
            for hour in sorted(cron.hours):
                for minute in sorted(cron.minutes):
                    slot = day.replace(hour=hour, minute=minute)
                    if slot > now:
                        return slot
        day += timedelta(days=1)
    return None
