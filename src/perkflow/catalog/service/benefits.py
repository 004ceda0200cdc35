"""Benefit SKUs: create, update, list and delist, stock, and the console home's stock alerts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import repository as repo
from perkflow.catalog import rules
from perkflow.catalog.models import Benefit
from perkflow.catalog.rules import (
    BenefitStatus,
    FulfilmentKind,
    ValidityKind,
    lifecycle_problem,
)
from perkflow.catalog.schemas import BenefitCreate, BenefitUpdate
from perkflow.errors import Conflict, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from ._common import (
    DEFAULT_ZONE,
    _partner_limit,
    _refuse,
    _require_read,
    _text,
)


def get_benefit(session: Session, *, benefit_id: int) -> Benefit:
    """A benefit by id, or 404."""
    benefit = repo.get_benefit(session, benefit_id)
    if benefit is None:
        raise NotFound(f"no benefit {benefit_id}", field="benefit_id")
    return benefit


def _check_benefit(values: dict[str, Any]) -> None:
    """Every rule a benefit's settings must keep, each refusal naming its field."""
    for field in ("name_zh", "name_en"):
        values[field] = _text(values[field] or "", field=field)
    _refuse(
        rules.price_issue(
            face_value_fen=values["face_value_fen"],
            cost_price_fen=values["cost_price_fen"],
            sale_price_fen=values["sale_price_fen"],
        )
    )
    _refuse(
        rules.validity_issue(
            kind=values["validity_kind"],
            valid_days=values["valid_days"],
            valid_from=values["valid_from"],
            valid_until=values["valid_until"],
        )
    )
    _refuse(
        rules.stock_issue(stock=values["stock"], low_stock_threshold=values["low_stock_threshold"])
    )
    _refuse(
        rules.limits_issue(
            limit_per_month=values["limit_per_month"], limit_total=values["limit_total"]
        )
    )


def create_benefit(session: Session, *, actor: Actor, spec: BenefitCreate) -> Benefit:
    """Add a benefit SKU as a draft; hq_admin only."""
    org.require(actor, Perm.CATALOG_EDIT)
    _refuse(rules.code_issue(spec.code, field="code", pattern=rules.BENEFIT_CODE))
    partner = repo.get_partner_by_code(session, spec.partner_code)
    if partner is None:
        raise ValidationFailed(
            f"partner_code: no partner {spec.partner_code!r}", field="partner_code"
        )
    values = spec.model_dump()
    if spec.fulfilment_kind == FulfilmentKind.CARD_CODE:
        if spec.stock not in (None, 0):
            raise ValidationFailed(
                "stock: a card-code benefit's stock is its pool of codes; import codes instead",
                field="stock",
            )
        values["stock"] = 0  # limited from the start: each unit needs an imported code
    _check_benefit(values)
    now = clock.now()
    benefit = Benefit(
        code=spec.code,
        partner_id=partner.id,
        name_zh=values["name_zh"],
        name_en=values["name_en"],
        category=spec.category.value,
        fulfilment_kind=spec.fulfilment_kind.value,
        face_value_fen=spec.face_value_fen,
        cost_price_fen=spec.cost_price_fen,
        sale_price_fen=spec.sale_price_fen,
        validity_kind=spec.validity_kind.value,
        valid_days=spec.valid_days,
        valid_from=spec.valid_from,
        valid_until=spec.valid_until,
        stock_total=values["stock"],
        stock_remaining=values["stock"],
        low_stock_threshold=spec.low_stock_threshold,
        limit_per_month=spec.limit_per_month,
        limit_total=spec.limit_total,
        revocable=spec.revocable,
        status=BenefitStatus.DRAFT.value,
        created_at=now,
        updated_at=now,
    )
    session.add(benefit)
    try:
        session.flush()  # the unique code decides a duplicate; the id goes into the audit entry
    except IntegrityError as exc:
        raise Conflict(f"benefit code {spec.code!r} is taken", field="code") from exc
    org.record_audit(
        session,
        actor=actor,
        action="benefit.create",
        target_type="benefit",
        target_id=str(benefit.id),
        details={
            "code": benefit.code,
            "partner": partner.code,
            "sale_price_fen": benefit.sale_price_fen,
            "stock": benefit.stock_total,
        },
    )
    return benefit


