"""Card-code pools on SQLite and PostgreSQL: encryption, de-duplication, whole-file refusal."""

from __future__ import annotations

import io
import threading
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.models import Benefit, CardCode, CardCodeLot
from perkflow.db import make_engine, make_session_factory
from perkflow.errors import Conflict, Forbidden, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from tests.catalog.helpers import add_benefit, add_partner, staff_actor

ZONE = "Asia/Shanghai"


def _pool(session: Session, vault: Vault, **overrides: object) -> Benefit:
    add_partner(session, vault)
    return add_benefit(
        session, code="tv-codes", fulfilment_kind="card_code", stock=None, **overrides
    )


def _import(
    session: Session, vault: Vault, benefit: Benefit, rows: list[str], actor: Actor = SYSTEM
) -> catalog.CodeImport:
    result = catalog.import_card_codes(
        session,
        actor=actor,
        vault=vault,
        benefit_id=benefit.id,
        file_name="C:\\partner\\codes.csv",
        unit_cost_fen=900,
        rows=rows,
    )
    session.commit()
    return result


def _codes(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CardCode)) or 0


def test_import_encrypts_codes_and_raises_stock(session: Session, vault: Vault) -> None:
    benefit = _pool(session, vault)
    assert (benefit.stock_total, benefit.stock_remaining) == (0, 0)
    seen: list[int] = []
    result = catalog.import_card_codes(
        session,
        actor=SYSTEM,
        vault=vault,
        benefit_id=benefit.id,
        file_name="/tmp/tv.csv",
        unit_cost_fen=900,
        rows=io.StringIO("code,pin,expiry\r\nTV-AAAA-0001,4321,2099-12-31\r\nTV-AAAA-0002\r\n"),
        progress=seen.append,
    )
    session.commit()
    assert (result.imported, result.duplicates) == (2, 0) and seen[-1] == 3
    assert (result.lot.count, result.lot.file_name, result.lot.unit_cost_fen) == (2, "tv.csv", 900)
    assert (benefit.stock_total, benefit.stock_remaining) == (2, 2)
    rows = session.scalars(select(CardCode).order_by(CardCode.id)).all()
    for row in rows:
        assert b"TV-AAAA" not in row.code_enc and "TV-AAAA" not in row.code_hash
        assert row.pin_enc is None or b"4321" not in row.pin_enc
    assert rows[0].expires_on == date(2099, 12, 31) and rows[1].expires_on is None
    assert catalog.reveal_code(session, vault=vault, code_id=rows[0].id) == ("TV-AAAA-0001", "4321")
    assert catalog.reveal_code(session, vault=vault, code_id=rows[1].id) == ("TV-AAAA-0002", None)
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "card_codes.import"))
    assert audit.one().details["count"] == 2


def test_duplicates_in_the_file_and_the_pool_are_skipped(session: Session, vault: Vault) -> None:
    benefit = _pool(session, vault)
    first = _import(session, vault, benefit, ["A-1", "A-2", "A-1", "A-3"])
    assert (first.imported, first.duplicates, first.duplicate_lines) == (3, 1, [3])
    second = _import(session, vault, benefit, ["A-3", "B-1", "A-1"])
    assert (second.imported, second.duplicates, second.duplicate_lines) == (1, 2, [1, 3])
    assert _codes(session) == 4
    assert (benefit.stock_total, benefit.stock_remaining) == (4, 4)
    lots = catalog.list_lots(session, actor=SYSTEM, benefit_id=benefit.id)
    assert [lot.count for lot in lots] == [1, 3]
    # A file of nothing new is refused rather than recorded as an empty lot.
    with pytest.raises(ValidationFailed, match="already in the pool") as err:
        _import(session, vault, benefit, ["A-1", "B-1"])
    assert err.value.field == "file"


