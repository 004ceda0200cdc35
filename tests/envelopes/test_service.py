"""Red envelopes: the lottery's budget and reproducible draws, share-to-unlock helps."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from perkflow.coupons import service as coupons
from perkflow.envelopes import service as envelopes
from perkflow.envelopes.models import EnvelopeProgram, ShareEnvelope
from perkflow.envelopes.rules import DrawOutcome, EnvelopeStatus
from perkflow.errors import Conflict
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.envelopes.factories import make_lottery, make_share
from tests.factories import make_subscribers

GD = [("13812340001", "GD", "GD01"), ("13812340002", "GD", "GD01"), ("13912340003", "ZJ", "ZJ01")]


def test_lottery_never_passes_its_budget_and_draws_reproduce(
    session: Session, vault: Vault
) -> None:
    [a, *_] = make_subscribers(session, vault, GD)
    program = make_lottery(session, budget_fen=5000, tiers=[(1, 1000, 500_000), (2, 100, 400_000)])
    results = envelopes.draw_lottery(
        session, actor=SYSTEM, vault=vault, program_id=program.id, subscriber_id=a, count=50
    )
    session.commit()
    paid = sum(r.prize_fen for r in results)
    assert paid <= 5000
    assert any(r.outcome == DrawOutcome.BUDGET_EXHAUSTED for r in results)
    refreshed = session.get(EnvelopeProgram, program.id, populate_existing=True)
    assert refreshed is not None and refreshed.spent_fen == paid
    draw, u, tier = envelopes.verify_draw(session, program_id=program.id, draw_no=17)
    assert (draw.u, draw.tier) == (u, tier)


def test_share_to_unlock_counts_each_friend_once_and_not_the_owner(
    session: Session, vault: Vault
) -> None:
    owner, f1, f2 = make_subscribers(session, vault, GD)
    [f3] = make_subscribers(session, vault, [("13712340009", "GD", "GD02")])
    program = make_share(session, helpers=2)
    env = envelopes.start_share(session, actor=SYSTEM, program_id=program.id, subscriber_id=owner)
    session.commit()
    assert (
        envelopes.start_share(session, actor=SYSTEM, program_id=program.id, subscriber_id=owner).id
        == env.id
    )

    def help_(helper: int, via: int) -> ShareEnvelope:
        out = envelopes.help_open(
            session,
            actor=coupons.subscriber_actor(helper),
            envelope_id=env.id,
            helper_id=helper,
            via_id=via,
            device_id=f"dev-{helper}",
        )
        session.commit()
        return out

    with pytest.raises(Conflict, match="own"):
        help_(owner, owner)
    session.rollback()
    help_(f1, owner)
    with pytest.raises(Conflict, match="already helped"):
        help_(f1, owner)
    session.rollback()
    opened = help_(f2, f1)
    assert opened.status == EnvelopeStatus.OPENED
    with pytest.raises(Conflict, match="already open"):
        help_(f3, f2)
    session.rollback()
    chain = {h.helper_id: h.via_id for h in envelopes.helps_of(session, envelope_id=env.id)}
    assert chain == {f1: owner, f2: f1}
    reviews = envelopes.review_helps(session, actor=SYSTEM, program_id=program.id)
    assert {r.help.helper_id: r.depth for r in reviews} == {f1: 1, f2: 2}
    refreshed = session.get(EnvelopeProgram, program.id, populate_existing=True)
    assert refreshed is not None and refreshed.spent_fen == 888
