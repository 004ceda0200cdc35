"""Pure rules of red envelopes: prize tiers, reproducible lottery draws, share-to-unlock helps."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class ProgramKind(StrEnum):
    LOTTERY = "lottery"
    SHARE = "share"


class ProgramStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ENDED = "ended"


class DrawOutcome(StrEnum):
    WON = "won"
    NOTHING = "nothing"  # the draw landed on no prize tier
    BUDGET_EXHAUSTED = "budget_exhausted"  # a tier was drawn but the budget could not pay it
    TIER_EXHAUSTED = "tier_exhausted"  # a tier was drawn but its prize count was used up
    PRIZE_SOLD_OUT = "prize_sold_out"  # a coupon tier was drawn but its batch had no unit left


class EnvelopeStatus(StrEnum):
    LOCKED = "locked"
    OPENED = "opened"
    EXPIRED = "expired"  # not opened before its programme ended; its reservation went back


class CreditKind(StrEnum):
    CASH = "cash"  # to the subscriber's red-envelope balance
    COUPON = "coupon"  # a coupon of the tier's batch in the wallet


MAX_DRAWS_PER_CALL = 1000
PPM = 1_000_000


@dataclass(frozen=True)
class Tier:
    """A prize tier: what it pays, how likely it is (parts per million), how many it may pay."""

    tier: int
    prize_fen: int
    weight_ppm: int
    max_count: int | None = None


def tiers_problem(tiers: Sequence[Tier]) -> str | None:
    """Why a set of prize tiers is inconsistent, or None."""
    if not tiers:
        return "a lottery needs at least one prize tier"
    if len({t.tier for t in tiers}) != len(tiers):
        return "tier numbers must be distinct"
    if any(t.prize_fen <= 0 or t.weight_ppm <= 0 for t in tiers):
        return "every tier needs a prize and a probability above zero"
    if sum(t.weight_ppm for t in tiers) > PPM:
        return "the probabilities add up to more than 100%"
    if any(t.max_count is not None and t.max_count < 0 for t in tiers):
        return "a tier's prize count cannot be negative"
    return None


def draw_number(seed: str, draw_no: int) -> int:
    """The uniform number in 0..999,999 behind a draw: anyone with the seed can recompute it."""
    digest = hashlib.blake2b(f"{seed}:{draw_no}".encode(), digest_size=8).digest()
    # 2**64 is not a multiple of 10**6; the bias (< 1e-13) is far below any test's power.
    return int.from_bytes(digest, "big") % PPM


def pick_tier(u: int, tiers: Sequence[Tier]) -> Tier | None:
    """The tier a uniform number lands in, tiers laid end to end in tier order; None = no prize."""
    edge = 0
    for t in sorted(tiers, key=lambda t: t.tier):
        edge += t.weight_ppm
        if u < edge:
            return t
    return None


@dataclass(frozen=True)
class DrawResult:
    """One settled draw."""

    draw_no: int
    u: int
    tier: int | None
    outcome: DrawOutcome
    prize_fen: int


def settle_draws(
    *,
    seed: str,
    first_draw_no: int,
    count: int,
    tiers: Sequence[Tier],
    won_counts: dict[int, int],
    spent_fen: int,
    budget_fen: int,
    deliver: Callable[[Tier], bool] | None = None,
) -> tuple[list[DrawResult], int, dict[int, int]]:
    """Draws in order against the budget and tier counts: (results, new spent, new won counts)."""
    # `deliver` is asked for each payable win's prize (a coupon tier takes a unit of its batch
    # there); False records the draw as `prize_sold_out`, paying nothing.
    results = []
    won = dict(won_counts)
    for draw_no in range(first_draw_no, first_draw_no + count):
        u = draw_number(seed, draw_no)
        tier = pick_tier(u, tiers)
        if tier is None:
            results.append(DrawResult(draw_no, u, None, DrawOutcome.NOTHING, 0))
        elif tier.max_count is not None and won.get(tier.tier, 0) >= tier.max_count:
            results.append(DrawResult(draw_no, u, tier.tier, DrawOutcome.TIER_EXHAUSTED, 0))
        elif spent_fen + tier.prize_fen > budget_fen:
            results.append(DrawResult(draw_no, u, tier.tier, DrawOutcome.BUDGET_EXHAUSTED, 0))
        elif deliver is not None and not deliver(tier):
            results.append(DrawResult(draw_no, u, tier.tier, DrawOutcome.PRIZE_SOLD_OUT, 0))
        else:
            spent_fen += tier.prize_fen
            won[tier.tier] = won.get(tier.tier, 0) + 1
            results.append(DrawResult(draw_no, u, tier.tier, DrawOutcome.WON, tier.prize_fen))
    return results, spent_fen, won


def help_problem(*, owner_id: int, helper_id: int, status: str) -> str | None:
    """Why a subscriber cannot help open a share envelope, or None."""
    if helper_id == owner_id:
        return "you cannot help open your own red envelope"
    if status == EnvelopeStatus.OPENED:
        return "this red envelope is already open"
    if status == EnvelopeStatus.EXPIRED:
        return "this red envelope has expired"
    return None
