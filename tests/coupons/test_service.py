"""Coupons on SQLite and PostgreSQL: claims, limits, codes, redemption, reversal, envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from perkflow.coupons import service as coupons
from perkflow.coupons.models import Coupon, PoolCode, Redemption
from perkflow.coupons.rules import BatchStatus, CodeSource, Refusal
from perkflow.coupons.schemas import BatchSpec, OfflineEntry
from perkflow.errors import Conflict, Forbidden, TooManyRequests
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Actor, Role
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_staff, make_subscribers

GD = [("13812340001", "GD", "GD01"), ("13812340002", "GD", "GD01"), ("13912340003", "ZJ", "ZJ01")]


def _staff(session: Session, username: str, role: Role, region: str) -> Actor:
    user = make_staff(session, username=username, role=role, region=region)
    return org.actor_for_staff(session, user=user, ip="127.0.0.1")


def _claim(
    session: Session, vault: Vault, batch_id: int, sid: int, key: str
) -> coupons.ClaimOutcome:
    outcome = coupons.claim_coupon(
        session,
        actor=coupons.subscriber_actor(sid),
        vault=vault,
        batch_id=batch_id,
        subscriber_id=sid,
        idempotency_key=key,
        channel="h5",
        device_id="dev-1",
        zone=ZONE,
    )
    session.commit()
    return outcome


def test_claim_lands_in_the_wallet_with_a_code_and_is_idempotent(
    session: Session, vault: Vault
) -> None:
    a, _b, _c = make_subscribers(session, vault, GD)
    batch = make_batch(session, limit_total=2)
    first = _claim(session, vault, batch.id, a, "key-00000001")
    again = _claim(session, vault, batch.id, a, "key-00000001")
    assert not first.replayed and again.replayed and again.coupon.id == first.coupon.id
    items = coupons.wallet(session, actor=coupons.subscriber_actor(a), vault=vault, subscriber_id=a)
    assert len(items) == 1 and len(items[0].code) == 10
    assert session.scalar(select(func.count()).select_from(Coupon)) == 1
    stock = coupons.stock_of(session, actor=SYSTEM, batch_id=batch.id)
    assert (stock.total, stock.remaining, stock.claimed) == (100, 99, 1)
    actions = session.scalars(select(AuditEntry.action)).all()
    assert actions.count("coupon.claim") == 1


def test_limits_total_and_per_day(session: Session, vault: Vault) -> None:
    [a, *_] = make_subscribers(session, vault, GD)
    frozen = clock.FrozenClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    clock.set_clock(frozen)
    try:
        batch = make_batch(session, limit_total=3, limit_per_day=2)
        _claim(session, vault, batch.id, a, "day1-key-1")
        _claim(session, vault, batch.id, a, "day1-key-2")
        with pytest.raises(coupons.LimitReached):
            _claim(session, vault, batch.id, a, "day1-key-3")
        session.rollback()
        frozen.advance(days=1)
        _claim(session, vault, batch.id, a, "day2-key-1")
        with pytest.raises(coupons.LimitReached):
            _claim(session, vault, batch.id, a, "day2-key-2")
        session.rollback()
    finally:
        clock.set_clock(None)
    assert coupons.stock_of(session, actor=SYSTEM, batch_id=batch.id).remaining == 97


def test_sold_out_is_clear_and_nothing_is_oversold(session: Session, vault: Vault) -> None:
    a, b, c = make_subscribers(session, vault, GD)
    batch = make_batch(session, stock_total=2, flash_sale=True)
    _claim(session, vault, batch.id, a, "sold-out-a")
    _claim(session, vault, batch.id, b, "sold-out-b")
    with pytest.raises(coupons.SoldOut) as err:
        _claim(session, vault, batch.id, c, "sold-out-c")
    assert err.value.code == "sold_out"
    session.rollback()
    slots = sorted(session.scalars(select(Coupon.slot)).all())
    assert slots == [0, 1]


def test_flash_sale_not_started_and_province_batches(session: Session, vault: Vault) -> None:
    a, _b, zj = make_subscribers(session, vault, GD)
    later = make_batch(session, claim_starts_at=clock.now() + timedelta(minutes=5))
    with pytest.raises(coupons.NotClaimable, match="not started"):
        _claim(session, vault, later.id, a, "too-early-1")
    session.rollback()
    marketer = _staff(session, "gdm", Role.PROVINCE_MARKETER, "GD")
    gd_batch = coupons.create_batch(
        session,
        actor=marketer,
        spec=BatchSpec(code="gd-only", name_zh="粤", name_en="GD", amount_fen=500, stock_total=10),
    )
    coupons.set_batch_status(
        session, actor=marketer, batch_id=gd_batch.id, status=BatchStatus.ACTIVE
    )
    session.commit()
    assert gd_batch.owner_region == "GD" and gd_batch.scope_regions == ["CN/GD"]
    with pytest.raises(Forbidden):
        _claim(session, vault, gd_batch.id, zj, "zj-claims-gd")
    session.rollback()
    zj_marketer = _staff(session, "zjm", Role.PROVINCE_MARKETER, "ZJ")
    with pytest.raises(Forbidden):
        coupons.set_batch_status(
            session, actor=zj_marketer, batch_id=gd_batch.id, status=BatchStatus.PAUSED
        )


def test_rate_limit_per_subscriber_and_device(session: Session, vault: Vault) -> None:
    a, b, _c = make_subscribers(session, vault, GD)
    frozen = clock.FrozenClock(datetime(2026, 11, 23, 2, 0, 1, tzinfo=UTC))
    clock.set_clock(frozen)
    try:
        for _ in range(5):
            coupons.admit_claim_attempt(session, subscriber_id=a, device_id="d1", batch_id=1)
        with pytest.raises(TooManyRequests):
            coupons.admit_claim_attempt(session, subscriber_id=a, device_id="d1", batch_id=1)
        # One device, many subscribers: the device limit (20 a window) applies on its own.
        for i in range(20):
            coupons.admit_claim_attempt(
                session, subscriber_id=10_000 + i, device_id="d2", batch_id=1
            )
        with pytest.raises(TooManyRequests):
            coupons.admit_claim_attempt(session, subscriber_id=b, device_id="d2", batch_id=1)
        frozen.advance(seconds=10)
        coupons.admit_claim_attempt(session, subscriber_id=a, device_id="d1", batch_id=1)
    finally:
        clock.set_clock(None)


def test_redeem_once_in_scope_with_min_spend_and_reverse_in_window(
    session: Session, vault: Vault
) -> None:
    [a, *_] = make_subscribers(session, vault, GD)
    batch = make_batch(session, scope_regions=["GD01"], reversal_window_s=600)
    code = coupons.wallet(
        session,
        actor=coupons.subscriber_actor(a),
        vault=vault,
        subscriber_id=_claim(session, vault, batch.id, a, "redeem-key-1").coupon.subscriber_id,
    )[0].code
    clerk = _staff(session, "gz", Role.CLERK, "GD01S1")
    far_clerk = _staff(session, "hz", Role.CLERK, "ZJ01S1")
    card = coupons.look_up_coupon(session, actor=clerk, vault=vault, code=code.lower())
    assert card.phone == "138****0001" and card.refusal is None
    far = coupons.look_up_coupon(session, actor=far_clerk, vault=vault, code=code)
    assert far.refusal is not None and far.refusal[0] == Refusal.OUT_OF_SCOPE
    with pytest.raises(coupons.Refused) as err:
        coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=4999)
    assert err.value.reason == Refusal.MIN_SPEND
    session.rollback()
    frozen = clock.FrozenClock(clock.now())
    clock.set_clock(frozen)
    try:
        done = coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=8000)
        session.commit()
        assert done.discount_fen == 1000 and done.store_code == "GD01S1"
        with pytest.raises(coupons.Refused) as err:
            coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=8000)
        assert err.value.reason == Refusal.ALREADY_REDEEMED
        session.rollback()
        today = coupons.store_today(session, actor=clerk, zone=ZONE)
        assert [t.redemption.id for t in today] == [done.id] and today[0].reversible
        with pytest.raises(Forbidden):
            coupons.reverse_redemption(session, actor=far_clerk, redemption_id=done.id, reason="x")
        coupons.reverse_redemption(session, actor=clerk, redemption_id=done.id, reason="mistake")
        session.commit()
        again = coupons.redeem_coupon(session, actor=clerk, vault=vault, code=code, order_fen=9000)
        session.commit()
        frozen.advance(seconds=601)
        with pytest.raises(Conflict, match="within 10 minutes"):
            coupons.reverse_redemption(session, actor=clerk, redemption_id=again.id, reason="late")
        session.rollback()
    finally:
        clock.set_clock(None)
    assert session.scalar(select(func.count()).select_from(Redemption)) == 2


def test_offline_upload_same_code_twice_gives_one_success_one_rejection(
    session: Session, vault: Vault
) -> None:
    a, b, _c = make_subscribers(session, vault, GD)
    frozen = clock.FrozenClock(clock.now())
    clock.set_clock(frozen)
    try:
        _offline(session, vault, a, b, frozen)
    finally:
        clock.set_clock(None)


def _offline(session: Session, vault: Vault, a: int, b: int, frozen: clock.FrozenClock) -> None:
    batch = make_batch(session)
    codes = []
    for sid, key in ((a, "offline-a"), (b, "offline-b")):
        _claim(session, vault, batch.id, sid, key)
        codes.append(
            coupons.wallet(
                session, actor=coupons.subscriber_actor(sid), vault=vault, subscriber_id=sid
            )[0].code
        )
    clerk = _staff(session, "gz", Role.CLERK, "GD01S1")
    t0 = clock.now() + timedelta(minutes=1)
    frozen.advance(minutes=30)
    entries = [
        OfflineEntry(
            client_ref="r2", code=codes[0], order_fen=6000, recorded_at=t0 + timedelta(minutes=5)
        ),
        OfflineEntry(client_ref="r1", code=codes[0], order_fen=6000, recorded_at=t0),
        OfflineEntry(client_ref="r3", code=codes[1], order_fen=6000, recorded_at=t0),
        OfflineEntry(client_ref="r4", code="NOSUCHCODE", order_fen=6000, recorded_at=t0),
    ]
    results = coupons.redeem_offline(session, actor=clerk, vault=vault, entries=entries)
    session.commit()
    by_ref = {r.client_ref: r for r in results}
    assert by_ref["r1"].redemption_id is not None
    assert by_ref["r2"].reason == Refusal.ALREADY_REDEEMED.value
    assert by_ref["r3"].redemption_id is not None
    assert by_ref["r4"].reason == Refusal.NOT_FOUND.value
    # The same upload sent again changes nothing and says so.
    again = coupons.redeem_offline(session, actor=clerk, vault=vault, entries=entries)
    session.commit()
    assert {r.client_ref: r.redemption_id for r in again}["r1"] == by_ref["r1"].redemption_id
    assert session.scalar(select(func.count()).select_from(Redemption)) == 2
    # As facts for campaign responses, an offline redemption happened when the clerk took it,
    # not half an hour later when the upload reached the ledger.
    facts = coupons.redemptions_since(session, after_id=0)
    assert [clock.as_utc(f.at) for f in facts] == [t0, t0]


def test_pattern_codes_are_generated_in_resumable_chunks(session: Session, vault: Vault) -> None:
    [a, *_] = make_subscribers(session, vault, GD)
    batch = make_batch(
        session,
        activate=False,
        stock_total=2500,
        code_source=CodeSource.PATTERN,
        code_charset="digits",
        code_prefix="PF",
        code_length=8,
    )
    with pytest.raises(Conflict, match="codes exist"):
        coupons.set_batch_status(
            session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE
        )
    session.rollback()
    job = coupons.start_code_job(session, actor=SYSTEM, batch_id=batch.id)
    session.commit()
    with pytest.raises(Conflict, match="already running"):
        coupons.start_code_job(session, actor=SYSTEM, batch_id=batch.id)
    session.rollback()
    while job.status != "done":
        job = coupons.run_code_chunk(session, vault=vault, job_id=job.id, size=1000)
        session.commit()
    assert job.done == 2500
    coupons.set_batch_status(session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE)
    session.commit()
    outcome = _claim(session, vault, batch.id, a, "pattern-claim")
    pooled = session.scalar(
        select(PoolCode).where(
            PoolCode.batch_id == batch.id, PoolCode.ordinal == outcome.coupon.slot
        )
    )
    assert pooled is not None and pooled.code_hash == outcome.coupon.code_hash
    exported = coupons.export_codes(
        session, actor=SYSTEM, vault=vault, batch_id=batch.id, limit=3000
    )
    assert len({c for _, c in exported}) == 2500 and all(c.startswith("PF") for _, c in exported)


def test_imported_codes_skip_duplicates_and_report_bad_lines(
    session: Session, vault: Vault
) -> None:
    batch = make_batch(session, activate=False, stock_total=3, code_source=CodeSource.IMPORT)
    report = coupons.import_codes(
        session,
        actor=SYSTEM,
        vault=vault,
        batch_id=batch.id,
        codes=["abcd-1234", "ABCD1234", "x!", "ZZZZ9999", "", "QQQQ0000"],
    )
    session.commit()
    assert (report.added, report.duplicates, [n for n, _ in report.invalid]) == (3, 1, [3])
    coupons.set_batch_status(session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE)
