"""The wizard's form and a campaign spec both ways: fields to a raw spec, a campaign to fields."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from perkflow.audience import service as audience
from perkflow.campaigns import rules
from perkflow.campaigns.models import Campaign
from perkflow.catalog import service as catalog
from perkflow.coupons import service as coupons
from perkflow.errors import NotFound, PerkflowError
from perkflow.kit.money import parse_yuan
from perkflow.mart import Mart
from perkflow.web.auth import StaffContext
from perkflow.web.i18n import l_


def _column_kinds(mart: Mart) -> dict[str, str]:
    try:
        return {name: spec.kind.value for name, spec in audience.profile_columns(mart).items()}
    except NotFound:
        return {}


def _scalar(text: str, kind: str | None) -> Any:
    """A typed match value: numbers for numeric columns (or when unknown and it reads as one)."""
    text = text.strip()
    if kind in ("integer", "number", None):
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    return text


def _int_or_text(text: str) -> int | str | None:
    """A whole number, or the text as typed so the spec check names the field."""
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


def _local_iso(text: str, zone: str) -> str | None:
    """A `datetime-local` value read in the operator's zone, as an ISO time with offset."""
    text = text.strip()
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        return text  # the spec check reports it against the field
    if naive.tzinfo is None:
        naive = naive.replace(tzinfo=ZoneInfo(zone))
    return naive.isoformat()


def _slots(text: str) -> list[list[str]]:
    """`09:00-12:00, 14:00-18:00` as pairs; a malformed piece stays whole for the spec check."""
    out = []
    for piece in text.replace("，", ",").split(","):
        piece = piece.strip()
        if not piece:
            continue
        start, sep, end = piece.partition("-")
        out.append([start.strip(), end.strip()] if sep else [piece])
    return out


def _variants_of(form: FormData) -> list[dict[str, str]]:
    """The variant rows as typed (browsers send one value per field of each row, in order)."""
    names = (
        "key",
        "channel",
        "locale",
        "subject",
        "body",
        "match_column",
        "match_op",
        "match_value",
    )
    columns = {n: [str(v) for v in form.getlist(f"v_{n}")] for n in names}
    rows = max((len(v) for v in columns.values()), default=0)
    out = []
    for i in range(rows):
        row = {n: (columns[n][i] if i < len(columns[n]) else "") for n in names}
        if not any(row[n].strip() for n in ("key", "subject", "body", "match_column")):
            continue  # an untouched extra row
        out.append(row)
    return out


def form_of_post(form: FormData) -> dict[str, Any]:
    """The wizard's fields as typed, to show again with its errors."""
    text = {k: str(v) for k, v in form.items() if k != "csrf_token"}
    return {
        **text,
        "variants": _variants_of(form),
        "weekdays": [int(str(d)) for d in form.getlist("weekdays") if str(d).isdigit()],
        "skip_holidays": form.get("skip_holidays") == "on",
        "trigger_events": [str(e) for e in form.getlist("trigger_events")],
        "throttle": {ch: str(form.get(f"throttle_{ch}") or "") for ch in rules.CAMPAIGN_CHANNELS},
    }


