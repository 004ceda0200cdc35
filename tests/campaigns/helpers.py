"""Campaign test scaffolding: a small mart, a segment, a campaign taken through approval."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience import service as audience
from perkflow.campaigns import service as campaigns
from perkflow.campaigns import tasks
from perkflow.campaigns.models import Campaign, CampaignContact
from perkflow.channels.inbox import InAppChannel
from perkflow.channels.rules import Channel
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM, Actor, Role
from perkflow.settings import Settings
from tests.audience.helpers import profile

# Monday 2 November 2026, 10:00 in Beijing: a working day, outside every quiet hour.
NOW = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


def staff(role: Role, scope: str = "CN", name: str = "someone") -> Actor:
    return Actor(kind="staff", id=name, name=name, role=role, scope_path=scope)


HQ = staff(Role.HQ_ADMIN, name="hq")
HQ2 = staff(Role.HQ_ADMIN, name="hq2")
GD = staff(Role.PROVINCE_MARKETER, "CN/GD", "gd")
ANALYST = staff(Role.ANALYST, name="analyst")


def write_profile(mart: Mart, n: int, *, first_id: int = 1) -> list[int]:
    """n subscribers: odd ids on a 129-yuan plan in GD, even ids on 59 yuan in ZJ."""
    rows: list[dict[str, Any]] = []
    for i in range(first_id, first_id + n):
        rows.append(
            {
                "subscriber_id": i,
                "province_code": "GD" if i % 2 else "ZJ",
                "city_code": "GD01" if i % 2 else "ZJ01",
                "plan_fee_yuan": 129 if i % 2 else 59,
            }
        )
    profile(mart, rows)
    return [r["subscriber_id"] for r in rows]


def spec(segment_id: int | None, **over: Any) -> dict[str, Any]:
    """An in-app campaign: variant A for big plans, B for everyone else."""
    raw: dict[str, Any] = {
        "name": "Video month for big plans",
        "segment_id": segment_id,
        "goal": {"kind": "claim", "window_days": 7},
        "offer": {"kind": "none", "name": "视频会员月卡"},
        "variants": [
            {
                "key": "A",
                "channel": "in_app",
                "subject": "{{ offer_name }}",
                "body": "Your {{ plan_fee_yuan }}-yuan plan in {{ province }} earns a gift",
                "match": [{"column": "plan_fee_yuan", "op": ">=", "value": 100}],
            },
            {"key": "B", "channel": "in_app", "subject": "Hello", "body": "A gift for you"},
        ],
        "control_share": 10,
        "test_share": 0,
    }
    raw.update(over)
    return raw


def everyone(session: Session, mart: Mart) -> int:
    """A segment of every subscriber (no universal control held out), committed."""
    audience.set_universal_control(session, actor=SYSTEM, share_bp=0, rotation_days=90)
    seg = audience.create_segment(session, mart=mart, actor=HQ, name="Everyone", raw={})
    session.commit()
    return seg.id


def approved(session: Session, mart: Mart, raw: dict[str, Any]) -> Campaign:
    """A campaign created by hq, approved by hq2, committed."""
    c = campaigns.create_campaign(session, actor=HQ, mart=mart, raw=raw)
    campaigns.submit_campaign(session, actor=HQ, campaign_id=c.id)
    c = campaigns.approve_campaign(session, actor=HQ2, campaign_id=c.id)
    session.commit()
    return c


def started(session: Session, mart: Mart, vault: Vault, raw: dict[str, Any]) -> Campaign:
    c = approved(session, mart, raw)
    c = campaigns.start_campaign(session, actor=HQ, mart=mart, vault=vault, campaign_id=c.id)
    session.commit()
    return c


def dispatcher(
    vault: Vault, settings: Settings, channels: dict[str, Channel] | None = None, **kw: Any
) -> tasks.Dispatcher:
    return tasks.Dispatcher(
        channels=channels if channels is not None else {"in_app": InAppChannel()},
        vault=vault,
        settings=settings,
        **kw,
    )


def run(
    sessions: sessionmaker[Session], d: tasks.Dispatcher, mart: Mart, **kw: Any
) -> tasks.WorkerReport:
    return tasks.run_worker(sessions, d, mart=mart, idle_s=0.01, **kw)


def contacts(session: Session, campaign_id: int) -> Sequence[CampaignContact]:
    return session.scalars(
        select(CampaignContact)
        .where(CampaignContact.campaign_id == campaign_id)
        .order_by(CampaignContact.subscriber_id)
        .execution_options(populate_existing=True)
    ).all()
