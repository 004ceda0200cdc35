"""Use cases of the catalog. Stock and card codes are taken atomically for grants."""

from __future__ import annotations

import csv
import ntpath
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import repository as repo
from perkflow.catalog import rules
from perkflow.catalog.models import Benefit, CardCodeLot, Partner
from perkflow.catalog.rules import (
    BenefitStatus,
    CodeRow,
    FulfilmentKind,
    ValidityKind,
    lifecycle_problem,
)
from perkflow.catalog.schemas import BenefitCreate, BenefitUpdate, PartnerCreate, PartnerUpdate
from perkflow.errors import Conflict, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm


@dataclass(frozen=True)
class Reservation:
    """What a grant took from the catalog: one unit of stock and, for card codes, one code."""

    benefit_id: int
    took_stock: bool
    card_code_id: int | None


def get_benefit(session: Session, *, benefit_id: int) -> Benefit:
    """A benefit by id, or 404."""
    benefit = repo.get_benefit(session, benefit_id)
    if benefit is None:
        raise NotFound(f"no benefit {benefit_id}", field="benefit_id")
    return benefit


def get_partner(session: Session, *, partner_id: int) -> Partner:
    """A partner by id, or 404."""
    partner = repo.get_partner(session, partner_id)
    if partner is None:
        raise NotFound(f"no partner {partner_id}", field="partner_id")
    return partner


def reserve_for_grant(session: Session, *, benefit: Benefit, zone: str) -> Reservation:
    """Take one unit of stock (and a card code) for a grant, or raise 409 sold out."""
    took = False
    if benefit.stock_total is not None:
        # One conditional UPDATE: two concurrent grants can never both take the last unit.
        if not repo.take_stock(session, benefit.id):
            raise Conflict("sold out", field="benefit_id", benefit_id=benefit.id)
        took = True
    code_id = None
    if benefit.fulfilment_kind == FulfilmentKind.CARD_CODE:
        now = clock.now()
        code_id = repo.allocate_code(session, benefit.id, today=clock.today(zone), at=now)
        if code_id is None:
            if took:
                repo.give_back_stock(session, benefit.id)
            raise Conflict("no card codes left", field="benefit_id", benefit_id=benefit.id)
    return Reservation(benefit_id=benefit.id, took_stock=took, card_code_id=code_id)


def release_reservation(session: Session, *, reservation: Reservation) -> None:
    """Give back what a failed or cancelled grant took."""
    if reservation.card_code_id is not None:
        repo.free_code(session, reservation.card_code_id)
    if reservation.took_stock:
        repo.give_back_stock(session, reservation.benefit_id)


def code_context(*, benefit_id: int, code_hash: str) -> bytes:
    """AES-GCM associated data of a code: a ciphertext copied onto another row does not decrypt."""
    return f"card_code:{benefit_id}:{code_hash}".encode()


def reveal_code(session: Session, *, vault: Vault, code_id: int) -> tuple[str, str | None]:
    """The clear code and PIN; callers check that the viewer is its subscriber and audit it."""
    code = repo.get_code(session, code_id)
    if code is None:
        raise NotFound(f"no card code {code_id}", field="card_code_id")
    context = code_context(benefit_id=code.benefit_id, code_hash=code.code_hash)
    pin = vault.pii.decrypt(code.pin_enc, context) if code.pin_enc else None
    return vault.pii.decrypt(code.code_enc, context), pin


DEFAULT_ZONE = "Asia/Shanghai"
MAX_REPORTED_LINES = 100
IMPORT_BATCH = 5000


def _refuse(issue: rules.Issue | None) -> None:
    if issue is not None:
        field, reason = issue
        raise ValidationFailed(f"{field}: {reason}", field=field)


def _require_read(actor: Actor) -> None:
    """Staff need catalog.read; an API key needs the catalog:read scope."""
    org.require_perm_or_scope(actor, perm=Perm.CATALOG_READ, scope="catalog:read")


def _partner_limit(session: Session, actor: Actor) -> int | None:
    """The one partner a partner's API key is limited to, or None for the whole catalog."""
    if actor.kind != "api_key" or actor.owner_kind != "partner":
        return None
    partner = repo.get_partner_by_code(session, actor.owner_ref) if actor.owner_ref else None
    # 0 is no partner's id: a partner key that names no known partner sees nothing.
    return partner.id if partner is not None else 0