def raw_spec(
    session: Session, *, staff: StaffContext, mart: Mart, form: dict[str, Any], zone: str
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The campaign spec a wizard form describes, and the problems found before the spec check."""
    problems: list[dict[str, str]] = []
    kinds = _column_kinds(mart)
    variants = []
    for i, v in enumerate(form.get("variants") or []):
        match = None
        column = v.get("match_column", "").strip()
        if column:
            op = v.get("match_op") or "="
            raw_value = v.get("match_value", "")
            value: Any
            if op in ("in", "not_in"):
                value = [
                    _scalar(p, kinds.get(column))
                    for p in raw_value.replace("，", ",").split(",")
                    if p.strip()
                ]
            else:
                value = _scalar(raw_value, kinds.get(column)) if raw_value.strip() else None
            match = [{"column": column, "op": op, "value": value}]
        variants.append(
            {
                "key": v.get("key", "").strip() or chr(ord("A") + i),
                "channel": v.get("channel", ""),
                "locale": v.get("locale") or rules.DEFAULT_LOCALE,
                "subject": v.get("subject", ""),
                "body": v.get("body", ""),
                "match": match,
            }
        )
    offer: dict[str, Any] = {"kind": "none"}
    choice = str(form.get("offer") or "none")
    kind, _, ident = choice.partition(":")
    if kind in ("coupon_batch", "benefit") and ident.isdigit():
        offer = {"kind": kind, "id": int(ident)}
        default_cost, category = _offer_facts(session, staff=staff, kind=kind, ident=int(ident))
        if category:
            offer["category"] = category
        cost_text = str(form.get("offer_cost_yuan") or "").strip()
        if cost_text:
            try:
                offer["cost_fen"] = parse_yuan(cost_text)
            except ValueError:
                problems.append({"path": "offer.cost_fen", "message": l_("an amount in yuan")})
        elif default_cost is not None:
            offer["cost_fen"] = default_cost
    elif choice != "none":
        problems.append({"path": "offer.id", "message": l_("pick an offer from the list")})
    name = str(form.get("offer_name") or "").strip()
    if name:
        offer["name"] = name
    budget_fen: int | None = None
    budget_text = str(form.get("budget_yuan") or "").strip()
    if budget_text:
        try:
            budget_fen = parse_yuan(budget_text)
        except ValueError:
            problems.append({"path": "budget_fen", "message": l_("an amount in yuan, like 5000")})
    throttle: dict[str, Any] = {}
    for ch, rate in (form.get("throttle") or {}).items():
        value = _int_or_text(str(rate))
        if value is not None:
            throttle[ch] = value
    trigger = None
    if form.get("kind") == "trigger":
        trigger = {"events": list(form.get("trigger_events") or [])}
    segment = str(form.get("segment_id") or "").strip()
    raw: dict[str, Any] = {
        "name": str(form.get("name") or ""),
        "segment_id": int(segment) if segment.isdigit() else None,
        "goal": {
            "kind": form.get("goal_kind") or "",
            "window_days": _int_or_text(str(form.get("window_days") or "")),
        },
        "offer": offer,
        "variants": variants,
        "schedule": {
            "starts_at": _local_iso(str(form.get("starts_at") or ""), zone),
            "ends_at": _local_iso(str(form.get("ends_at") or ""), zone),
            "weekdays": list(form.get("weekdays") or []),
            "slots": _slots(str(form.get("slots") or "")),
            "skip_holidays": bool(form.get("skip_holidays")),
        },
        "control_share": str(form.get("control_percent") or "0"),
        "test_share": str(form.get("test_percent") or "0") if trigger is None else "0",
        "throttle": throttle,
        "budget_fen": budget_fen,
        "stock_cap": _int_or_text(str(form.get("stock_cap") or "")),
        "trigger": trigger,
    }
    if raw["goal"]["window_days"] is None:
        raw["goal"]["window_days"] = 0  # empty: the spec check says what is allowed
    return raw, problems


def _offer_facts(
    session: Session, *, staff: StaffContext, kind: str, ident: int
) -> tuple[int | None, str | None]:
    """The offer's cost per taker in fen and its category, when the actor may see it."""
    try:
        if kind == "benefit":
            benefit = catalog.get_benefit(session, benefit_id=ident)
            return benefit.cost_price_fen, benefit.category
        batch = coupons.get_batch(session, actor=staff.actor, batch_id=ident)
        return batch.amount_fen or None, None
    except PerkflowError:
        return None, None  # the spec check reports an unknown or hidden offer


def form_of_campaign(campaign: Campaign, zone: str) -> dict[str, Any]:
    """A stored campaign as the wizard's fields."""
    tz = ZoneInfo(zone)

    def local(iso: str | None) -> str:
        if not iso:
            return ""
        return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%dT%H:%M")

    def yuan(fen: int | None) -> str:
        return "" if fen is None else f"{fen / 100:.2f}"

    offer = campaign.offer or {}
    schedule = campaign.schedule or {}
    variants = []
    for v in campaign.variants or []:
        match = (v.get("match") or [{}])[0]
        value = match.get("value")
        variants.append(
            {
                "key": v.get("key", ""),
                "channel": v.get("channel", ""),
                "locale": v.get("locale", rules.DEFAULT_LOCALE),
                "subject": v.get("subject", ""),
                "body": v.get("body", ""),
                "match_column": match.get("column", ""),
                "match_op": match.get("op", "="),
                "match_value": (
                    ", ".join(map(str, value))
                    if isinstance(value, list)
                    else ("" if value is None else str(value))
                ),
            }
        )
    return {
        "name": campaign.name,
        "kind": "trigger" if campaign.trigger else "batch",
        "goal_kind": (campaign.goal or {}).get("kind", "claim"),
        "window_days": str((campaign.goal or {}).get("window_days", 14)),
        "segment_id": str(campaign.segment_id or ""),
        "control_percent": f"{campaign.control_share_bp / 100:g}",
        "test_percent": f"{campaign.test_share_bp / 100:g}",
        "offer": (
            f"{offer.get('kind')}:{offer.get('id')}"
            if offer.get("kind") in ("coupon_batch", "benefit")
            else "none"
        ),
        "offer_cost_yuan": yuan(offer.get("cost_fen")) if offer.get("kind") != "none" else "",
        "offer_name": offer.get("name", ""),
        "variants": variants,
        "starts_at": local(schedule.get("starts_at")),
        "ends_at": local(schedule.get("ends_at")),
        "weekdays": list(schedule.get("weekdays") or range(1, 8)),
        "slots": ", ".join(f"{a}-{b}" for a, b in schedule.get("slots") or []),
        "skip_holidays": bool(schedule.get("skip_holidays")),
        "throttle": {
            ch: str((campaign.throttle or {}).get(ch, "")) for ch in rules.CAMPAIGN_CHANNELS
        },
        "budget_yuan": yuan(campaign.budget_fen),
        "stock_cap": "" if campaign.stock_cap is None else str(campaign.stock_cap),
        "trigger_events": list((campaign.trigger or {}).get("events") or []),
    }


def _defaults() -> dict[str, Any]:
    return {
        "name": "",
        "kind": "batch",
        "goal_kind": "claim",
        "window_days": "14",
        "segment_id": "",
        "control_percent": "10",
        "test_percent": "5",
        "offer": "none",
        "offer_cost_yuan": "",
        "offer_name": "",
        "variants": [],
        "starts_at": "",
        "ends_at": "",
        "weekdays": list(range(1, 8)),
        "slots": "",
        "skip_holidays": False,
        "throttle": {ch: "" for ch in rules.CAMPAIGN_CHANNELS},
        "budget_yuan": "",
        "stock_cap": "",
        "trigger_events": [],
    }


def _errors_of(exc: PerkflowError) -> list[dict[str, str]]:
    errors = exc.details.get("errors") if exc.details else None
    if errors:
        return [{"path": str(e["path"]), "message": str(e["message"])} for e in errors]
    return [{"path": exc.field or "", "message": exc.message}]


def _row_errors(errors: Sequence[dict[str, str]], rows: int) -> list[dict[str, str]]:
    """Per variant row: field (key, channel, subject, body, match) → first message."""
    out: list[dict[str, str]] = [{} for _ in range(rows)]
    for e in errors:
        path = e["path"]
        if not path.startswith("variants["):
            continue
        index, _, rest = path[len("variants[") :].partition("]")
        if not index.isdigit() or int(index) >= rows:
            continue
        field = rest.lstrip(".").split(".")[0].split("[")[0] or "row"
        out[int(index)].setdefault(field, e["message"])
    return out
