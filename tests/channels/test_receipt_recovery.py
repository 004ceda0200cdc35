"""Delivery receipts of SMS sent by a worker that died reach their contacts (loopback SMSC)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import tasks
from perkflow.channels.rules import Message, Receipt, SendResult
from perkflow.channels.sms import SmppChannel
from perkflow.channels.smsc_sim import SmscSim
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.settings import Settings
from tests.audience.helpers import profile
from tests.campaigns.helpers import NOW, contacts, dispatcher, everyone, run, spec, started
from tests.factories import make_subscribers

PHONES = [f"1380000{i:04d}" for i in range(4)]
UNDELIVERABLE = PHONES[3]


@pytest.fixture
def smsc() -> Iterator[SmscSim]:
    with SmscSim(undeliverable={UNDELIVERABLE}) as sim:
        yield sim


@pytest.fixture
def mart(settings: Settings) -> Mart:
    return Mart(settings.mart_dir)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[clock.FrozenClock]:
    c = clock.FrozenClock(NOW)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


def _channel(smsc: SmscSim) -> SmppChannel:
    return SmppChannel(
        host="127.0.0.1", port=smsc.port, system_id="perkflow", password="secret", timeout_s=2
    )


def _kill(channel: SmppChannel) -> None:
    """The worker's process dies: its socket closes, nothing is unbound or read any more."""
    channel._client._socket.close()
    channel._client = None


class DiesAfterReading:
    """A worker killed between reading its receipts off the SMPP session and recording them."""

    name = "sms"

    def __init__(self, inner: SmppChannel, *, wait_for: int) -> None:
        self.inner = inner
        self.wait_for = wait_for

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        return self.inner.send(session, messages)

    def receipts(self) -> list[Receipt]:
        read: list[Receipt] = []
        deadline = time.monotonic() + 5
        while len(read) < self.wait_for and time.monotonic() < deadline:
            read.extend(self.inner.receipts())
        assert len(read) == self.wait_for, "the SMSC sent no receipts"
        _kill(self.inner)
        return []  # died before the transaction that records them

    def close(self) -> None:
        pass


def _sms_campaign(session: Session, mart: Mart, vault: Vault) -> int:
    ids = make_subscribers(session, vault, [(p, "GD", "GD01") for p in PHONES])
    profile(mart, [{"subscriber_id": i} for i in ids])
    seg = everyone(session, mart)
    raw = spec(seg, variants=[{"key": "S", "channel": "sms", "body": "Hi {{ masked_phone }}"}])
    return started(session, mart, vault, {**raw, "control_share": 0}).id


def _states(session: Session, campaign_id: int) -> dict[str, str]:
    return {str(c.message_ref): c.status for c in contacts(session, campaign_id)}


def test_receipts_read_by_a_worker_that_died_are_recovered_by_asking_the_smsc(
    session: Session,
    sessions: sessionmaker[Session],
    mart: Mart,
    vault: Vault,
    settings: Settings,
    smsc: SmscSim,
    frozen: clock.FrozenClock,
) -> None:
    cid = _sms_campaign(session, mart, vault)
    first = DiesAfterReading(_channel(smsc), wait_for=len(PHONES))
    run(sessions, dispatcher(vault, settings, {"sms": first}), mart, once=True)
    assert set(_states(session, cid).values()) == {"sent"}  # sent, and the receipts lost
    assert smsc.receipts_sent == len(PHONES)

    # A new worker: the SMSC has no receipt left to give it, so it asks (query_sm) about the
    # messages still `sent` once they are older than its patience.
    second = _channel(smsc)
    d = dispatcher(vault, settings, {"sms": second}, receipt_query_every_s=0)
    try:
        tasks.dispatch_batch(sessions, d)
        assert set(_states(session, cid).values()) == {"sent"}
        assert smsc.queries == 0  # not yet: a receipt may still be on its way
        frozen.advance(seconds=d.receipt_query_after_s + 1)
        report = tasks.dispatch_batch(sessions, d)
    finally:
        second.close()
    assert report.receipts == len(PHONES)
    rows = contacts(session, cid)
    assert sorted(r.status for r in rows) == ["delivered", "delivered", "delivered", "failed"]
    assert {r.error for r in rows if r.status == "failed"} == {"UNDELIV"}
    assert smsc.queries == len(PHONES)
    # Asked once: settled contacts are not asked about again.
    assert tasks.recover_receipts(sessions, d) == 0 and smsc.queries == len(PHONES)


def test_receipts_for_a_worker_killed_before_they_came_go_to_the_next_one(
    session: Session,
    sessions: sessionmaker[Session],
    mart: Mart,
    vault: Vault,
    settings: Settings,
) -> None:
    # The SMSC holds the receipts back until the client has recorded its sends, then the
    # client is killed: the receipts wait in the SMSC for the next bind of the same system_id.
    with SmscSim(undeliverable={UNDELIVERABLE}) as smsc:
        cid = _sms_campaign(session, mart, vault)
        first = _channel(smsc)
        real_flush = smsc._flush_receipts
        smsc._flush_receipts = lambda: None  # type: ignore[method-assign]
        run(sessions, dispatcher(vault, settings, {"sms": first}), mart, once=True)
        assert set(_states(session, cid).values()) == {"sent"}
        assert smsc.receipts_sent == 0
        _kill(first)
        smsc._flush_receipts = real_flush  # type: ignore[method-assign]

        second = _channel(smsc)
        d = dispatcher(vault, settings, {"sms": second})
        try:
            deadline = time.monotonic() + 5
            while set(_states(session, cid).values()) & {"sent"}:
                assert time.monotonic() < deadline, _states(session, cid)
                tasks.apply_receipts(sessions, d)
        finally:
            second.close()
        rows = contacts(session, cid)
        assert sorted(r.status for r in rows) == ["delivered", "delivered", "delivered", "failed"]
        assert smsc.queries == 0  # the re-bind delivered them; nothing had to be asked