def _encrypt_secret(vault: Vault, *, partner_code: str, secret: str) -> bytes:
    # Bound to the partner: a secret copied onto another partner's row does not decrypt.
    return vault.pii.encrypt(secret, f"partner:{partner_code}".encode())


def _text(value: str, *, field: str, required: bool = True) -> str:
    cleaned = value.strip()
    if required and not cleaned:
        raise ValidationFailed(f"{field}: cannot be empty", field=field)
    return cleaned


def _check_contact(email: str) -> None:
    if email and ("@" not in email or " " in email):
        raise ValidationFailed("contact_email: not an e-mail address", field="contact_email")


# ---------------------------------------------------------------- partners


def create_partner(session: Session, *, actor: Actor, vault: Vault, spec: PartnerCreate) -> Partner:
    """Add a supplier with its contact, settlement terms and connector; hq_admin only."""
    org.require(actor, Perm.CATALOG_EDIT)
    _refuse(rules.code_issue(spec.code, field="code", pattern=rules.PARTNER_CODE))
    name = _text(spec.name, field="name")
    _check_contact(spec.contact_email.strip())
    terms = spec.settlement_terms
    _refuse(rules.settlement_issue(**terms.model_dump()))
    secret = spec.connector_secret or None
    _refuse(
        rules.connector_issue(
            kind=spec.connector_kind,
            url=spec.connector_url.strip(),
            timeout_ms=spec.connector_timeout_ms,
            max_attempts=spec.connector_max_attempts,
            has_secret=secret is not None,
        )
    )
    partner = Partner(
        code=spec.code,
        name=name,
        contact_name=spec.contact_name.strip(),
        contact_email=spec.contact_email.strip(),
        contact_phone=spec.contact_phone.strip(),
        settlement_terms=terms.model_dump(),
        connector_kind=spec.connector_kind,
        connector_url=spec.connector_url.strip(),
        connector_secret_enc=(
            _encrypt_secret(vault, partner_code=spec.code, secret=secret) if secret else None
        ),
        connector_timeout_ms=spec.connector_timeout_ms,
        connector_max_attempts=spec.connector_max_attempts,
        supports_revoke=spec.supports_revoke,
        created_at=clock.now(),
    )
    session.add(partner)
    try:
        session.flush()  # the unique code decides a duplicate; the id goes into the audit entry
    except IntegrityError as exc:
        raise Conflict(f"partner code {spec.code!r} is taken", field="code") from exc
    org.record_audit(
        session,
        actor=actor,
        action="partner.create",
        target_type="partner",
        target_id=str(partner.id),
        details={"code": partner.code, "name": name, "connector_kind": partner.connector_kind},
    )
    return partner


def update_partner(
    session: Session, *, actor: Actor, vault: Vault, partner_id: int, changes: PartnerUpdate
) -> Partner:
    """Change a partner's contact, terms or connector; only the fields given change."""
    org.require(actor, Perm.CATALOG_EDIT)
    partner = get_partner(session, partner_id=partner_id)
    given = changes.model_dump(exclude_unset=True)
    for field in ("name", "connector_kind", "connector_timeout_ms", "connector_max_attempts"):
        if field in given and given[field] is None:
            raise ValidationFailed(f"{field}: cannot be empty", field=field)
    merged: dict[str, Any] = {
        "name": partner.name,
        "contact_name": partner.contact_name,
        "contact_email": partner.contact_email,
        "contact_phone": partner.contact_phone,
        "settlement_terms": dict(partner.settlement_terms),
        "connector_kind": partner.connector_kind,
        "connector_url": partner.connector_url,
        "connector_timeout_ms": partner.connector_timeout_ms,
        "connector_max_attempts": partner.connector_max_attempts,
        "supports_revoke": partner.supports_revoke,
    }
    for field, value in given.items():
        if field == "connector_secret":
            continue
        if isinstance(value, str):
            value = value.strip()
        if value is None and field in (
            "contact_name",
            "contact_email",
            "contact_phone",
            "connector_url",
        ):
            value = ""
        if field == "settlement_terms" and value is not None:
            value = merged[field] | value  # terms not given keep their stored value
        if value is not None:
            merged[field] = value
    merged["name"] = _text(merged["name"], field="name")
    _check_contact(merged["contact_email"])
    terms = {"cycle": "monthly", "statement_day": 5, "payment_days": 30} | merged[
        "settlement_terms"
    ]
    _refuse(rules.settlement_issue(**terms))
    secret = given.get("connector_secret") or None
    _refuse(
        rules.connector_issue(
            kind=merged["connector_kind"],
            url=merged["connector_url"],
            timeout_ms=merged["connector_timeout_ms"],
            max_attempts=merged["connector_max_attempts"],
            has_secret=secret is not None or partner.connector_secret_enc is not None,
        )
    )
    before = {k: getattr(partner, k) for k in merged}
    changed = {k: [before[k], v] for k, v in merged.items() if before[k] != v}
    for field, value in merged.items():
        setattr(partner, field, value)
    if secret is not None:
        partner.connector_secret_enc = _encrypt_secret(
            vault, partner_code=partner.code, secret=secret
        )
        changed["connector_secret"] = ["***", "***"]  # that it changed, never what it is
    if changed:
        org.record_audit(
            session,
            actor=actor,
            action="partner.update",
            target_type="partner",
            target_id=str(partner.id),
            details={"code": partner.code, "changed": changed},
        )
    session.flush()  # callers read the updated row in the same transaction
    return partner


