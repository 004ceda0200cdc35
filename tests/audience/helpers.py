"""Mart data for audience tests: synthetic profiles and hand-built scenarios."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pyarrow as pa

from perkflow.audience import marts
from perkflow.insights import repository as insights_repo
from perkflow.insights import service as insights
from perkflow.mart import Mart
from perkflow.org.service import load_region_data
from perkflow.synth import rules as synth

PROFILE_DEFAULTS: dict[str, Any] = {
    "province_code": "GD",
    "city_code": "GD01",
    "plan_fee_yuan": 79,
    "arpu_yuan": 80.0,
    "data_mb": 8000.0,
    "voice_min": 120.0,
    "tenure_months": 24,
    "device_tier": "mid",
    "age_band": "25-34",
    "gender": "female",
    "interest_video": 0.5,
    "interest_music": 0.5,
    "interest_reading": 0.5,
    "interest_games": 0.5,
    "primary_interest": "video",
    "activity_level": "active",
    "churn_risk": 0.1,
    "status": "active",
    "joined_on": date(2024, 10, 1),
}


def synthetic_profile(mart: Mart, n: int, seed: int = 5) -> pa.Table:
    """Write the synthetic operator's profile (mart only, no ledger) and return it."""
    generated = synth.generate(n, seed, load_region_data())
    mart.write(marts.PROFILE, generated.subscriber_profile)
    return generated.subscriber_profile


def profile(mart: Mart, rows: list[dict[str, Any]]) -> pa.Table:
    """Write a hand-built profile: each row names its subscriber_id and what differs."""
    full = [{"subscriber_id": r["subscriber_id"], **PROFILE_DEFAULTS, **r} for r in rows]
    schema = pa.schema(
        [
            ("subscriber_id", pa.int64()),
            ("province_code", pa.string()),
            ("city_code", pa.string()),
            ("plan_fee_yuan", pa.int32()),
            ("arpu_yuan", pa.float32()),
            ("data_mb", pa.float32()),
            ("voice_min", pa.float32()),
            ("tenure_months", pa.int32()),
            ("device_tier", pa.string()),
            ("age_band", pa.string()),
            ("gender", pa.string()),
            ("interest_video", pa.float32()),
            ("interest_music", pa.float32()),
            ("interest_reading", pa.float32()),
            ("interest_games", pa.float32()),
            ("primary_interest", pa.string()),
            ("activity_level", pa.string()),
            ("churn_risk", pa.float32()),
            ("status", pa.string()),
            ("joined_on", pa.date32()),
        ]
    )
    table = pa.Table.from_pylist(full, schema=schema)
    mart.write(marts.PROFILE, table)
    return table


def contacts(mart: Mart, rows: list[tuple[int, str, datetime]], campaign: str = "C1") -> None:
    """Add (subscriber, channel, contacted_at) rows to the contact history."""
    marts.append_contacts(
        mart,
        marts.rows_table(
            [
                {
                    "subscriber_id": sid,
                    "campaign_id": campaign,
                    "channel": channel,
                    "cell": "target",
                    "contacted_at": at,
                    "target_list_id": None,
                }
                for sid, channel, at in rows
            ],
            marts.CONTACT_HISTORY_SCHEMA,
        ),
    )


def responses(mart: Mart, rows: list[tuple[int, str, datetime]]) -> None:
    """Add (subscriber, campaign, responded_at) rows to the response history."""
    marts.append_responses(
        mart,
        marts.rows_table(
            [
                {
                    "subscriber_id": sid,
                    "campaign_id": campaign,
                    "channel": "sms",
                    "kind": "claim",
                    "responded_at": at,
                    "value_fen": 100,
                }
                for sid, campaign, at in rows
            ],
            marts.RESPONSE_HISTORY_SCHEMA,
        ),
    )


def snapshot(mart: Mart, table_name: str) -> dict[int, tuple[str, str | None]]:
    """subscriber_id -> (cell, reason) of a target list's snapshot."""
    rows = mart.table(table_name).to_pyarrow().to_pylist()
    return {r["subscriber_id"]: (r["cell"], r["reason"]) for r in rows}


def features(mart: Mart, rows: list[dict[str, Any]], *, at: datetime) -> pa.Table:
    """Write `response_features` as the write-back would: each row names what is not null."""
    schema = insights_repo.features_schema(insights.FEATURE_CHANNELS, insights.FEATURE_CATEGORIES)
    base = {"contacts_total": 0, "responses_total": 0, "contacts_30d": 0, "computed_at": at}
    table = pa.Table.from_pylist([{**base, **r} for r in rows], schema=schema)
    mart.write(insights.RESPONSE_FEATURES, table)
    return table
