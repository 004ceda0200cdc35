"""An imported history's ids are its source's: subscribers change only when matched on purpose."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from perkflow.audience import marts
from perkflow.audience import service as audience
from perkflow.campaigns.models import Campaign, CampaignContact
from perkflow.errors import ValidationFailed
from perkflow.insights import service as insights
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from tests.campaigns.helpers import write_profile
from tests.factories import make_subscribers
from tests.insights.test_service import T0, _run_campaign

AS_OF = T0 + timedelta(days=10)
HEADER = "subscriber_id,cell,variant,contacted_at,responded,revenue"
CONTACTED = {"rule": {"history": "contacted", "within_days": 3650}}


def _history(tmp_path: Path, ids: range, *, phones: dict[int, str] | None = None) -> Path:
    """Every id a responding target contact a week before T0 (so every feature would move)."""
    at = (T0 - timedelta(days=7)).isoformat()
    lines = [HEADER + (",phone" if phones is not None else "")]
    for i in ids:
        line = f"{i},target,mens,{at},1,12.50"
        if phones is not None:
            line += f",{phones.get(i, '')}"
        lines.append(line)
    path = tmp_path / "outside.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _features(mart: Mart) -> dict[int, dict[str, Any]]:
    rows = mart.table(marts.RESPONSE_FEATURES).to_pyarrow().to_pylist()
    return {r.pop("subscriber_id"): r for r in rows}


def _contacts_by_subscriber(mart: Mart) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in mart.table(marts.CONTACT_HISTORY).to_pyarrow().to_pylist():
        counts[r["subscriber_id"]] = counts.get(r["subscriber_id"], 0) + 1
    return counts


def _state(session: Session, mart: Mart) -> tuple[Any, ...]:
    """What the mart says about our subscribers: history, features, a history segment's size."""
    insights.sync_history(session, actor=SYSTEM, mart=mart)
    insights.write_back_features(session, actor=SYSTEM, mart=mart, as_of=AS_OF)
    segment = audience.preview_definition(
        session, mart=mart, actor=SYSTEM, raw=CONTACTED, as_of=AS_OF
    )
    return _contacts_by_subscriber(mart), _features(mart), segment.count


def test_overlapping_outside_ids_leave_our_subscribers_untouched(
    session: Session, tmp_path: Path
) -> None:
    mart = Mart(tmp_path / "mart")
    write_profile(mart, 400)
    _run_campaign(session)  # our own campaign: subscribers 1–39, 100–109, 200–259, 300–319
    before = _state(session, mart)
    assert before[0][1] == 1 and before[2] == 130

    # Outside ids 1–400 are the same numbers as our subscribers 1–400, and mean other people.
    campaign = insights.import_history_csv(
        session,
        actor=SYSTEM,
        path=_history(tmp_path, range(1, 401)),
        name="outside",
        source="hillstrom",
    )
    session.flush()
    assert campaign.import_source == "hillstrom"
    after = _state(session, mart)
    assert after == before  # contact counts, every response feature, segment membership

    # The history still answers for its own campaign.
    report = insights.report_dict(insights.evaluate(session, actor=SYSTEM, campaign_id=campaign.id))
    assert report["cells"]["target"]["contacts"] == 400
    assert report["cells"]["target"]["responses"] == 400
    # Stored outside our id space, with its source on every row.
    rows = session.scalars(
        select(CampaignContact).where(CampaignContact.campaign_id == campaign.id)
    ).all()
    assert {r.import_source for r in rows} == {"hillstrom"}
    assert max(r.subscriber_id for r in rows) < 0


def test_a_declared_mapping_links_exactly_the_mapped_ids(
    session: Session, tmp_path: Path, vault: Vault
) -> None:
    mart = Mart(tmp_path / "mart")
    ours = make_subscribers(
        session, vault, [("13800000001", "GD", "GD01"), ("13800000002", "ZJ", "ZJ01")]
    )
    write_profile(mart, 2, first_id=ours[0])
    _run_campaign(session)
    contacts0, features0, _ = _state(session, mart)
    assert ours[0] not in features0

    mapping = tmp_path / "map.csv"
    mapping.write_text(f"outside_id,subscriber_id\n7,{ours[0]}\n", encoding="utf-8")
    campaign = insights.import_history_csv(
        session,
        actor=SYSTEM,
        path=_history(tmp_path, range(1, 11)),
        name="crm spring",
        source="crm",
        map_path=mapping,
    )
    session.flush()
    contacts1, features1, _ = _state(session, mart)
    # Outside id 7 is now subscriber ours[0]'s history; the nine others joined nobody.
    assert contacts1 == {**contacts0, ours[0]: 1}
    linked = features1.pop(ours[0])
    assert (linked["contacts_total"], linked["responses_total"], linked["response_rate"]) == (
        1,
        1,
        1.0,
    )
    assert {k: {**v, "computed_at": None} for k, v in features1.items()} == {
        k: {**v, "computed_at": None} for k, v in features0.items()
    }
    summary = insights.campaigns.import_summary(session, actor=SYSTEM, campaign_id=campaign.id)
    assert (summary.contacts, summary.matched, summary.responses) == (10, 1, 10)
    contact = session.scalars(
        select(CampaignContact).where(
            CampaignContact.campaign_id == campaign.id, CampaignContact.import_source.is_(None)
        )
    ).one()
    assert (contact.subscriber_id, contact.province_code) == (ours[0], "GD")


def test_match_by_phone_links_the_numbers_the_master_knows(
    session: Session, tmp_path: Path, vault: Vault
) -> None:
    [sid] = make_subscribers(session, vault, [("13900000003", "GD", "GD01")])
    campaign = insights.import_history_csv(
        session,
        actor=SYSTEM,
        path=_history(tmp_path, range(1, 4), phones={2: "139 0000 0003", 3: "13911112222"}),
        name="by phone",
        source="crm",
        match="phone",
        vault=vault,
    )
    session.flush()
    rows = {
        (r.subscriber_id, r.import_source)
        for r in session.scalars(
            select(CampaignContact).where(CampaignContact.campaign_id == campaign.id)
        )
    }
    # Outside id 2's number is our subscriber's; 1 has no number and 3's is unknown.
    assert rows == {(-1, "crm"), (sid, None), (-3, "crm")}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"source": "Hill strom"}, "source"),
        ({"source": "crm", "match": "email"}, "match"),
        ({"source": "crm", "match": "phone"}, "match"),  # the file has no phone column
    ],
)
def test_bad_sources_and_matches_are_refused(
    session: Session, tmp_path: Path, vault: Vault, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as err:
        insights.import_history_csv(
            session,
            actor=SYSTEM,
            path=_history(tmp_path, range(1, 4)),
            name="x",
            vault=vault,
            **kwargs,
        )
    assert err.value.field == field
    assert session.scalars(select(Campaign)).all() == []


def test_a_mapping_to_an_unknown_subscriber_loads_nothing(session: Session, tmp_path: Path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("outside_id,subscriber_id\n1,987654321\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match="not in the subscriber master"):
        insights.import_history_csv(
            session,
            actor=SYSTEM,
            path=_history(tmp_path, range(1, 4)),
            name="x",
            source="crm",
            map_path=mapping,
        )
