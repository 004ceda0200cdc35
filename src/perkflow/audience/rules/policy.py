"""Contact policy: frequency caps, quiet hours, local zones, why a member is not contacted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from perkflow.audience.rules.tree import InvalidDefinition
from perkflow.audience.rules.vocabulary import ACTIVITY_LEVELS, CHANNELS
from perkflow.errors import Problem


@dataclass(frozen=True)
class Cap:
    """At most `max_contacts` contacts in any `window_days` days."""

    max_contacts: int
    window_days: int


@dataclass(frozen=True)
class QuietHours:
    """No contact from `start` to `end` local time; wraps past midnight when start > end."""

    start: time
    end: time

    def covers(self, at: time) -> bool:
        if self.start <= self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


class Reason(StrEnum):
    """Why a segment member is not contacted; the first that applies, in this order."""

    OPTED_OUT = "opted_out"
    COMPLAINT = "complaint"
    NOT_ACTIVE = "not_active"
    FREQUENCY_CAP = "frequency_cap"
    QUIET_HOURS = "quiet_hours"


class ListCell(StrEnum):
    """The cell a target list puts a candidate in (campaigns.rules.Cell is the evaluation arm)."""

    TARGET = "target"
    CONTROL = "control"
    UNIVERSAL_CONTROL = "universal_control"
    SUPPRESSED = "suppressed"


# From the operator case studies: a responsive subscriber hears from a service line at most once in
# three days, a low-active one once a week, a silent one once or twice a month.
_ACTIVITY_CAPS = {
    "responsive": Cap(1, 3),
    "active": Cap(1, 5),
    "low_active": Cap(1, 7),
    "silent": Cap(2, 30),
}
# In-app banners are seen only by those who open the app: no frequency cap, no quiet hours.
_CAPPED_CHANNELS = ("sms", "email", "push", "outbound_call")
DEFAULT_QUIET_HOURS = {
    "sms": QuietHours(time(21, 0), time(8, 0)),
    "outbound_call": QuietHours(time(20, 0), time(9, 0)),
    "push": QuietHours(time(22, 0), time(8, 0)),
}
# Subscribers' local zones: the operator's zone, except where people keep their own clock.
PROVINCE_ZONES = {"XJ": "Asia/Urumqi"}


@dataclass(frozen=True)
class ContactPolicy:
    """Frequency caps per channel and activity group, and quiet hours per channel."""

    caps: Mapping[str, Mapping[str, Cap]]
    quiet_hours: Mapping[str, QuietHours]


def default_policy() -> ContactPolicy:
    """The case-study defaults."""
    return ContactPolicy(
        caps={ch: dict(_ACTIVITY_CAPS) for ch in _CAPPED_CHANNELS},
        quiet_hours=dict(DEFAULT_QUIET_HOURS),
    )


def policy_to_dict(policy: ContactPolicy) -> dict[str, Any]:
    """The policy as stored and shown."""
    return {
        "caps": {
            ch: {
                a: {"max_contacts": c.max_contacts, "window_days": c.window_days}
                for a, c in by.items()
            }
            for ch, by in policy.caps.items()
        },
        "quiet_hours": {
            ch: {"start": q.start.strftime("%H:%M"), "end": q.end.strftime("%H:%M")}
            for ch, q in policy.quiet_hours.items()
        },
    }


def policy_from_dict(raw: Any) -> ContactPolicy:
    """A validated policy; InvalidDefinition names the path of every bad entry."""
    problems: list[Problem] = []
    caps: dict[str, dict[str, Cap]] = {}
    quiet: dict[str, QuietHours] = {}
    if not isinstance(raw, Mapping):
        raise InvalidDefinition([Problem("", "a policy is an object with caps and quiet_hours")])
    for ch, by in (raw.get("caps") or {}).items():
        if ch not in CHANNELS:
            problems.append(Problem(f"caps.{ch}", f"unknown channel {ch!r}"))
            continue
        if not isinstance(by, Mapping):
            problems.append(Problem(f"caps.{ch}", "caps per activity group are an object"))
            continue
        caps[ch] = {}
        for act, cap in by.items():
            path = f"caps.{ch}.{act}"
            if act not in ACTIVITY_LEVELS:
                problems.append(Problem(path, f"unknown activity group {act!r}"))
                continue
            m = cap.get("max_contacts") if isinstance(cap, Mapping) else None
            w = cap.get("window_days") if isinstance(cap, Mapping) else None
            if not (isinstance(m, int) and isinstance(w, int) and m >= 1 and 1 <= w <= 365):
                problems.append(Problem(path, "needs max_contacts ≥ 1 and window_days 1–365"))
                continue
            caps[ch][act] = Cap(m, w)
    for ch, q in (raw.get("quiet_hours") or {}).items():
        path = f"quiet_hours.{ch}"
        if ch not in CHANNELS:
            problems.append(Problem(path, f"unknown channel {ch!r}"))
            continue
        try:
            start = time.fromisoformat(q["start"])
            end = time.fromisoformat(q["end"])
        except (TypeError, KeyError, ValueError):
            problems.append(Problem(path, "needs start and end as HH:MM"))
            continue
        if start == end:
            problems.append(Problem(path, "start and end are the same time"))
            continue
        quiet[ch] = QuietHours(start, end)
    if problems:
        raise InvalidDefinition(problems)
    return ContactPolicy(caps=caps, quiet_hours=quiet)


def zone_of(province: str, default_zone: str) -> str:
    """The zone a province's subscribers live by."""
    return PROVINCE_ZONES.get(province, default_zone)


def quiet_provinces(
    policy: ContactPolicy,
    *,
    channel: str,
    at: datetime,
    provinces: Iterable[str],
    default_zone: str,
) -> frozenset[str]:
    """Provinces where `at` falls in the channel's quiet hours, by their subscribers' local time."""
    quiet = policy.quiet_hours.get(channel)
    if quiet is None:
        return frozenset()
    return frozenset(
        p
        for p in provinces
        if quiet.covers(at.astimezone(ZoneInfo(zone_of(p, default_zone))).time())
    )
