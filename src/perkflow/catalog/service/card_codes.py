"""Card-code pools, and what a grant takes from the catalog: stock and a card code, atomically."""

from __future__ import annotations

import csv
import ntpath
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from perkflow.catalog import repository as repo
from perkflow.catalog import rules
from perkflow.catalog.models import Benefit, CardCodeLot
from perkflow.catalog.rules import (
    CodeRow,
    FulfilmentKind,
)
from perkflow.errors import Conflict, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from ._common import DEFAULT_ZONE
from .benefits import get_benefit, read_benefit


@dataclass(frozen=True)
class Reservation:
    """What a grant took from the catalog: one unit of stock and, for card codes, one code."""

    benefit_id: int
    took_stock: bool
    card_code_id: int | None


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


MAX_REPORTED_LINES = 100
IMPORT_BATCH = 5000


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
