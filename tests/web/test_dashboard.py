"""The console home: the day's and the month's activity, campaigns and alerts, by region."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.rules import FulfilmentKind
from perkflow.coupons import service as coupons
from perkflow.grants import service as grants
from perkflow.grants.tasks import OutboxWorker, WorkerConfig
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from tests.campaigns.helpers import everyone, spec, started, write_profile
from tests.coupons.factories import make_batch
from tests.factories import make_benefit, make_partner, make_staff, make_subscribers
from tests.web.helpers import sign_in

ZONE = "Asia/Shanghai"
GD = [("13812345601", "GD", "GD01"), ("13812345602", "GD", "GD01")]
ZJ = [("13912345601", "ZJ", "ZJ01"), ("13912345602", "ZJ", "ZJ01"), ("13912345603", "ZJ", "ZJ01")]


def _issue(s: Session, sid: int, benefit_id: int, key: str) -> None:
    grants.issue_grant(
        s,
        actor=SYSTEM,
        subscriber_id=sid,
        benefit_id=benefit_id,
        source="test",
        idempotency_key=key,
        zone=ZONE,
    )


def _seed(web_sessions: sessionmaker[Session], vault: Vault, settings: Settings) -> dict[str, int]:
    """GD: 2 grants (one dies at the partner), 2 claims, 1 redemption; ZJ: 3 grants, 1 claim."""
    mart = Mart(settings.mart_dir)
    write_profile(mart, 30)
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
        make_staff(s, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
        clerk = make_staff(s, username="clerk", role=Role.CLERK, region="GD01S1")
        gd = make_subscribers(s, vault, GD)
        zj = make_subscribers(s, vault, ZJ)
        partner = make_partner(s, code="inhouse")
        service = make_benefit(s, partner=partner, code="svc", kind=FulfilmentKind.SERVICE)
        pool = make_benefit(s, partner=partner, code="pool", kind=FulfilmentKind.CARD_CODE)
        pool.low_stock_threshold = 5  # no codes loaded: a pool alert
        broken = make_partner(
            s,
            code="broken",
            connector_url="http://127.0.0.1:9/orders",
            secret="s3cret-s3cret",
            vault=vault,
            max_attempts=1,
        )
        broken.connector_secret_enc = b"not a ciphertext"  # the worker cannot deliver: dead letter
        s.commit()
        recharge = make_benefit(s, partner=broken, code="recharge", stock=10)
        _issue(s, gd[0], service.id, "g1")
        _issue(s, gd[1], recharge.id, "g2")
        for n, sid in enumerate(zj):
            _issue(s, sid, service.id, f"z{n}")
        batch = make_batch(s, stock_total=3, name_zh="秒杀券", name_en="Flash coupon")
        for sid in [gd[0], gd[1], zj[0]]:
            coupons.claim_coupon(
                s,
                actor=coupons.subscriber_actor(sid),
                vault=vault,
                batch_id=batch.id,
                subscriber_id=sid,
                idempotency_key="k",
                channel="h5",
                device_id=None,
                zone=ZONE,
            )
        s.commit()
        clerk_actor = org.actor_for_staff(s, user=clerk, ip="test")
        [item] = coupons.wallet(s, actor=SYSTEM, vault=vault, subscriber_id=gd[0])
        coupons.redeem_coupon(s, actor=clerk_actor, vault=vault, code=item.code, order_fen=9000)
        campaign = started(s, mart, vault, spec(everyone(s, mart)))
        s.commit()
    worker = OutboxWorker(
        sessions=web_sessions,
        vault=vault,
        config=WorkerConfig(callback_base="http://x", concurrency=1),
    )
    try:
        worker.drain(max_seconds=10)
    finally:
        worker.close()
    return {"batch": batch.id, "pool": pool.id, "campaign": campaign.id}


def _value(page: str, card: str) -> tuple[int, int | None]:
    """A card's big number and its "this month" figure."""
    block = page.split(f'id="{card}"')[1].split("</a>")[0].split("</div>\n</div>")[0]
    numbers = [int(n.replace(",", "")) for n in re.findall(r">([\d,]+)<", block)]
    return numbers[0], (numbers[1] if len(numbers) > 1 else None)


def test_the_home_shows_todays_operations_in_the_viewers_region(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault, settings: Settings
) -> None:
    """HQ sees every province's figures; a province marketer only theirs; each card links."""
    ids = _seed(web_sessions, vault, settings)
    sign_in(client, "admin")
    page = client.get("/console").text
    assert _value(page, "op-grants") == (5, 5)
    assert _value(page, "op-claims") == (3, 3)
    assert _value(page, "op-redemptions") == (1, 1)
    assert _value(page, "op-failures") == (1, 1)  # one dead letter, one failed grant
    assert _value(page, "op-campaigns")[0] == 1
    # The campaign has not sent anything: the evaluation has no figure to give, and neither do we.
    running = page.split('id="running-campaigns"')[1].split("</table>")[0]
    assert f'href="/console/campaigns/{ids["campaign"]}/evaluation"' in running
    assert "数据不足" in running
    alerts = page.split('id="stock-alerts"')[1]
    assert f'href="/console/benefits/{ids["pool"]}/codes"' in alerts
    assert f'href="/console/coupons/{ids["batch"]}"' in alerts  # 0 of 3 left
    for href in (
        "/console/grants",
        "/console/grants/dead-letters",
        "/console/coupons",
        "/console/campaigns",
    ):
        assert f'href="{href}"' in page, href
    assert 'id="chart-grants-data"' in page and 'data-chart="chart-grants-data"' in page

    client.cookies.clear()
    sign_in(client, "gd")
    page = client.get("/console").text
    assert _value(page, "op-grants") == (2, 2)
    assert _value(page, "op-claims") == (2, 2)
    assert _value(page, "op-redemptions") == (1, 1)
    assert _value(page, "op-failures") == (1, 1)
    # The national campaign is HQ's: a province marketer's home does not count it.
    assert _value(page, "op-campaigns")[0] == 0
    assert "/console/grants/dead-letters" not in page  # redriving is HQ's: the list link instead
    assert 'href="/console/grants"' in page


def test_the_home_in_english_and_empty(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    """A fresh ledger shows zeros and says there is nothing to look at, in the chosen language."""
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "admin")
    client.cookies.set("perkflow_lang", "en")
    page = client.get("/console").text
    assert "Benefits granted today" in page and _value(page, "op-grants") == (0, 0)
    assert "No benefit or coupon batch is low on stock." in page
    assert "No campaign is running or finished lately in your region." in page
