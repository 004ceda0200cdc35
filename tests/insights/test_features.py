"""History sync to the mart (idempotent, other sources kept) and per-subscriber features."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from perkflow.audience import marts
from perkflow.errors import Forbidden
from perkflow.insights import service as insights
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM, Actor, Role
from tests.insights.test_service import T0, _run_campaign


def test_sync_history_then_write_back_features(session: Session, tmp_path: Path) -> None:
    mart = Mart(tmp_path / "mart")
    # A row from another source (an older system's campaign "C17"), 40 days before.
    old = T0 - timedelta(days=40)
    marts.append_contacts(
        mart,
        marts.rows_table(
            [{"subscriber_id": 5000, "campaign_id": "C17", "channel": "sms", "cell": "target",
              "contacted_at": old, "target_list_id": None}],
            marts.CONTACT_HISTORY_SCHEMA,
        ),
    )  # fmt: skip
    marts.append_responses(
        mart,
        marts.rows_table(
            [{"subscriber_id": 5000, "campaign_id": "C17", "channel": "sms", "kind": "click",
              "responded_at": old + timedelta(hours=1), "value_fen": 0}],
            marts.RESPONSE_HISTORY_SCHEMA,
        ),
    )  # fmt: skip
    campaign = _run_campaign(session)

    assert insights.sync_history(session, actor=SYSTEM, mart=mart) == 130  # suppressed left out
    assert insights.sync_history(session, actor=SYSTEM, mart=mart) == 130  # idempotent
    contacts = mart.table(marts.CONTACT_HISTORY).to_pyarrow().to_pylist()
    assert len(contacts) == 131
    mine = [c for c in contacts if c["campaign_id"] == f"c{campaign.id}"]
    assert {c["channel"] for c in mine} == {"sms", "email"}
    assert {c["cell"] for c in mine} == {"target", "control"}
    responses = mart.table(marts.RESPONSE_HISTORY).to_pyarrow().to_pylist()
    assert len(responses) == 1 + 32
    assert {r["campaign_id"] for r in responses} == {"C17", f"c{campaign.id}"}

    as_of = T0 + timedelta(days=10)
    n = insights.write_back_features(session, actor=SYSTEM, mart=mart, as_of=as_of)
    rows = {r["subscriber_id"]: r for r in mart.table("response_features").to_pyarrow().to_pylist()}
    # 100 target contacts, 3 control subscribers who responded (a last response), 1 from C17.
    assert n == len(rows) == 100 + 3 + 1
    first = rows[1]  # target A (SMS, sent 10:00 Shanghai), responded
    assert first["contacts_total"] == 1 and first["responses_total"] == 1
    assert first["rate_sms"] == 1.0 and first["rate_email"] is None
    assert first["rate_morning"] == 1.0 and first["rate_evening"] is None
    assert first["affinity_video"] == 1.0 and first["affinity_music"] is None
    assert first["contacts_30d"] == 1
    assert first["last_response_at"] == T0
    quiet = rows[239]  # target B (e-mail), did not respond
    assert quiet["rate_email"] == 0.0 and quiet["response_rate"] == 0.0
    assert quiet["last_response_at"] is None
    control = rows[100]  # a control subscriber who responded: no messages, a last response
    assert control["contacts_total"] == 0 and control["response_rate"] is None
    assert control["last_response_at"] is not None
    other = rows[5000]
    assert other["rate_sms"] == 1.0 and other["contacts_30d"] == 0
    assert other["affinity_video"] is None  # its campaign's category is unknown
    assert first["computed_at"] == as_of.astimezone(UTC)


def test_only_a_national_reader_syncs(session: Session, tmp_path: Path) -> None:
    marketer = Actor(
        kind="staff", id="1", name="gd", role=Role.PROVINCE_MARKETER, scope_path="CN/GD"
    )
    with pytest.raises(Forbidden):
        insights.sync_history(session, actor=marketer, mart=Mart(tmp_path / "m"))
    n = insights.write_back_features(
        session, actor=SYSTEM, mart=Mart(tmp_path / "empty"), as_of=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert n == 0
