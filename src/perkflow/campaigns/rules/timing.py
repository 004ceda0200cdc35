"""Send timing: the schedule's weekdays, slots and holidays, and quiet hours, in a local zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from perkflow.kit.lazy import lazy_module

from .spec import Schedule

if TYPE_CHECKING:
    import holidays
else:
    holidays = lazy_module("holidays")


@cache
def _china_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("CN", years=year).keys())


def is_holiday(day: date) -> bool:
    """A China public holiday (including the days off moved by the State Council)."""
    return day in _china_holidays(day.year)


def _allowed_local(local: datetime, schedule: Schedule) -> bool:
    if local.isoweekday() not in schedule.weekdays:
        return False
    if schedule.skip_holidays and is_holiday(local.date()):
        return False
    if not schedule.slots:
        return True
    t = local.time()
    return any(a <= t < b for a, b in schedule.slots)


def next_allowed(
    at: datetime,
    schedule: Schedule,
    *,
    zone: str,
    quiet: tuple[time, time] | None = None,
    horizon_days: int = 60,
) -> datetime | None:
    """The first moment ≥ `at` the schedule allows and outside quiet hours (local to `zone`).

    None when the schedule has ended or nothing is allowed within the horizon.
    """
    tz = ZoneInfo(zone)
    at = at.astimezone(UTC)
    if schedule.starts_at and at < schedule.starts_at:
        at = schedule.starts_at
    limit = at + timedelta(days=horizon_days)
    # Minute resolution: candidates are `at` itself, then starts of slots, days and quiet ends.
    current = at
    while current < limit:
        if schedule.ends_at and current >= schedule.ends_at:
            return None
        local = current.astimezone(tz)
        quiet_now = quiet is not None and _quiet_covers(quiet, local.time())
        if _allowed_local(local, schedule) and not quiet_now:
            return current
        current = _next_boundary(local, schedule, quiet).astimezone(UTC)
    return None


def _quiet_covers(quiet: tuple[time, time], t: time) -> bool:
    start, end = quiet
    if start <= end:
        return start <= t < end
    return t >= start or t < end


def _next_boundary(
    local: datetime, schedule: Schedule, quiet: tuple[time, time] | None
) -> datetime:
    """The next local moment where the answer may change: a slot start, a quiet end, a midnight."""
    day = local.date()
    tz = local.tzinfo
    candidates = []
    for d in (day, day + timedelta(days=1)):
        points = [a for a, _ in schedule.slots] or [time(0, 0)]
        if quiet is not None:
            points.append(quiet[1])
        for p in points:
            c = datetime.combine(d, p, tzinfo=tz)
            if c > local:
                candidates.append(c)
    midnight = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=tz)
    candidates.append(midnight)
    return min(candidates)
