"""A campaign's in-app message carries the link to its offer, by the worker and inline alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import service as campaigns
from perkflow.channels.inbox import offer_link
from perkflow.channels.models import InboxMessage
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.audience.helpers import profile
from tests.campaigns.helpers import NOW, dispatcher, everyone, run, spec, started
from tests.coupons.factories import make_batch
from tests.factories import make_subscribers


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def _links(sessions: sessionmaker[Session]) -> dict[int, str | None]:
    with sessions() as s:
        return {m.subscriber_id: m.link for m in s.scalars(select(InboxMessage))}


def test_offer_links() -> None:
    assert offer_link(kind="coupon_batch", offer_id=12) == "/h5/coupons#offer-12"
    assert offer_link(kind="benefit", offer_id=3) == "/h5/benefits"
    assert offer_link(kind="none", offer_id=None) is None


def test_dispatched_in_app_messages_link_to_the_coupon_batch(
    session: Session,
    sessions: sessionmaker[Session],
    mart: Mart,
    vault: Vault,
    settings: Settings,
) -> None:
    ids = make_subscribers(session, vault, [(f"1370000{i:04d}", "GD", "GD01") for i in range(4)])
    profile(
        mart,
        [
            {"subscriber_id": s, "province_code": "GD", "city_code": "GD01", "plan_fee_yuan": 129}
            for s in ids
        ],
    )
    seg = everyone(session, mart)
    batch = make_batch(session)
    offer = {"kind": "coupon_batch", "id": batch.id, "category": "video", "cost_fen": 500}
    started(session, mart, vault, spec(seg, offer=offer, control_share=0))
    run(sessions, dispatcher(vault, settings), mart)
    links = _links(sessions)
    assert sorted(links) == sorted(ids)
    assert set(links.values()) == {f"/h5/coupons#offer-{batch.id}"}


def test_a_campaign_without_an_offer_links_nothing(
    session: Session,
    sessions: sessionmaker[Session],
    mart: Mart,
    vault: Vault,
    settings: Settings,
) -> None:
    ids = make_subscribers(session, vault, [("13700001111", "GD", "GD01")])
    profile(
        mart,
        [
            {
                "subscriber_id": ids[0],
                "province_code": "GD",
                "city_code": "GD01",
                "plan_fee_yuan": 59,
            }
        ],
    )
    started(session, mart, vault, spec(everyone(session, mart), control_share=0))
    run(sessions, dispatcher(vault, settings), mart)
    assert _links(sessions) == {ids[0]: None}


def test_a_triggered_message_delivered_inline_carries_the_link(
    session: Session, sessions: sessionmaker[Session], mart: Mart, vault: Vault
) -> None:
    (sid,) = make_subscribers(session, vault, [("13500000001", "GD", "GD01")])
    batch = make_batch(session)
    started(
        session,
        mart,
        vault,
        {
            "name": "Thanks for topping up",
            "goal": {"kind": "claim", "window_days": 7},
            "offer": {"kind": "coupon_batch", "id": batch.id, "cost_fen": 500, "name": "券"},
            "variants": [
                {"key": "T", "channel": "in_app", "subject": "{{ offer_name }}", "body": "点击领取"}
            ],
            "trigger": {"events": ["recharge"]},
            "control_share": 0,
        },
    )
    out = campaigns.record_event(
        session,
        actor=SYSTEM,
        vault=vault,
        type="recharge",
        subscriber_id=sid,
        occurred_at=NOW,
        idempotency_key="recharge-1",
        attributes={"amount_yuan": 50},
    )
    assert [t.status for t in out.triggered] == ["delivered"]
    session.commit()
    assert _links(sessions) == {sid: f"/h5/coupons#offer-{batch.id}"}
