"""Campaign use cases: lists, the approval queue, waves and a run's progress."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from perkflow.audience import service as audience
from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns.models import (
    Campaign,
    CampaignWave,
)
from perkflow.campaigns.rules import (
    CampaignStatus,
)
from perkflow.errors import ValidationFailed
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Perm

from .access import _require_read, _require_staff, get_campaign


def list_campaigns(
    session: Session,
    *,
    actor: Actor,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[Sequence[Campaign], int]:
    """A page of the campaigns the actor may see, newest first."""
    _require_read(actor)
    if status is not None and status not in {s.value for s in CampaignStatus}:
        raise ValidationFailed(f"unknown status {status!r}", field="status")
    return repo.campaigns_page(
        session,
        province=org.visible_province(actor),
        status=status,
        offset=offset,
        limit=min(max(limit, 1), 500),
    )


def approval_queue(session: Session, *, actor: Actor) -> Sequence[Campaign]:
    """Submitted campaigns the actor may approve (not their own)."""
    _require_staff(actor, Perm.CAMPAIGNS_APPROVE)
    rows, _ = repo.campaigns_page(
        session,
        province=org.visible_province(actor),
        status=CampaignStatus.PENDING_APPROVAL.value,
        offset=0,
        limit=500,
    )
    return [c for c in rows if actor.name not in (c.created_by, c.submitted_by)]


def list_waves(session: Session, *, actor: Actor, campaign_id: int) -> Sequence[CampaignWave]:
    """A campaign's waves, oldest first."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.waves_of(session, campaign_id)


@dataclass(frozen=True)
class Failure:
    contact_id: int
    subscriber_id: int
    channel: str
    attempts: int
    error: str | None


@dataclass(frozen=True)
class WaveProgress:
    """Where one wave stands."""

    wave_id: int
    kind: str
    status: str
    share_bp: int
    planned: int
    by_status: dict[str, int]
    sent_by_channel: dict[str, int]
    suppressed: dict[str, int]  # dispatch-time suppressions by reason
    failures: list[Failure]

    @property
    def open(self) -> int:
        return sum(self.by_status.get(s.value, 0) for s in rules.OPEN)

    @property
    def done(self) -> int:
        return sum(self.by_status.values()) - self.open


@dataclass(frozen=True)
class Progress:
    """A campaign's run: its waves and why members were left out."""

    campaign_id: int
    status: str
    target_list_id: int | None
    list_reasons: dict[str, int]  # from the target list (policy before the split)
    waves: list[WaveProgress]

    @property
    def suppressed(self) -> dict[str, int]:
        """Every reason, from the list and from dispatch, summed."""
        total = dict(self.list_reasons)
        for w in self.waves:
            for reason, n in w.suppressed.items():
                total[reason] = total.get(reason, 0) + n
        return total


def run_progress(session: Session, *, actor: Actor, campaign_id: int) -> Progress:
    """Planned, sent per channel, suppressed by reason and recent failures of every wave."""
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    reasons: dict[str, int] = {}
    if campaign.target_list_id is not None:
        tl = audience.get_target_list(session, actor=SYSTEM, target_list_id=campaign.target_list_id)
        reasons = dict(tl.reasons or {})
        if tl.universal_control:
            reasons["universal_control"] = tl.universal_control
    waves = [
        WaveProgress(
            wave_id=w.id,
            kind=w.kind,
            status=w.status,
            share_bp=w.share_bp,
            planned=w.planned,
            by_status=repo.count_by_status(session, wave_id=w.id),
            sent_by_channel=repo.sent_by_channel(session, wave_id=w.id),
            suppressed=repo.reasons_of(session, wave_id=w.id),
            failures=[
                Failure(c.id, c.subscriber_id, c.channel, c.attempts, c.error)
                for c in repo.recent_failures(session, wave_id=w.id, limit=20)
            ],
        )
        for w in repo.waves_of(session, campaign.id)
    ]
    return Progress(
        campaign_id=campaign.id,
        status=campaign.status,
        target_list_id=campaign.target_list_id,
        list_reasons=reasons,
        waves=waves,
    )
