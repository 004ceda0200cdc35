"""Tests do not inherit each other's leftovers: the factories hand out the same ids in any order."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from perkflow.kit.crypto import Vault
from tests.factories import make_api_key, make_subscribers

FIRST_ID = 1_000_001


def test_a_test_that_makes_subscribers_and_keys(
    web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        ids = make_subscribers(
            s, vault, [("13600000001", "GD", "GD01"), ("13600000002", "GD", "GD01")]
        )
        make_api_key(s, scopes=["events:write"])
    assert ids == [FIRST_ID, FIRST_ID + 1]


def test_the_next_test_gets_the_same_subscriber_ids_as_if_it_ran_alone(
    web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    # A subscriber's id decides its keyed-hash cells (control, universal control group): it must
    # not depend on how many subscribers the tests before this one made.
    with web_sessions() as s:
        assert make_subscribers(s, vault, [("13600000001", "GD", "GD01")]) == [FIRST_ID]
