"""Caps on target contacts: the stock cap and the budget, with coupons paid for at redemption."""

from __future__ import annotations

import math

from .spec import CampaignSpec

# What a coupon costs is paid when it is redeemed, not when the message goes out. Before a
# campaign has evidence of its own, an offer is taken up by one contact in ten: a Beta(1, 9) prior
# worth ten contacts, which the campaign's own take-up soon outweighs.
TAKE_UP_PRIOR = (1, 9)


def take_up_estimate(*, sent: int, taken: int) -> float:
    """The share of contacts expected to take the offer up: the prior and the campaign's own."""
    a, b = TAKE_UP_PRIOR
    return (taken + a) / (sent + a + b)


def budget_room(*, budget_fen: int, cost_fen: int, sent: int, taken: int) -> int:
    """How many more target contacts the budget pays for, charging each coupon at redemption.

    Spent: the offers taken up, at their cost. Committed: every contact sent that has not taken
    the offer up yet may still, at the estimated take-up. The rest of the budget pays for new
    contacts at the same expected cost each.
    """
    if cost_fen <= 0:
        raise ValueError("an offer that costs nothing needs no budget room")
    p = take_up_estimate(sent=sent, taken=taken)
    left = budget_fen - taken * cost_fen - max(sent - taken, 0) * cost_fen * p
    return max(0, math.floor(left / (cost_fen * p)))


def has_cap(spec: CampaignSpec) -> bool:
    """A stock cap or a budget limits this campaign's target contacts."""
    return spec.stock_cap is not None or (spec.budget_fen is not None and spec.offer.cost_fen > 0)


def send_room(spec: CampaignSpec, *, sent: int, taken: int) -> int | None:
    """How many more target contacts may go out now: the stock left and the budget's room."""
    rooms = []
    if spec.stock_cap is not None:
        rooms.append(max(spec.stock_cap - sent, 0))
    if spec.budget_fen is not None and spec.offer.cost_fen > 0:
        rooms.append(
            budget_room(
                budget_fen=spec.budget_fen, cost_fen=spec.offer.cost_fen, sent=sent, taken=taken
            )
        )
    return min(rooms) if rooms else None


def contact_cap(spec: CampaignSpec) -> int | None:
    """At most this many target contacts before any take-up is seen; None without a cap.

    The stock cap, and what the budget pays for at the prior take-up (coupons are paid for when
    redeemed). Dispatch counts the room as it goes (``send_room``).
    """
    return send_room(spec, sent=0, taken=0)
