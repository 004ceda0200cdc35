"""Membership use cases: the default programme."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus
from perkflow.catalog.schemas import BenefitCreate, PartnerCreate
from perkflow.errors import NotFound, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.kit.lazy import lazy_module
from perkflow.membership.rules import (
    Program,
)
from perkflow.org.rules import SYSTEM, Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

from .access import _require_edit
from .program import define_program, program_document

# --- the default programme -----------------------------------------------------------------------


def default_program_document() -> dict[str, Any]:
    """The packaged default programme (silver / gold / diamond)."""
    text = resources.files("perkflow.membership").joinpath("data/default_program.yaml")
    data: dict[str, Any] = yaml.safe_load(text.read_text("utf-8"))
    return data


def default_catalog() -> dict[str, Any]:
    """The partners and benefits the default programme's bundles are made of."""
    text = resources.files("perkflow.membership").joinpath("data/default_catalog.yaml")
    data: dict[str, Any] = yaml.safe_load(text.read_text("utf-8"))
    return data


def load_default_program(session: Session, *, actor: Actor, vault: Vault) -> Program:
    """Create the default programme's partners and benefits where missing, then define it."""
    _require_edit(actor)
    data = default_catalog()
    partners = {p.code for p in catalog.list_partners(session, actor=SYSTEM)}
    for p in data["partners"]:
        if p["code"] not in partners:
            catalog.create_partner(
                session,
                actor=SYSTEM,
                vault=vault,
                spec=PartnerCreate(
                    code=p["code"], name=p["name"], contact_email=f"ops@{p['code']}.example"
                ),
            )
    for b in data["benefits"]:
        try:
            catalog.find_benefit(session, actor=SYSTEM, code=b["code"])
            continue
        except NotFound:
            pass
        benefit = catalog.create_benefit(
            session,
            actor=SYSTEM,
            spec=BenefitCreate.model_validate({**b, "validity_kind": "days"}),
        )
        catalog.set_benefit_status(
            session, actor=SYSTEM, benefit_id=benefit.id, status=BenefitStatus.LISTED
        )
    return define_program(session, actor=actor, raw=default_program_document())


def read_document(text: str) -> Any:
    """A programme typed in the editor (YAML, or JSON which is YAML too), or 422."""
    if len(text) > 200_000:
        raise ValidationFailed("the programme is too long", field="program")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"not valid YAML: {exc}", field="program") from exc


def document_text(session: Session) -> str:
    """The stored programme as YAML for the editor (the default one before any is saved)."""
    doc = program_document(session) or default_program_document()
    return str(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
