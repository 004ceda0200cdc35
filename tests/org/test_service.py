"""Organisation use cases on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from perkflow.errors import Conflict, Forbidden, TooManyRequests, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import sha256_hex
from perkflow.org import service as org
from perkflow.org.models import ApiKey, AuditEntry, LoginAttempt, Region
from perkflow.org.rules import SYSTEM, Role
from tests.factories import PASSWORD, make_staff


def test_region_tree_is_seeded_with_31_provinces(session: Session) -> None:
    levels = dict(session.execute(select(Region.level, func.count()).group_by(Region.level)).all())
    assert levels["group"] == 1
    assert levels["province"] == 31
    assert levels["city"] >= 100
    assert levels["store"] == levels["city"] * 3
    assert org.get_region(session, code="GD01").path == "CN/GD/GD01"
    # Seeding again adds nothing.
    assert org.seed_regions(session) == 0


def test_staff_scope_must_fit_the_role(session: Session) -> None:
    with pytest.raises(ValidationFailed) as err:
        org.create_staff(
            session,
            actor=SYSTEM,
            username="m",
            display_name="M",
            password=PASSWORD,
            role=Role.PROVINCE_MARKETER,
            region_code="CN",
        )
    assert err.value.field == "region_code"
    with pytest.raises(ValidationFailed) as err:
        org.create_staff(
            session,
            actor=SYSTEM,
            username="m",
            display_name="M",
            password="password",
            role=Role.HQ_ADMIN,
            region_code="CN",
        )
    assert err.value.field == "password"


def test_duplicate_username_is_a_conflict(session: Session) -> None:
    make_staff(session, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
    with pytest.raises(Conflict):
        org.create_staff(
            session,
            actor=SYSTEM,
            username="gd",
            display_name="again",
            password=PASSWORD,
            role=Role.PROVINCE_MARKETER,
            region_code="GD",
        )


def test_passwords_are_stored_as_argon2_hashes(session: Session) -> None:
    user = make_staff(session, username="admin", role=Role.HQ_ADMIN, region="CN")
    assert user.password_hash.startswith("$argon2")
    assert PASSWORD not in user.password_hash


def _try(session: Session, password: str, *, max_failures: int = 3) -> org.SignIn:
    turn = org.take_sign_in_turn(
        session, username="admin", ip="10.0.0.1", max_failures=max_failures, window_s=900
    )
    return org.sign_in(session, turn=turn, password=password)


def test_sign_in_records_attempts_and_locks_after_repeated_failures(session: Session) -> None:
    make_staff(session, username="admin", role=Role.HQ_ADMIN, region="CN")
    assert _try(session, PASSWORD).user is not None
    for _ in range(3):
        assert _try(session, "wrong-password-1").user is None
    with pytest.raises(TooManyRequests):
        _try(session, PASSWORD)
    assert session.scalar(select(func.count()).select_from(LoginAttempt)) == 4


def test_a_success_gives_its_turn_back_and_the_window_ends(session: Session) -> None:
    make_staff(session, username="admin", role=Role.HQ_ADMIN, region="CN")
    frozen = clock.FrozenClock(clock.now())
    clock.set_clock(frozen)
    try:
        for _ in range(2):
            assert _try(session, "wrong-password-1").user is None
        for _ in range(5):  # successes do not use up the window
            assert _try(session, PASSWORD).user is not None
        assert _try(session, "wrong-password-1").user is None
        with pytest.raises(TooManyRequests):
            _try(session, PASSWORD)
        frozen.advance(seconds=901)
        assert _try(session, PASSWORD).user is not None
    finally:
        clock.set_clock(None)


def test_api_keys_are_stored_hashed_and_carry_scopes(session: Session) -> None:
    key, plaintext = org.create_api_key(
        session, actor=SYSTEM, name="sms gateway", owner_kind="channel", scopes=["h5:link"]
    )
    stored = session.scalar(select(ApiKey).where(ApiKey.id == key.id))
    assert stored is not None and stored.key_hash == sha256_hex(plaintext)
    assert plaintext not in (stored.key_hash, stored.key_prefix)
    actor = org.actor_for_api_key(session, presented=plaintext, ip="127.0.0.1")
    assert actor is not None and actor.has_scope("h5:link")
    assert not actor.has_scope("subscribers:status")
    org.revoke_api_key(session, actor=SYSTEM, key_id=key.id)
    assert org.actor_for_api_key(session, presented=plaintext, ip="127.0.0.1") is None


def test_api_key_with_unknown_scope_is_refused(session: Session) -> None:
    with pytest.raises(ValidationFailed) as err:
        org.create_api_key(
            session, actor=SYSTEM, name="x", owner_kind="partner", scopes=["everything"]
        )
    assert err.value.field == "scopes"


def test_only_hq_admin_reads_the_audit_log(session: Session) -> None:
    admin = make_staff(session, username="admin", role=Role.HQ_ADMIN, region="CN")
    marketer = make_staff(session, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
    rows, total = org.list_audit(
        session, actor=org.actor_for_staff(session, user=admin, ip="-"), offset=0, limit=10
    )
    assert total == 2 and {r.action for r in rows} == {"staff.create"}
    with pytest.raises(Forbidden):
        org.list_audit(
            session, actor=org.actor_for_staff(session, user=marketer, ip="-"), offset=0, limit=10
        )


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"]
)
def test_audit_log_is_append_only_in_the_database(session: Session, statement: str) -> None:
    make_staff(session, username="admin", role=Role.HQ_ADMIN, region="CN")
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text(statement))
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1


def test_region_outside_scope_is_forbidden(session: Session) -> None:
    marketer = make_staff(session, username="gd", role=Role.PROVINCE_MARKETER, region="GD")
    actor = org.actor_for_staff(session, user=marketer, ip="-")
    assert org.require_region(session, actor=actor, region_code="GD01").code == "GD01"
    with pytest.raises(Forbidden):
        org.require_region(session, actor=actor, region_code="ZJ")
