"""The budget pays for coupons when they are redeemed, not their face value at every send."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import rules
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.settings import Settings
from tests.campaigns.helpers import (
    NOW,
    contacts,
    dispatcher,
    everyone,
    run,
    spec,
    started,
    write_profile,
)


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def test_the_reported_case_sends_everyone_the_budget_can_expect_to_pay_for() -> None:
    # 8,052 targets; the budget covers 1,101 coupons at face value. Charging face value per send
    # suppressed 6,951 of them; at the prior take-up (10 %) the budget pays for all.
    cost = 2_000
    room = rules.budget_room(budget_fen=1_101 * cost, cost_fen=cost, sent=0, taken=0)
    assert room >= 8_052
    # Once the campaign's own take-up is known (5 % of 8,052), there is budget left.
    assert rules.budget_room(budget_fen=1_101 * cost, cost_fen=cost, sent=8_052, taken=403) > 0


def test_redemptions_spend_the_budget_and_stop_the_sends() -> None:
    # 10 coupons redeemed of a 10-coupon budget: nothing left, whatever was sent.
    assert rules.budget_room(budget_fen=1_000, cost_fen=100, sent=10, taken=10) == 0
    assert rules.budget_room(budget_fen=1_000, cost_fen=100, sent=200, taken=10) == 0
    # 4 redeemed of 50 sent: a take-up of (4+1)/(50+10) = 1/12; 46 may still redeem (3.83
    # coupons expected), so 1,000 − 400 − 383 = 217 fen pay for 26 more contacts at 8.33 fen.
    assert rules.take_up_estimate(sent=50, taken=4) == pytest.approx(1 / 12)
    assert rules.budget_room(budget_fen=1_000, cost_fen=100, sent=50, taken=4) == 26
    with pytest.raises(ValueError):
        rules.budget_room(budget_fen=1_000, cost_fen=0, sent=0, taken=0)


def test_the_stock_cap_still_counts_sends() -> None:
    s = rules.spec_of(
        {
            "name": "x",
            "segment_id": 1,
            "goal": {"kind": "claim", "window_days": 7},
            "offer": {"kind": "none", "cost_fen": 100},
            "variants": [{"key": "A", "channel": "in_app", "body": "hi"}],
            "budget_fen": 1_000,
            "stock_cap": 30,
        }
    )
    assert rules.has_cap(s)
    assert rules.send_room(s, sent=0, taken=0) == 30  # the budget would pay for 100
    assert rules.send_room(s, sent=25, taken=2) == 5  # the stock left binds
    # 9 redeemed and 16 that may still redeem commit the budget: the budget binds.
    assert rules.send_room(s, sent=25, taken=9) == 0


def test_dispatch_does_not_charge_face_value_per_send(
    session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault, settings: Settings
) -> None:
    write_profile(mart, 40)
    seg = everyone(session, mart)
    # A 10-yuan budget and a 1-yuan coupon: face value per send stopped after 10 contacts.
    raw = spec(seg, budget_fen=1_000, offer={"kind": "none", "name": "券", "cost_fen": 100})
    c = started(session, mart, vault, raw)
    run(sessions, dispatcher(vault, settings), mart)
    targets = [r for r in contacts(session, c.id) if r.cell == "target"]
    assert len(targets) > 10
    assert all(r.status == "delivered" for r in targets), {r.reason for r in targets}