def list_partners(session: Session, *, actor: Actor) -> Sequence[Partner]:
    """Partners in code order (a partner's key sees only itself)."""
    _require_read(actor)
    limit = _partner_limit(session, actor)
    partners = repo.list_partners(session)
    return partners if limit is None else [p for p in partners if p.id == limit]


def read_partner(session: Session, *, actor: Actor, partner_id: int) -> Partner:
    """One partner the actor may see, or 404."""
    _require_read(actor)
    limit = _partner_limit(session, actor)
    if limit is not None and limit != partner_id:
        raise NotFound(f"no partner {partner_id}", field="partner_id")
    return get_partner(session, partner_id=partner_id)


def find_partner(session: Session, *, actor: Actor, code: str) -> Partner:
    """A partner by its code, or 404."""
    partner = repo.get_partner_by_code(session, code)
    if partner is None:
        raise NotFound(f"no partner {code!r}", field="partner")
    return read_partner(session, actor=actor, partner_id=partner.id)


def partners_by_id(session: Session, *, ids: set[int]) -> dict[int, Partner]:
    """Partners for a set of ids, to show codes and names beside benefits."""
    return repo.partners_by_ids(session, ids)


# ---------------------------------------------------------------- benefits


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


# ---------------------------------------------------------------- card-code pools


@dataclass(frozen=True)
class CodeImport:
    """What one imported file added: its lot, how many codes, which lines were duplicates."""

    lot: CardCodeLot
    imported: int
    duplicates: int
    duplicate_lines: list[int]


@dataclass(frozen=True)
class PoolLevels:
    """Card codes of a benefit by state."""

    available: int
    allocated: int
    void: int
    expired: int

    @property
    def usable(self) -> int:
        return self.available - self.expired


def _file_name(name: str) -> str:
    base = posixpath.basename(ntpath.basename(name or "")).strip()
    return base[:255] or "codes.csv"


