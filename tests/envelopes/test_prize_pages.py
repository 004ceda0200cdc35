"""Red-envelope prizes on the pages and the API: the wallet, the balance, where a prize went."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.envelopes import service as envelopes
from perkflow.envelopes.rules import ProgramKind, ProgramStatus
from perkflow.envelopes.schemas import ProgramSpec, TierSpec
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers
from tests.coupons.factories import make_batch
from tests.envelopes.factories import make_lottery
from tests.factories import make_api_key, make_subscribers
from tests.web.helpers import csrf_of

PHONES = [("13812345601", "GD", "GD01"), ("13912345602", "GD", "GD02")]


def _enter_h5(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault, phone: str
) -> None:
    with web_sessions() as s:
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=phone)
        s.commit()
    assert client.get(f"/h5/enter?t={signed}", follow_redirects=False).status_code == 303


def test_h5_shows_a_won_coupon_in_the_wallet_and_cash_in_the_balance(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        make_subscribers(s, vault, PHONES)
        prize = make_batch(s, stock_total=5, name_zh="奖品券满50减10", name_en="Prize 10 off 50")
        program = envelopes.create_program(
            s,
            actor=SYSTEM,
            spec=ProgramSpec(
                code="h5-coupon-draw",
                name_zh="抽券",
                name_en="Coupon draw",
                kind=ProgramKind.LOTTERY,
                budget_fen=100_000,
                limit_per_subscriber=5,
                tiers=[
                    TierSpec(
                        tier=1,
                        name_zh="券",
                        name_en="Coupon",
                        prize_fen=1000,
                        weight_ppm=1_000_000,
                        prize_batch_id=prize.id,
                    )
                ],
            ),
        )
        envelopes.set_program_status(
            s, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ACTIVE
        )
        s.commit()
        cash = make_lottery(s, budget_fen=100_000, tiers=[(1, 888, 1_000_000)])
    _enter_h5(client, web_sessions, vault, PHONES[0][0])
    page = client.get("/h5/envelopes", headers={"accept-language": "zh-CN"})
    token = csrf_of(page.text)
    drawn = client.post(
        f"/h5/envelopes/{program.id}/draw",
        data={"csrf_token": token},
        headers={"accept-language": "zh-CN"},
    )
    assert drawn.status_code == 200 and "奖品券满50减10" in drawn.text
    link = re.search(r'href="(/h5/wallet/\d+)" class="credited"', drawn.text)
    assert link, "no link to the won coupon"
    coupon_page = client.get(link.group(1))
    assert coupon_page.status_code == 200 and 'id="coupon-code"' in coupon_page.text
    won_cash = client.post(f"/h5/envelopes/{cash.id}/draw", data={"csrf_token": token})
    assert 'id="prize-cash-1"' in won_cash.text
    wallet = client.get("/h5/wallet", headers={"accept-language": "zh-CN"})
    assert "红包余额：¥8.88" in wallet.text
    assert wallet.text.count('class="offer wallet-item') == 1  # the won coupon


def test_api_draw_reports_where_the_prize_went(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [sid, _] = make_subscribers(s, vault, PHONES)
        program = make_lottery(s, budget_fen=1000, tiers=[(1, 600, 1_000_000)])
        key = make_api_key(s, scopes=["coupons:claim"])
    r = client.post(
        f"/v1/envelope-programs/{program.id}/draws",
        json={"subscriber_id": sid, "count": 2},
        headers={"authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(d["outcome"], d["credited"]) for d in body] == [
        ("won", "cash"),
        ("budget_exhausted", None),
    ]