def test_a_bad_file_is_refused_whole_with_line_numbers(session: Session, vault: Vault) -> None:
    benefit = _pool(session, vault)
    _import(session, vault, benefit, ["OLD-1"])
    yesterday = (date.today() - timedelta(days=2)).isoformat()
    rows = [
        "code,pin,expiry",
        "GOOD-1,1111,2099-01-01",
        "",
        "GOOD-2",
        "bad code,1",
        f"EXPIRED-1,,{yesterday}",
        "GOOD-3,,2099-02-30",
        "a,b,c,d",
        ",123",
    ]
    with pytest.raises(ValidationFailed) as err:
        catalog.import_card_codes(
            session,
            actor=SYSTEM,
            vault=vault,
            benefit_id=benefit.id,
            file_name="bad.csv",
            unit_cost_fen=900,
            rows=rows,
        )
    assert err.value.field == "file"
    errors = err.value.details["errors"]
    assert [e["line"] for e in errors] == [5, 6, 7, 8, 9]
    assert "expired" in errors[1]["reason"] and "YYYY-MM-DD" in errors[2]["reason"]
    assert err.value.details["error_count"] == 5
    # Nothing of it stays, even before the caller rolls back.
    session.flush()
    assert _codes(session) == 1
    assert session.scalar(select(func.count()).select_from(CardCodeLot)) == 1
    session.commit()
    session.refresh(benefit)
    assert (benefit.stock_total, benefit.stock_remaining) == (1, 1)


def test_a_bad_line_after_many_good_ones_leaves_nothing(session: Session, vault: Vault) -> None:
    benefit = _pool(session, vault)
    rows = [f"CODE-{i:06d}" for i in range(catalog.IMPORT_BATCH + 10)] + ["no good"]
    with pytest.raises(ValidationFailed) as err:
        _import(session, vault, benefit, rows)
    assert err.value.details["errors"] == [
        {"line": len(rows), "reason": err.value.details["errors"][0]["reason"]}
    ]
    session.commit()
    assert _codes(session) == 0 and benefit.stock_total == 0


def test_import_needs_a_card_code_benefit_and_an_editor(session: Session, vault: Vault) -> None:
    benefit = _pool(session, vault)
    other = add_benefit(session, code="direct")
    with pytest.raises(ValidationFailed) as err:
        _import(session, vault, other, ["X-1"])
    assert err.value.field == "benefit_id"
    session.rollback()
    marketer = staff_actor(session, "gd", Role.PROVINCE_MARKETER, "GD")
    with pytest.raises(Forbidden):
        _import(session, vault, benefit, ["X-1"], actor=marketer)
    session.rollback()
    with pytest.raises(ValidationFailed) as err:
        _import(session, vault, benefit, [])
    assert err.value.field == "file"


def test_pool_levels_count_allocated_and_expired(session: Session, vault: Vault) -> None:
    benefit = _pool(session, vault)
    _import(session, vault, benefit, ["A-1", "A-2", "A-3,,2099-01-01"])
    catalog.reserve_for_grant(session, benefit=benefit, zone=ZONE)
    session.commit()
    levels = catalog.pool_levels(session, actor=SYSTEM, benefit_id=benefit.id)
    assert (levels.available, levels.allocated, levels.expired, levels.usable) == (2, 1, 0, 2)
    session.refresh(benefit)
    assert (benefit.stock_total, benefit.stock_remaining) == (3, 2)


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_fifty_concurrent_reservations_share_twenty_codes(engine: Engine, vault: Vault) -> None:
    # One connection per thread, so all fifty really race instead of queueing for the pool.
    wide = make_engine(engine.url.render_as_string(hide_password=False), pool_size=50)
    sessions = make_session_factory(wide)
    with sessions() as s:
        benefit = _pool(s, vault)
        _import(s, vault, benefit, [f"PG-{i:03d}" for i in range(20)])
        benefit_id = benefit.id
    barrier = threading.Barrier(50)
    codes: list[int] = []
    sold_out: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with sessions() as s:
            b = s.get(Benefit, benefit_id)
            assert b is not None
            barrier.wait()
            try:
                reservation = catalog.reserve_for_grant(s, benefit=b, zone=ZONE)
                s.commit()
            except Conflict as exc:
                s.rollback()
                with lock:
                    sold_out.append(exc.message)
                return
            assert reservation.card_code_id is not None
            with lock:
                codes.append(reservation.card_code_id)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(codes) == 20 and len(set(codes)) == 20
    assert len(sold_out) == 30
    with sessions() as s:
        b = s.get(Benefit, benefit_id)
        assert b is not None and (b.stock_total, b.stock_remaining) == (20, 0)
        allocated = s.scalar(
            select(func.count()).select_from(CardCode).where(CardCode.status == "allocated")
        )
        assert allocated == 20
    wide.dispose()