_EDITABLE = (
    "name_zh",
    "name_en",
    "category",
    "face_value_fen",
    "cost_price_fen",
    "sale_price_fen",
    "validity_kind",
    "valid_days",
    "valid_from",
    "valid_until",
    "low_stock_threshold",
    "limit_per_month",
    "limit_total",
    "revocable",
)
_REQUIRED = frozenset(
    {
        "name_zh",
        "name_en",
        "category",
        "face_value_fen",
        "cost_price_fen",
        "sale_price_fen",
        "validity_kind",
        "low_stock_threshold",
        "revocable",
    }
)


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _jsonable(value: Any) -> Any:
    # Audit details are JSON: dates go in as ISO text.
    value = _plain(value)
    return value.isoformat() if isinstance(value, date) else value


def update_benefit(
    session: Session, *, actor: Actor, benefit_id: int, changes: BenefitUpdate
) -> Benefit:
    """Change a benefit's names, price, validity, stock, limits; only the fields given change."""
    org.require(actor, Perm.CATALOG_EDIT)
    benefit = get_benefit(session, benefit_id=benefit_id)
    given = changes.model_dump(exclude_unset=True)
    for field, value in given.items():
        if value is None and field in _REQUIRED:
            raise ValidationFailed(f"{field}: cannot be empty", field=field)
    current: dict[str, Any] = {f: getattr(benefit, f) for f in _EDITABLE}
    current["stock"] = benefit.stock_total
    current["validity_kind"] = ValidityKind(benefit.validity_kind)
    merged = current | given
    # Switching validity kind clears the other kind's settings unless they were given too.
    if merged["validity_kind"] == ValidityKind.DAYS and "validity_kind" in given:
        for field in ("valid_from", "valid_until"):
            merged[field] = given.get(field)
    elif merged["validity_kind"] == ValidityKind.FIXED and "validity_kind" in given:
        merged["valid_days"] = given.get("valid_days")
    card_code = benefit.fulfilment_kind == FulfilmentKind.CARD_CODE
    if card_code and "stock" in given and given["stock"] != benefit.stock_total:
        raise ValidationFailed(
            "stock: a card-code benefit's stock is its pool of codes; import codes instead",
            field="stock",
        )
    _check_benefit(merged)
    changed = {
        f: [_jsonable(current[f]), _jsonable(merged[f])]
        for f in (*_EDITABLE, "stock")
        if _plain(current[f]) != _plain(merged[f])
    }
    at = clock.now()
    for field in _EDITABLE:
        setattr(benefit, field, _plain(merged[field]))
    benefit.updated_at = at
    session.flush()  # the plain columns land first; the stock statement below is conditional
    if "stock" in changed:
        _change_stock(session, benefit=benefit, new_total=merged["stock"], at=at)
        session.refresh(benefit)
        changed["stock"] = [current["stock"], benefit.stock_total]
    if changed:
        org.record_audit(
            session,
            actor=actor,
            action="benefit.update",
            target_type="benefit",
            target_id=str(benefit.id),
            details={"code": benefit.code, "changed": changed},
        )
    return benefit


def _change_stock(session: Session, *, benefit: Benefit, new_total: int | None, at: Any) -> None:
    """Resize stock atomically: the units grants already took are never given away twice."""
    if new_total is None:
        repo.unlimit_stock(session, benefit_id=benefit.id, at=at)
        return
    if benefit.stock_total is None:
        if repo.limit_stock(session, benefit_id=benefit.id, total=new_total, at=at):
            return
    elif repo.resize_stock(session, benefit_id=benefit.id, new_total=new_total, at=at):
        return
    session.refresh(benefit)
    if benefit.stock_total is None or benefit.stock_remaining is None:
        raise Conflict("stock: the stock changed meanwhile; reload and try again", field="stock")
    taken = benefit.stock_total - benefit.stock_remaining
    raise ValidationFailed(
        f"stock: {taken} units are already taken, so stock cannot go below {taken}",
        field="stock",
        taken=taken,
    )


