"""Partners: create, update, read; their connector secrets are stored encrypted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import repository as repo
from perkflow.catalog import rules
from perkflow.catalog.models import Partner
from perkflow.catalog.schemas import PartnerCreate, PartnerUpdate
from perkflow.errors import Conflict, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from ._common import _partner_limit, _refuse, _require_read, _text


def get_partner(session: Session, *, partner_id: int) -> Partner:
    """A partner by id, or 404."""
    partner = repo.get_partner(session, partner_id)
    if partner is None:
        raise NotFound(f"no partner {partner_id}", field="partner_id")
    return partner


def _encrypt_secret(vault: Vault, *, partner_code: str, secret: str) -> bytes:
    # Bound to the partner: a secret copied onto another partner's row does not decrypt.
    return vault.pii.encrypt(secret, f"partner:{partner_code}".encode())


def _check_contact(email: str) -> None:
    if email and ("@" not in email or " " in email):
        raise ValidationFailed("contact_email: not an e-mail address", field="contact_email")


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
