from __future__ import annotations

from perkflow.org.rules import Actor, Perm, Role, covers, password_problem, province_of


def test_scope_covers_itself_and_below_only() -> None:
    assert covers("CN/GD", "CN/GD")
    assert covers("CN/GD", "CN/GD/GD01/GD01S1")
    assert not covers("CN/GD", "CN/GX")
    # A prefix of the code is not a parent: GD must not cover a hypothetical GDX.
    assert not covers("CN/GD", "CN/GDX")


def test_roles_hold_their_permissions() -> None:
    marketer = Actor(
        kind="staff", id="1", name="m", role=Role.PROVINCE_MARKETER, scope_path="CN/GD"
    )
    clerk = Actor(kind="staff", id="2", name="c", role=Role.CLERK, scope_path="CN/GD/GD01/GD01S1")
    assert marketer.can(Perm.SUBSCRIBERS_STATUS)
    assert not marketer.can(Perm.AUDIT_READ)
    assert not marketer.can(Perm.PHONE_REVEAL)
    assert not clerk.can(Perm.SUBSCRIBERS_READ)


def test_province_of_path() -> None:
    assert province_of("CN") is None
    assert province_of("CN/GD/GD01") == "GD"


def test_password_rules() -> None:
    assert password_problem("short1") is not None
    assert password_problem("abcdefghijkl") is not None
    assert password_problem("correct-horse-42") is None
