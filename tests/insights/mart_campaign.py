"""A finished campaign in the ledger whose subscribers have a profile and monthly bills in the mart.

Seeded: subscribers with a higher pre-period bill respond more often in either cell (so the bill
predicts the outcome), and targets respond more often than controls. ``rows`` keeps what each
subscriber got, for computing the expected figures independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from sqlalchemy.orm import Session

from perkflow.audience import marts
from perkflow.campaigns.models import Campaign, CampaignContact, CampaignResponse, CampaignWave
from perkflow.insights import service as insights
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
PRE_MONTHS = (date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1))
CAMPAIGN_MONTH = date(2026, 3, 1)  # in the campaign's own month: not the pre-period
FEES = (19, 39, 59, 99, 129, 199)
LEVELS = ("responsive", "active", "low_active", "silent")


@dataclass(frozen=True)
class Built:
    campaign: Campaign
    mart: Mart
    cell: list[str]
    bill: list[float | None]  # mean pre-period bill, None without one
    responded: list[int]
    fee: list[int | None]
    level: list[str | None]


def build(
    session: Session,
    mart_root: Path,
    *,
    targets: int = 600,
    controls: int = 300,
    seed: int = 7,
    without_bills: int = 20,
    without_profile: int = 10,
) -> Built:
    rng = np.random.default_rng(seed)
    n = targets + controls
    now = datetime(2026, 3, 1, tzinfo=UTC)
    campaign = Campaign(
        name="Data pack for heavy users",
        kind="batch",
        status="finished",
        goal={"kind": "claim", "window_days": 14},
        offer={"kind": "none"},
        variants=[{"key": "A", "channel": "sms"}],
        schedule={},
        throttle={},
        control_share_bp=3_333,
        salt="s",
        created_by="test",
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    wave = CampaignWave(
        campaign_id=campaign.id,
        kind="rollout",
        share_bp=10_000,
        status="done",
        created_by="test",
        created_at=T0,
    )
    session.add(wave)
    session.flush()
    cells = ["target"] * targets + ["control"] * controls
    bill = rng.lognormal(4.3, 0.5, n)
    propensity = 1 / (1 + np.exp(-(-2.2 + 1.6 * (np.log(bill) - 4.3) / 0.5)))
    lift = np.where(np.array(cells) == "target", 0.08, 0.0)
    responded = (rng.random(n) < np.minimum(propensity + lift, 1.0)).astype(int)
    contacts = [
        CampaignContact(
            campaign_id=campaign.id,
            wave_id=wave.id,
            subscriber_id=i + 1,
            cell=cells[i],
            variant="A",
            channel="sms",
            province_code="GD",
            status="held" if cells[i] == "control" else "delivered",
            contacted_at=T0,
        )
        for i in range(n)
    ]
    session.add_all(contacts)
    session.flush()
    session.add_all(
        CampaignResponse(
            campaign_id=campaign.id,
            contact_id=contacts[i].id,
            subscriber_id=i + 1,
            cell=cells[i],
            variant="A",
            kind="claim",
            value_fen=0,
            responded_at=T0 + timedelta(days=1),
            source="ledger",
            idempotency_key=f"k:{campaign.id}:{i + 1}",
        )
        for i in range(n)
        if responded[i]
    )
    session.flush()

    mart = Mart(mart_root)
    insights.sync_history(session, actor=SYSTEM, mart=mart)
    # The last `without_bills` subscribers have no pre-period month; the campaign month's bill
    # (huge) must not count for anyone.
    has_bill = [i < n - without_bills for i in range(n)]
    usage: dict[str, list[object]] = {"subscriber_id": [], "month": [], "bill_yuan": []}
    for i in range(n):
        months = list(PRE_MONTHS) if has_bill[i] else []
        for k, month in enumerate(months):
            usage["subscriber_id"].append(i + 1)
            usage["month"].append(month)
            # Months scattered around the mean, so the mean of the three is bill[i].
            usage["bill_yuan"].append(float(bill[i]) + (k - 1) * 3.0)
        usage["subscriber_id"].append(i + 1)
        usage["month"].append(CAMPAIGN_MONTH)
        usage["bill_yuan"].append(10_000.0)
    mart.write(
        "usage_monthly",
        pa.table(
            {
                "subscriber_id": pa.array(usage["subscriber_id"], pa.int64()),
                "month": pa.array(usage["month"], pa.date32()),
                "data_mb": pa.array([1.0] * len(usage["month"]), pa.float32()),
                "voice_min": pa.array([1.0] * len(usage["month"]), pa.float32()),
                "bill_yuan": pa.array(usage["bill_yuan"], pa.float32()),
            }
        ),
    )
    fee = [FEES[i % len(FEES)] if i >= without_profile else None for i in range(n)]
    level = [LEVELS[(i // 2) % len(LEVELS)] if i >= without_profile else None for i in range(n)]
    profiled = [i for i in range(n) if i >= without_profile]
    mart.write(
        marts.PROFILE,
        pa.table(
            {
                "subscriber_id": pa.array([i + 1 for i in profiled], pa.int64()),
                "province_code": pa.array(["GD"] * len(profiled)).dictionary_encode(),
                "plan_fee_yuan": pa.array([fee[i] for i in profiled], pa.int32()),
                "activity_level": pa.array([level[i] for i in profiled]).dictionary_encode(),
            }
        ),
    )
    # float32 storage: the engine reads the stored values, so the expectation does too.
    stored = np.asarray(usage["bill_yuan"], dtype=np.float32).astype(float)
    means: list[float | None] = []
    j = 0
    for i in range(n):
        k = len(PRE_MONTHS) if has_bill[i] else 0
        means.append(float(stored[j : j + k].mean()) if k else None)
        j += k + 1
    return Built(campaign, mart, cells, means, responded.tolist(), fee, level)
