"""Campaign use cases: imported histories of campaigns run elsewhere."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns.models import (
    Campaign,
    CampaignContact,
    CampaignResponse,
    CampaignWave,
)
from perkflow.campaigns.rules import (
    CampaignKind,
    CampaignStatus,
    Cell,
    ContactStatus,
    HistoryRow,
    WaveKind,
)
from perkflow.errors import Forbidden, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.ids import token
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers

from .access import MAX_NAME, get_campaign

# ---- imported histories ---------------------------------------------------------------------


def import_history(
    session: Session,
    *,
    actor: Actor,
    name: str,
    source: str,
    rows: Sequence[HistoryRow],
    links: Mapping[int, int] | None = None,
) -> Campaign:
    """Load a past campaign (contacts with cells, responses, revenue) as a finished campaign.

    Its ids are the outside ``source``'s: only those in ``links`` (outside id → subscriber, matched
    on purpose) become our subscribers' history; the others stay in the source's namespace, so
    they count in this campaign's evaluation and nowhere else.
    """
    org.require(actor, Perm.CAMPAIGNS_EDIT)
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise ValidationFailed(f"name must be 1 to {MAX_NAME} characters", field="name")
    if not rules.IMPORT_SOURCE.match(source):
        raise ValidationFailed(
            "source is 1 to 32 lower-case letters, digits, - or _, a letter first", field="source"
        )
    if not rows:
        raise ValidationFailed("the history has no rows", field="file")
    seen: set[int] = set()
    for i, row in enumerate(rows):
        if row.subscriber_id in seen:
            raise ValidationFailed(
                f"row {i + 1}: subscriber {row.subscriber_id} appears twice", field="subscriber_id"
            )
        seen.add(row.subscriber_id)
    links = {k: v for k, v in (links or {}).items() if k in seen}
    if len(set(links.values())) != len(links):
        raise ValidationFailed("two outside ids are matched to one subscriber", field="match")
    provinces = subscribers.provinces_of(session, subscriber_ids=sorted(links.values()))
    unknown = sorted(set(links.values()) - set(provinces))
    if unknown:
        raise ValidationFailed(
            f"{len(unknown)} matched subscriber(s) are not in the subscriber master "
            f"(such as {unknown[0]})",
            field="match",
        )
    region = org.visible_province(actor)
    if region is not None and any(p != region for p in provinces.values()):
        raise Forbidden(f"matched subscribers must be in your region ({region})")

    def stored(row: HistoryRow) -> tuple[int, str | None, str | None]:
        """(subscriber_id, import_source, province) as the row is kept."""
        sid = links.get(row.subscriber_id)
        if sid is None:
            return rules.outside_id(row.subscriber_id), source, None
        return sid, None, provinces[sid]

    kept = {r.subscriber_id: stored(r) for r in rows}
    now = clock.now()
    campaign = Campaign(
        name=name,
        kind=CampaignKind.IMPORTED.value,
        import_source=source,
        status=CampaignStatus.FINISHED.value,
        province_code=region,
        goal={"kind": "import", "window_days": 0},
        offer={"kind": "none"},
        variants=[
            {"key": v, "channel": "import"}
            for v in sorted({r.variant for r in rows if r.variant is not None})
        ],
        schedule={},
        throttle={},
        control_share_bp=round(10_000 * sum(r.cell == Cell.CONTROL for r in rows) / len(rows)),
        salt=token(12),
        created_by=actor.name,
        created_at=now,
        updated_at=now,
        finished_at=now,
    )
    session.add(campaign)
    session.flush()  # the id goes into every contact row
    wave = CampaignWave(
        campaign_id=campaign.id,
        kind=WaveKind.IMPORTED.value,
        share_bp=10_000,
        status="done",
        planned=len(rows),
        created_by=actor.name,
        created_at=now,
        started_at=min(r.contacted_at for r in rows),
        finished_at=now,
    )
    session.add(wave)
    session.flush()
    repo.insert_rows(
        session,
        CampaignContact,
        (
            {
                "campaign_id": campaign.id,
                "wave_id": wave.id,
                "subscriber_id": kept[r.subscriber_id][0],
                "import_source": kept[r.subscriber_id][1],
                "province_code": kept[r.subscriber_id][2],
                "cell": r.cell.value,
                "variant": r.variant,
                "channel": "import",
                "status": (
                    ContactStatus.HELD if r.cell == Cell.CONTROL else ContactStatus.DELIVERED
                ).value,
                "attempts": 0 if r.cell == Cell.CONTROL else 1,
                "contacted_at": r.contacted_at,
            }
            for r in rows
        ),
    )
    ids = repo.contact_ids(session, campaign_id=campaign.id)
    responded = [r for r in rows if r.responded]
    repo.insert_rows(
        session,
        CampaignResponse,
        (
            {
                "campaign_id": campaign.id,
                "contact_id": ids[kept[r.subscriber_id][0]],
                "subscriber_id": kept[r.subscriber_id][0],
                "import_source": kept[r.subscriber_id][1],
                "cell": r.cell.value,
                "variant": r.variant,
                "kind": "import",
                "value_fen": r.revenue_fen or 0,
                "responded_at": r.contacted_at,
                "source": "import",
                "idempotency_key": f"import:{campaign.id}:{kept[r.subscriber_id][0]}",
            }
            for r in responded
        ),
    )
    org.record_audit(
        session,
        actor=actor,
        action="campaign.import_history",
        target_type="campaign",
        target_id=str(campaign.id),
        details={
            "name": name,
            "source": source,
            "rows": len(rows),
            "matched": len(links),
            "responses": len(responded),
        },
    )
    return campaign


@dataclass(frozen=True)
class ImportSummary:
    """What an imported campaign holds: rows, how many matched our subscribers, responses."""

    contacts: int
    matched: int
    responses: int
    revenue_fen: int
    first_contact_at: datetime | None
    last_contact_at: datetime | None


def import_summary(session: Session, *, actor: Actor, campaign_id: int) -> ImportSummary:
    """Counts of an imported campaign's history, for its page."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    contacts, matched, first, last = repo.import_counts(session, campaign_id=campaign_id)
    responses, revenue = repo.response_totals(session, campaign_id=campaign_id)
    return ImportSummary(
        contacts=contacts,
        matched=matched,
        responses=responses,
        revenue_fen=revenue,
        first_contact_at=first,
        last_contact_at=last,
    )
