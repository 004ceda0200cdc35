"""Control groups: hash shares, per-province quotas, the universal control group."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, timedelta

# A campaign salt or a universal-control salt goes into hashed text: keep it short and plain.
SALT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

HASH_PREFIX_HEX = 8  # 32 bits of SHA-256: a share resolves to 1 in 4 billion
BASIS_POINTS = 10_000
MAX_CONTROL_BP = 5_000


def share_problem(share_bp: int, *, what: str = "control share") -> str | None:
    """Why a share in basis points is out of range, or None."""
    if not 0 <= share_bp <= MAX_CONTROL_BP:
        return f"{what} must be between 0 and {MAX_CONTROL_BP / 100:g} %"
    return None


# Randomized rounding of a province's control quota: a draw of 6 hex digits of a keyed hash.
QUOTA_DRAW_HEX = 6
QUOTA_DRAW_SPAN = 16**QUOTA_DRAW_HEX


def quota_draw_text(control_prefix: str, province: str | None) -> str:
    """The hashed text of a province's quota draw: the list's `key:salt:`, then the province."""
    return f"{control_prefix}quota:{province or ''}"


def quota_draw(control_prefix: str, province: str | None) -> int:
    """A province's draw in [0, QUOTA_DRAW_SPAN): uniform, fixed by the list's key and salt."""
    digest = hashlib.sha256(quota_draw_text(control_prefix, province).encode()).hexdigest()
    return int(digest[:QUOTA_DRAW_HEX], 16)


def control_quota(n: int, share_bp: int, draw: int) -> int:
    """How many of `n` eligible subscribers of one province go to control.

    The whole part of ``n × share``, plus one with a probability equal to the fraction left
    (randomized rounding by the province's draw): the expected share is the plan's in every
    province however small, where rounding half up gave a 10 % plan 0 % in a province of 4 and
    20 % in a province of 5.
    """
    whole, fraction = divmod(n * share_bp, BASIS_POINTS)
    return whole + int(draw * BASIS_POINTS < fraction * QUOTA_DRAW_SPAN)


def hash_threshold(share_bp: int) -> str:
    """The hex prefix below which a subscriber's hash puts them in a share of everyone."""
    return format(share_bp * 16**HASH_PREFIX_HEX // BASIS_POINTS, f"0{HASH_PREFIX_HEX}x")


def hash_input_prefix(key: str, salt: str) -> str:
    """The text before the subscriber id in the hashed string `key:salt:id`."""
    return f"{key}:{salt}:"


@dataclass(frozen=True)
class UniversalControl:
    """A share of all subscribers held out of every campaign; members rotate every period."""

    share_bp: int
    rotation_days: int
    started_on: date
    salt: str

    def period(self, on: date) -> int:
        """The rotation period a day falls in (0 before the start)."""
        return max(0, (on - self.started_on).days // self.rotation_days)

    def period_bounds(self, period: int) -> tuple[date, date]:
        """First and last day of a period."""
        first = self.started_on + timedelta(days=period * self.rotation_days)
        return first, first + timedelta(days=self.rotation_days - 1)

    def period_salt(self, period: int) -> str:
        """A new draw every period: members change on rotation."""
        return f"ucg:{self.salt}:{period}"


DEFAULT_UNIVERSAL_CONTROL = UniversalControl(
    share_bp=500, rotation_days=90, started_on=date(2026, 1, 1), salt="ucg"
)


def universal_control_problem(*, share_bp: int, rotation_days: int, salt: str) -> str | None:
    """Why a universal control setting is not usable, or None."""
    problem = share_problem(share_bp, what="universal control share")
    if problem:
        return problem
    if not 7 <= rotation_days <= 730:
        return "rotation must be every 7 to 730 days"
    if not SALT.fullmatch(salt):
        return "salt: 1–64 letters, digits, _ . : -"
    return None
