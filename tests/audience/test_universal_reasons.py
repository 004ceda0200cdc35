"""A target list's reason counts are of the subscribers it could contact: no UCG member in them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from perkflow.audience import holdout, rules
from perkflow.audience import service as audience
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.audience.helpers import profile, snapshot
from tests.audience.test_service import HQ
from tests.factories import make_subscribers

NOW = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


def test_universal_control_members_are_not_counted_under_a_suppression_reason(
    session: Session, mart: Mart, vault: Vault
) -> None:
    ids = make_subscribers(session, vault, [(f"1381235{i:04d}", "GD", "GD01") for i in range(60)])
    profile(mart, [{"subscriber_id": i, "activity_level": "active"} for i in ids])
    # Everyone opted out of SMS; a fifth of everyone is in the universal control group.
    for sid in ids:
        audience.add_to_contact_list(session, actor=HQ, subscriber_id=sid, channel="sms")
    audience.set_universal_control(session, actor=SYSTEM, share_bp=2_000, rotation_days=90)
    setting = audience.get_universal_control(session)
    members = holdout.members(setting, key=vault.assignment_key, subscriber_ids=ids, on=NOW.date())
    assert 0 < len(members) < len(ids)
    seg = audience.create_segment(session, mart=mart, actor=HQ, name="All", raw={})
    tl = audience.build_target_list(
        session,
        mart=mart,
        actor=HQ,
        vault=vault,
        segment_id=seg.id,
        channel="sms",
        control_share_bp=1_000,
        send_at=NOW,
    )
    assert tl.universal_control == len(members)
    assert tl.reasons == {rules.Reason.OPTED_OUT.value: len(ids) - len(members)}
    assert tl.suppressed == len(ids) - len(members)
    cells = snapshot(mart, tl.mart_table)
    assert all(cells[sid] == (rules.ListCell.UNIVERSAL_CONTROL.value, None) for sid in members)
