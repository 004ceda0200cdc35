"""Use cases of the catalog. Stock and card codes are taken atomically for grants."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from perkflow.catalog import repository as repo
from perkflow.catalog.models import Benefit, Partner
from perkflow.catalog.rules import FulfilmentKind
from perkflow.errors import Conflict, NotFound
from perkflow.kit import clock
from perkflow.kit.crypto import Vault


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
