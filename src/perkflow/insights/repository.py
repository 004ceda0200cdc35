"""Queries over the mart's contact and response history (Ibis, set-based, any backend)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from perkflow.audience import marts
from perkflow.insights.rules import TIME_SLOTS
from perkflow.kit.lazy import lazy_module

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")


def features_schema(channels: Sequence[str], categories: Sequence[str]) -> pa.Schema:
    """Columns of the mart table ``response_features``: one row per subscriber."""
    rates = [f"rate_{c}" for c in channels]
    rates += [f"rate_{name}" for name, _, _ in TIME_SLOTS]
    rates += [f"affinity_{c}" for c in categories]
    return pa.schema(
        [
            pa.field("subscriber_id", pa.int64(), nullable=False),
            pa.field("contacts_total", pa.int64(), nullable=False),
            pa.field("responses_total", pa.int64(), nullable=False),
            pa.field("response_rate", pa.float64()),
            *[pa.field(name, pa.float64()) for name in rates],
            pa.field("contacts_30d", pa.int64(), nullable=False),
            pa.field("last_contact_at", marts.UTC_TS),
            pa.field("last_response_at", marts.UTC_TS),
            pa.field("computed_at", marts.UTC_TS, nullable=False),
        ]
    )


def _rate(hits: Any, n: Any) -> Any:
    return hits.cast("float64") / n.nullif(0).cast("float64")


def response_features(
    contacts: Any,
    responses: Any,
    offers: Any,
    *,
    channels: Sequence[str],
    categories: Sequence[str],
    utc_offset_hours: int,
    as_of: datetime,
) -> Any:
    """Per-subscriber responsiveness from contact/response history, as one Ibis expression.

    A contact counts as answered when the subscriber responded to the same campaign at or after
    it. Only target-cell contacts are messages, so only they measure responsiveness and fatigue;
    the last response counts any response (a control subscriber's too).
    """
    first = responses.group_by(["subscriber_id", "campaign_id"]).aggregate(
        first_at=responses.responded_at.min()
    )
    sent = contacts.filter(contacts.cell == "target")
    joined = sent.left_join(
        first,
        [sent.subscriber_id == first.subscriber_id, sent.campaign_id == first.campaign_id],
    ).select(sent.subscriber_id, sent.campaign_id, sent.channel, sent.contacted_at, first.first_at)
    categories_of = offers.select(offer_campaign=offers.campaign_id, category=offers.category)
    joined = joined.left_join(
        categories_of, joined.campaign_id == categories_of.offer_campaign
    ).drop("offer_campaign")
    hour = (joined.contacted_at.hour() + utc_offset_hours) % 24
    answered = joined.first_at.notnull() & (joined.first_at >= joined.contacted_at)
    slot_cases = []
    for name, start, end in TIME_SLOTS:
        inside = (hour >= start) & (hour < end) if start < end else (hour >= start) | (hour < end)
        slot_cases.append((inside, name))
    t = joined.mutate(
        answered=answered.cast("int64"),
        slot=ibis.cases(*slot_cases, else_="night"),
    )
    since = as_of - timedelta(days=30)
    metrics: dict[str, Any] = {
        "contacts_total": t.count(),
        "responses_total": t.answered.sum(),
        "contacts_30d": (
            (t.contacted_at > ibis.timestamp(since)) & (t.contacted_at <= ibis.timestamp(as_of))
        )
        .cast("int64")
        .sum(),
        "last_contact_at": t.contacted_at.max(),
    }
    groups: list[tuple[str, Any]] = [(f"rate_{c}", t.channel == c) for c in channels]
    groups += [(f"rate_{name}", t.slot == name) for name, _, _ in TIME_SLOTS]
    groups += [(f"affinity_{c}", t.category == c) for c in categories]
    for name, cond in groups:
        metrics[f"{name}__n"] = cond.cast("int64").sum()
        metrics[f"{name}__hits"] = (cond & (t.answered == 1)).cast("int64").sum()
    per_sub = t.group_by("subscriber_id").aggregate(**metrics)
    last = responses.group_by("subscriber_id").aggregate(
        last_response_at=responses.responded_at.max()
    )
    # Cast: an empty in-memory history declares its ids NOT NULL, a Parquet file does not.
    ids = per_sub.select(subscriber_id=per_sub.subscriber_id.cast("int64")).union(
        last.select(subscriber_id=last.subscriber_id.cast("int64")), distinct=True
    )
    out = ids.left_join(per_sub, "subscriber_id").left_join(last, "subscriber_id")
    columns: dict[str, Any] = {
        "subscriber_id": out.subscriber_id,
        "contacts_total": out.contacts_total.fill_null(0),
        "responses_total": out.responses_total.fill_null(0),
        "response_rate": _rate(out.responses_total, out.contacts_total),
    }
    for name, _ in groups:
        columns[name] = _rate(out[f"{name}__hits"], out[f"{name}__n"])
    columns["contacts_30d"] = out.contacts_30d.fill_null(0)
    columns["last_contact_at"] = out.last_contact_at
    columns["last_response_at"] = out.last_response_at
    columns["computed_at"] = ibis.timestamp(as_of)
    return out.select(**columns).order_by("subscriber_id")
