"""Catalog use cases on SQLite and PostgreSQL: lifecycle, validation, access, audit, stock."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.models import Benefit, Partner
from perkflow.catalog.rules import BenefitStatus
from perkflow.catalog.schemas import BenefitUpdate, PartnerCreate, PartnerUpdate
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Role
from tests.catalog.helpers import (
    add_benefit,
    add_partner,
    benefit_spec,
    partner_key_actor,
    staff_actor,
)


def _actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def _count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_lifecycle_draft_listed_delisted_and_back(session: Session, vault: Vault) -> None:
    add_partner(session, vault)
    admin = staff_actor(session, "admin", Role.HQ_ADMIN, "CN")
    benefit = add_benefit(session, admin)
    assert benefit.status == "draft" and benefit.stock_total is None
    with pytest.raises(Conflict) as err:
        catalog.set_benefit_status(
            session, actor=admin, benefit_id=benefit.id, status=BenefitStatus.DELISTED
        )
    assert err.value.field == "status"
    for target in ("listed", "delisted", "listed"):
        benefit = catalog.set_benefit_status(
            session, actor=admin, benefit_id=benefit.id, status=BenefitStatus(target)
        )
        session.commit()
        assert benefit.status == target
    with pytest.raises(Conflict, match="already listed"):
        catalog.set_benefit_status(
            session, actor=admin, benefit_id=benefit.id, status=BenefitStatus.LISTED
        )
    session.rollback()
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "benefit.status")).all()
    assert [(a.details["from"], a.details["to"], a.actor_name) for a in audit] == [
        ("draft", "listed", "admin"),
        ("listed", "delisted", "admin"),
        ("delisted", "listed", "admin"),
    ]


INVALID_BENEFITS: list[tuple[dict[str, Any], str]] = [
    ({"code": "Bad Code"}, "code"),
    ({"partner_code": "nobody"}, "partner_code"),
    ({"name_zh": "  "}, "name_zh"),
    ({"cost_price_fen": 3000}, "cost_price_fen"),
    ({"sale_price_fen": -1}, "sale_price_fen"),
    ({"valid_days": 0}, "valid_days"),
    ({"validity_kind": "fixed", "valid_days": None}, "valid_until"),
    (
        {
            "validity_kind": "fixed",
            "valid_days": None,
            "valid_from": "2027-02-01",
            "valid_until": "2027-01-01",
        },
        "valid_until",
    ),
    ({"stock": -5}, "stock"),
    ({"low_stock_threshold": -1}, "low_stock_threshold"),
    ({"limit_per_month": 0}, "limit_per_month"),
    ({"limit_per_month": 5, "limit_total": 2}, "limit_per_month"),
    ({"fulfilment_kind": "card_code", "stock": 100}, "stock"),
]


def test_invalid_benefits_name_the_field_and_change_nothing(session: Session, vault: Vault) -> None:
    add_partner(session, vault)
    for overrides, field in INVALID_BENEFITS:
        with pytest.raises(ValidationFailed) as err:
            catalog.create_benefit(session, actor=SYSTEM, spec=benefit_spec(**overrides))
        assert err.value.field == field, overrides
        session.rollback()
    assert _count(session, Benefit) == 0
    assert "benefit.create" not in _actions(session)


def test_duplicate_code_is_a_conflict_on_the_code(session: Session, vault: Vault) -> None:
    add_partner(session, vault)
    add_benefit(session)
    with pytest.raises(Conflict) as err:
        add_benefit(session)
    assert err.value.field == "code"


def test_only_hq_admin_edits_and_provinces_read(session: Session, vault: Vault) -> None:
    add_partner(session, vault)
    benefit = add_benefit(session)
    marketer = staff_actor(session, "gd", Role.PROVINCE_MARKETER, "GD")
    analyst = staff_actor(session, "an", Role.ANALYST, "CN")
    clerk = staff_actor(session, "ck", Role.CLERK, "GD01S1")
    for actor in (marketer, analyst):
        rows, total = catalog.list_benefits(session, actor=actor)
        assert total == 1 and rows[0].id == benefit.id
    with pytest.raises(Forbidden):
        catalog.list_benefits(session, actor=clerk)
    before = _actions(session)
    with pytest.raises(Forbidden):
        catalog.create_benefit(session, actor=marketer, spec=benefit_spec(code="other"))
    with pytest.raises(Forbidden):
        catalog.update_benefit(
            session,
            actor=marketer,
            benefit_id=benefit.id,
            changes=BenefitUpdate(sale_price_fen=1),
        )
    with pytest.raises(Forbidden):
        catalog.set_benefit_status(
            session, actor=analyst, benefit_id=benefit.id, status=BenefitStatus.LISTED
        )
    with pytest.raises(Forbidden):
        catalog.create_partner(
            session, actor=marketer, vault=vault, spec=PartnerCreate(code="x1", name="X")
        )
    session.rollback()
    assert _actions(session) == before
    assert session.get(Benefit, benefit.id).sale_price_fen == 1500  # type: ignore[union-attr]


def test_every_write_is_audited_with_what_changed(session: Session, vault: Vault) -> None:
    admin = staff_actor(session, "admin", Role.HQ_ADMIN, "CN")
    partner = catalog.create_partner(
        session, actor=admin, vault=vault, spec=PartnerCreate(code="tv", name="TV")
    )
    benefit = catalog.create_benefit(session, actor=admin, spec=benefit_spec())
    catalog.update_benefit(
        session,
        actor=admin,
        benefit_id=benefit.id,
        changes=BenefitUpdate(sale_price_fen=1400, limit_per_month=2),
    )
    catalog.update_partner(
        session,
        actor=admin,
        vault=vault,
        partner_id=partner.id,
        changes=PartnerUpdate(contact_email="ops@tv.example"),
    )
    session.commit()
    entries = session.scalars(
        select(AuditEntry).where(AuditEntry.actor_name == "admin").order_by(AuditEntry.id)
    ).all()
    assert [e.action for e in entries] == [
        "partner.create",
        "benefit.create",
        "benefit.update",
        "partner.update",
    ]
    assert entries[2].details["changed"] == {
        "sale_price_fen": [1500, 1400],
        "limit_per_month": [None, 2],
    }
    assert entries[3].details["changed"] == {"contact_email": ["", "ops@tv.example"]}


def test_partner_connector_secret_is_encrypted_and_checked(session: Session, vault: Vault) -> None:
    with pytest.raises(ValidationFailed) as err:
        add_partner(session, vault, connector_kind="http", connector_url="https://tv.example/cb")
    assert err.value.field == "connector_secret"
    session.rollback()
    with pytest.raises(ValidationFailed) as err:
        add_partner(
            session, vault, connector_kind="http", connector_url="ftp://x", connector_secret="s"
        )
    assert err.value.field == "connector_url"
    session.rollback()
    partner = add_partner(
        session,
        vault,
        connector_kind="http",
        connector_url="https://tv.example/api",
        connector_secret="s3cret-shared",
        supports_revoke=True,
    )
    stored = session.scalar(select(Partner.connector_secret_enc).where(Partner.id == partner.id))
    assert stored is not None and b"s3cret-shared" not in stored
    assert vault.pii.decrypt(stored, b"partner:tv") == "s3cret-shared"
    # Leaving the secret out keeps it; giving one replaces it; the audit never holds it.
    catalog.update_partner(
        session,
        actor=SYSTEM,
        vault=vault,
        partner_id=partner.id,
        changes=PartnerUpdate(connector_secret="rotated-secret"),
    )
    catalog.update_partner(
        session, actor=SYSTEM, vault=vault, partner_id=partner.id, changes=PartnerUpdate(name="T")
    )
    session.commit()
    assert vault.pii.decrypt(partner.connector_secret_enc or b"", b"partner:tv") == "rotated-secret"
    details = session.scalars(
        select(AuditEntry.details).where(AuditEntry.action == "partner.update")
    ).all()
    assert "rotated-secret" not in repr(details)
    with pytest.raises(ValidationFailed) as err:
        catalog.update_partner(
            session,
            actor=SYSTEM,
            vault=vault,
            partner_id=partner.id,
            changes=PartnerUpdate.model_validate({"settlement_terms": {"statement_day": 31}}),
        )
    assert err.value.field == "settlement_terms.statement_day"
    session.rollback()
    catalog.update_partner(
        session,
        actor=SYSTEM,
        vault=vault,
        partner_id=partner.id,
        changes=PartnerUpdate.model_validate({"settlement_terms": {"payment_days": 45}}),
    )
    assert partner.settlement_terms == {"cycle": "monthly", "statement_day": 5, "payment_days": 45}


def test_a_partner_key_sees_only_its_own_benefits(session: Session, vault: Vault) -> None:
    add_partner(session, vault, "tv")
    add_partner(session, vault, "music")
    mine = add_benefit(session, code="tv-month")
    theirs = add_benefit(session, code="music-month", partner_code="music")
    tv_key = partner_key_actor(session, partner_code="tv", scopes=["catalog:read"])
    rows, total = catalog.list_benefits(session, actor=tv_key)
    assert total == 1 and [b.id for b in rows] == [mine.id]
    assert catalog.list_benefits(session, actor=tv_key, partner_id=theirs.partner_id) == ([], 0)
    assert catalog.read_benefit(session, actor=tv_key, benefit_id=mine.id).id == mine.id
    with pytest.raises(NotFound):
        catalog.read_benefit(session, actor=tv_key, benefit_id=theirs.id)
    assert [p.code for p in catalog.list_partners(session, actor=tv_key)] == ["tv"]
    # A partner key naming no partner sees nothing; a key without the scope is refused.
    orphan = partner_key_actor(session, partner_code=None, scopes=["catalog:read"])
    assert catalog.list_benefits(session, actor=orphan) == ([], 0)
    unscoped = partner_key_actor(session, partner_code="tv", scopes=["h5:link"])
    with pytest.raises(Forbidden):
        catalog.list_benefits(session, actor=unscoped)
    with pytest.raises(Forbidden):
        catalog.set_benefit_status(
            session, actor=tv_key, benefit_id=mine.id, status=BenefitStatus.LISTED
        )


def test_stock_moves_by_the_delta_and_never_below_units_taken(
    session: Session, vault: Vault
) -> None:
    add_partner(session, vault)
    benefit = add_benefit(session, stock=10)
    for _ in range(3):
        catalog.reserve_for_grant(session, benefit=benefit, zone="Asia/Shanghai")
    session.commit()

    def resize(stock: int | None) -> Benefit:
        result = catalog.update_benefit(
            session,
            actor=SYSTEM,
            benefit_id=benefit.id,
            changes=BenefitUpdate.model_validate({"stock": stock}),
        )
        session.commit()
        return result

    assert (resize(5).stock_total, benefit.stock_remaining) == (5, 2)
    with pytest.raises(ValidationFailed, match="3 units are already taken") as err:
        resize(2)
    assert err.value.field == "stock"
    session.rollback()
    assert (resize(3).stock_total, benefit.stock_remaining) == (3, 0)
    assert (resize(None).stock_total, benefit.stock_remaining) == (None, None)
    assert (resize(7).stock_total, benefit.stock_remaining) == (7, 7)


def test_updates_keep_what_was_not_given(session: Session, vault: Vault) -> None:
    add_partner(session, vault)
    benefit = add_benefit(session, limit_total=4)
    catalog.update_benefit(
        session,
        actor=SYSTEM,
        benefit_id=benefit.id,
        changes=BenefitUpdate.model_validate(
            {"validity_kind": "fixed", "valid_until": "2030-12-31"}
        ),
    )
    session.commit()
    assert benefit.validity_kind == "fixed" and benefit.valid_days is None
    assert benefit.limit_total == 4 and benefit.sale_price_fen == 1500
    with pytest.raises(ValidationFailed) as err:
        catalog.update_benefit(
            session,
            actor=SYSTEM,
            benefit_id=benefit.id,
            changes=BenefitUpdate.model_validate({"name_en": None}),
        )
    assert err.value.field == "name_en"


def test_an_ended_fixed_validity_cannot_be_listed(session: Session, vault: Vault) -> None:
    add_partner(session, vault)
    benefit = add_benefit(session, validity_kind="fixed", valid_days=None, valid_until="2020-01-31")
    with pytest.raises(ValidationFailed) as err:
        catalog.set_benefit_status(
            session, actor=SYSTEM, benefit_id=benefit.id, status=BenefitStatus.LISTED
        )
    assert err.value.field == "valid_until"


def test_low_stock_alerts_list_listed_benefits_at_threshold(session: Session, vault: Vault) -> None:
    add_partner(session, vault)
    low = add_benefit(session, code="low", stock=5, low_stock_threshold=5)
    add_benefit(session, code="fine", stock=50, low_stock_threshold=5)
    add_benefit(session, code="unlimited", low_stock_threshold=5)
    draft_low = add_benefit(session, code="draft-low", stock=1, low_stock_threshold=5)
    for b in session.scalars(select(Benefit).where(Benefit.code != "draft-low")):
        catalog.set_benefit_status(
            session, actor=SYSTEM, benefit_id=b.id, status=BenefitStatus.LISTED
        )
    session.commit()
    assert [b.code for b in catalog.low_stock_alerts(session)] == ["low"]
    assert catalog.is_low_on_stock(low) and catalog.is_low_on_stock(draft_low)
    rows, total = catalog.list_benefits(session, actor=SYSTEM, low_stock_only=True)
    assert {b.code for b in rows} == {"low", "draft-low"} and total == 2