def set_benefit_status(
    session: Session,
    *,
    actor: Actor,
    benefit_id: int,
    status: BenefitStatus,
    zone: str = DEFAULT_ZONE,
) -> Benefit:
    """Move a benefit along draft → listed → delisted (→ listed again); hq_admin only."""
    org.require(actor, Perm.CATALOG_EDIT)
    benefit = get_benefit(session, benefit_id=benefit_id)
    current = BenefitStatus(benefit.status)
    problem = lifecycle_problem(current, status)
    if problem:
        raise Conflict(f"status: {problem}", field="status")
    if status == BenefitStatus.LISTED:
        _refuse(
            rules.listing_issue(
                kind=ValidityKind(benefit.validity_kind),
                valid_until=benefit.valid_until,
                today=clock.today(zone),
            )
        )
    # Compare-and-set: two concurrent changes cannot both start from the same old status.
    if not repo.compare_and_set_status(
        session, benefit_id=benefit.id, expected=current.value, target=status.value, at=clock.now()
    ):
        raise Conflict("status: changed meanwhile; reload and try again", field="status")
    session.refresh(benefit)
    org.record_audit(
        session,
        actor=actor,
        action="benefit.status",
        target_type="benefit",
        target_id=str(benefit.id),
        details={"code": benefit.code, "from": current.value, "to": status.value},
    )
    return benefit


def list_benefits(
    session: Session,
    *,
    actor: Actor,
    category: str | None = None,
    status: str | None = None,
    partner_id: int | None = None,
    low_stock_only: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[Sequence[Benefit], int]:
    """A page of the catalog the actor may see (a partner's key: only its own benefits)."""
    _require_read(actor)
    limited = _partner_limit(session, actor)
    if limited is not None:
        if partner_id not in (None, limited):
            return [], 0
        partner_id = limited
    return repo.benefit_page(
        session,
        category=category,
        status=status,
        partner_id=partner_id,
        low_stock_only=low_stock_only,
        offset=offset,
        limit=limit,
    )


def read_benefit(session: Session, *, actor: Actor, benefit_id: int) -> Benefit:
    """One benefit the actor may see, or 404 (a partner's key never learns of others)."""
    _require_read(actor)
    benefit = get_benefit(session, benefit_id=benefit_id)
    limited = _partner_limit(session, actor)
    if limited is not None and benefit.partner_id != limited:
        raise NotFound(f"no benefit {benefit_id}", field="benefit_id")
    return benefit


def find_benefit(session: Session, *, actor: Actor, code: str) -> Benefit:
    """A benefit by its code, or 404."""
    _require_read(actor)
    benefit = repo.get_benefit_by_code(session, code)
    if benefit is None:
        raise NotFound(f"no benefit {code!r}", field="benefit_code")
    return read_benefit(session, actor=actor, benefit_id=benefit.id)


def benefit_counts(session: Session, *, actor: Actor) -> dict[int, int]:
    """How many benefits each partner supplies."""
    _require_read(actor)
    return repo.benefit_counts(session)


def is_low_on_stock(benefit: Benefit) -> bool:
    """Whether a benefit's limited stock is at or below its threshold."""
    return (
        benefit.stock_remaining is not None
        and benefit.stock_remaining <= benefit.low_stock_threshold
    )


def low_stock_alerts(session: Session) -> Sequence[Benefit]:
    """Listed benefits at or below their low-stock threshold, emptiest first."""
    return repo.low_stock(session)


@dataclass(frozen=True)
class StockAlert:
    """A listed benefit running out: its units left, or its card-code pool's usable codes."""

    benefit: Benefit
    left: int
    threshold: int
    pool: bool


def stock_alerts(session: Session, *, actor: Actor, zone: str = DEFAULT_ZONE) -> list[StockAlert]:
    """Listed benefits at or below their low-stock threshold, by stock or by card-code pool."""
    from sqlalchemy import select

    org.require(actor, Perm.DASHBOARD)
    alerts = [
        StockAlert(
            b,
            b.stock_remaining or 0,
            b.low_stock_threshold,
            pool=b.fulfilment_kind == FulfilmentKind.CARD_CODE.value,
        )
        for b in repo.low_stock(session)
    ]
    seen = {a.benefit.id for a in alerts}
    pools = session.scalars(
        select(Benefit).where(
            Benefit.fulfilment_kind == FulfilmentKind.CARD_CODE.value,
            Benefit.status == BenefitStatus.LISTED.value,
        )
    ).all()
    today = clock.today(zone)
    for b in pools:
        if b.id in seen:
            continue
        counts = repo.code_counts(session, b.id, today=today)
        usable = counts["available"] - counts["expired"]
        if usable <= b.low_stock_threshold:
            alerts.append(StockAlert(b, usable, b.low_stock_threshold, pool=True))
    return sorted(alerts, key=lambda a: (a.left, a.benefit.code))