def import_card_codes(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    benefit_id: int,
    file_name: str,
    unit_cost_fen: int,
    rows: Iterable[str],
    progress: Callable[[int], None] | None = None,
    zone: str = DEFAULT_ZONE,
) -> CodeImport:
    """Import a partner's CSV (`code,pin,expiry`) as one lot; a bad file is refused whole."""
    org.require(actor, Perm.CATALOG_EDIT)
    benefit = get_benefit(session, benefit_id=benefit_id)
    if benefit.fulfilment_kind != FulfilmentKind.CARD_CODE:
        raise ValidationFailed(
            f"benefit_id: {benefit.code} is fulfilled by {benefit.fulfilment_kind}, not card codes",
            field="benefit_id",
        )
    if not 0 <= unit_cost_fen <= rules.MAX_PRICE_FEN:
        raise ValidationFailed("unit_cost_fen: from 0 to ¥1,000,000", field="unit_cost_fen")
    today = clock.today(zone)
    now = clock.now()
    lot = CardCodeLot(
        benefit_id=benefit.id,
        file_name=_file_name(file_name),
        unit_cost_fen=unit_cost_fen,
        count=0,
        imported_by=actor.name,
        imported_at=now,
    )
    session.add(lot)
    session.flush()  # every code row carries the lot id

    errors: list[dict[str, Any]] = []
    error_count = 0
    imported = 0
    duplicates = 0
    duplicate_lines: list[int] = []
    pending: dict[str, tuple[int, CodeRow]] = {}
    seen_row = False
    line = 0

    def bad(at: int, reason: str) -> None:
        nonlocal error_count
        error_count += 1
        if len(errors) < MAX_REPORTED_LINES:
            errors.append({"line": at, "reason": reason})

    def write_pending() -> None:
        nonlocal imported, duplicates
        if not pending:
            return
        records = []
        for code_hash, (_, parsed) in pending.items():
            context = code_context(benefit_id=benefit.id, code_hash=code_hash)
            records.append(
                {
                    "lot_id": lot.id,
                    "benefit_id": benefit.id,
                    "code_enc": vault.pii.encrypt(parsed.code, context),
                    "pin_enc": vault.pii.encrypt(parsed.pin, context) if parsed.pin else None,
                    "code_hash": code_hash,
                    "expires_on": parsed.expires_on,
                    "status": rules.CodeStatus.AVAILABLE.value,
                    "allocated_at": None,
                }
            )
        inserted = repo.insert_codes(session, records)
        imported += len(inserted)
        for code_hash, (at, _) in pending.items():
            if code_hash not in inserted:
                duplicates += 1
                if len(duplicate_lines) < MAX_REPORTED_LINES:
                    duplicate_lines.append(at)
        pending.clear()

    reader = csv.reader(rows)
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            first, seen_row = not seen_row, True
            if first and rules.is_header(fields):
                continue
            parsed = rules.parse_code_row(fields, today=today)
            if isinstance(parsed, str):
                bad(line, parsed)
                continue
            if error_count:
                continue  # the file is refused anyway: only look for further bad lines
            code_hash = vault.lookup.digest(parsed.code)
            if code_hash in pending:
                duplicates += 1
                if len(duplicate_lines) < MAX_REPORTED_LINES:
                    duplicate_lines.append(line)
                continue
            pending[code_hash] = (line, parsed)
            if len(pending) >= IMPORT_BATCH:
                write_pending()
                if progress is not None:
                    progress(line)
    except csv.Error as exc:
        bad(reader.line_num, f"not readable as CSV ({exc})")
    except UnicodeDecodeError:
        bad(line + 1, "not UTF-8 text")
    if not error_count:
        write_pending()
    if progress is not None:
        progress(line)
    if error_count or imported == 0:
        # Remove what the refused file already wrote, so nothing of it stays whatever the caller
        # does next (entry points also roll the whole transaction back).
        pending.clear()
        repo.delete_lot(session, lot.id)
        session.expunge(lot)
        if error_count:
            raise ValidationFailed(
                f"file: {error_count} bad line(s); nothing was imported",
                field="file",
                errors=errors,
                error_count=error_count,
            )
        reason = "every code in it is already in the pool" if duplicates else "it holds no codes"
        raise ValidationFailed(
            f"file: {reason}; nothing was imported",
            field="file",
            errors=[],
            error_count=0,
            duplicate_lines=duplicate_lines,
        )
    lot.count = imported
    repo.add_stock(session, benefit_id=benefit.id, units=imported, at=now)
    session.refresh(benefit)
    org.record_audit(
        session,
        actor=actor,
        action="card_codes.import",
        target_type="benefit",
        target_id=str(benefit.id),
        details={
            "code": benefit.code,
            "lot": lot.id,
            "file": lot.file_name,
            "count": imported,
            "duplicates": duplicates,
            "unit_cost_fen": unit_cost_fen,
        },
    )
    session.flush()  # the lot's count is read back by the caller
    return CodeImport(
        lot=lot, imported=imported, duplicates=duplicates, duplicate_lines=duplicate_lines
    )


def list_lots(session: Session, *, actor: Actor, benefit_id: int) -> Sequence[CardCodeLot]:
    """The imported lots of a benefit, newest first."""
    read_benefit(session, actor=actor, benefit_id=benefit_id)
    return repo.lots_of(session, benefit_id)


def pool_levels(
    session: Session, *, actor: Actor, benefit_id: int, zone: str = DEFAULT_ZONE
) -> PoolLevels:
    """How many of a benefit's codes are available, allocated, void, or expired unused."""
    read_benefit(session, actor=actor, benefit_id=benefit_id)
    counts = repo.code_counts(session, benefit_id, today=clock.today(zone))
    return PoolLevels(
        available=counts["available"],
        allocated=counts["allocated"],
        void=counts["void"],
        expired=counts["expired"],
    )


# ---------------------------------------------------------------- the console home


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
