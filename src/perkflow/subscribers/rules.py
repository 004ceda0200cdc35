"""Pure rules of the subscriber master: phone format, status transitions."""

from __future__ import annotations

import re
from enum import StrEnum

_PHONE = re.compile(r"^1[3-9]\d{9}$")


class Status(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CHURNED = "churned"


# Churn is final: a returning customer is a new subscriber with a new account.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.ACTIVE: frozenset({Status.SUSPENDED, Status.CHURNED}),
    Status.SUSPENDED: frozenset({Status.ACTIVE, Status.CHURNED}),
    Status.CHURNED: frozenset(),
}


def normalize_phone(raw: str) -> str | None:
    """An 11-digit mainland mobile number without spaces or +86, or None if it is not one."""
    digits = re.sub(r"[\s-]", "", raw)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    return digits if _PHONE.match(digits) else None


def transition_problem(current: Status, target: Status) -> str | None:
    """Why a status change is not allowed, or None."""
    if current == target:
        return f"subscriber is already {current.value}"
    if target not in TRANSITIONS[current]:
        return f"cannot go from {current.value} to {target.value}"
    return None
