"""SMS over SMPP against the loopback SMSC: exact messages, receipts, outages."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from perkflow.channels.rules import Receipt
from perkflow.channels.sms import SmppChannel
from perkflow.channels.smsc_sim import SmscSim
from perkflow.settings import Settings
from tests.channels.helpers import msg, poll

LONG_ZH = "【权益中心】尊敬的客户，您本月的流量包优惠已到账，点击链接领取视频会员与外卖红包。" * 4


@pytest.fixture
def smsc() -> Iterator[SmscSim]:
    with SmscSim(undeliverable={"13900000002"}, rejected={"000"}) as sim:
        yield sim


@pytest.fixture
def sms(smsc: SmscSim) -> Iterator[SmppChannel]:
    channel = SmppChannel(
        host="127.0.0.1", port=smsc.port, system_id="perkflow", password="secret", timeout_s=2
    )
    yield channel
    channel.close()


def test_the_smsc_receives_exactly_the_messages_sent(smsc: SmscSim, sms: SmppChannel) -> None:
    batch = [
        msg(1, "13800000001", "Hello, your data pack is ready"),
        msg(2, "13900000002", "您好，流量包优惠已到账 🎁"),
        msg(3, "13800000003", LONG_ZH),
    ]
    results = sms.send(None, batch)
    assert [r.ok for r in results] == [True, True, True]
    assert [r.contact_id for r in results] == [1, 2, 3]
    received = smsc.wait_for(3)
    assert len(received) == 3
    assert [(m.destination, m.text) for m in received] == [(m.address, m.body) for m in batch]
    assert received[1].data_coding == 8  # UCS2 for Chinese
    assert len(received[2].message_ids) == (len(LONG_ZH) + 66) // 67  # 67 UCS2 chars per part
    assert {m.source for m in received} == {"10086"}
    # The ref of each message is the SMSC's message_id (a long one's first part).
    assert [r.message_ref for r in results] == [m.message_ids[0] for m in received]

    receipts = poll(sms.receipts, count=3)
    assert sorted(receipts, key=lambda r: r.message_ref) == sorted(
        [
            Receipt(message_ref=str(results[0].message_ref), delivered=True),
            Receipt(
                message_ref=str(results[1].message_ref), delivered=False, error="UNDELIV err:001"
            ),
            Receipt(message_ref=str(results[2].message_ref), delivered=True),
        ],
        key=lambda r: r.message_ref,
    )
    assert sms.receipts() == []  # each receipt is given once
    assert len(smsc.messages) == 3  # and nothing was sent twice


def test_a_refused_destination_is_not_retryable_and_the_rest_go_through(
    smsc: SmscSim, sms: SmppChannel
) -> None:
    results = sms.send(None, [msg(1, "000"), msg(2, "13800000001")])
    assert not results[0].ok and not results[0].retryable and "0x0b" in (results[0].error or "")
    assert results[1].ok
    assert [m.destination for m in smsc.wait_for(1)] == ["13800000001"]


def test_an_smsc_outage_gives_retryable_failures_and_a_resend_succeeds(
    smsc: SmscSim, sms: SmppChannel
) -> None:
    first = sms.send(None, [msg(1, "13800000001")])[0]
    assert first.ok
    smsc.refuse()
    down = sms.send(None, [msg(2, "13800000002"), msg(3, "13800000003")])
    assert [(r.ok, r.retryable) for r in down] == [(False, True), (False, True)]
    assert all("unreachable" in (r.error or "") for r in down)
    early = sms.receipts()  # never raises while the SMSC is down
    assert {r.message_ref for r in early} <= {first.message_ref}
    smsc.resume()
    again = sms.send(None, [msg(2, "13800000002"), msg(3, "13800000003")])
    assert [r.ok for r in again] == [True, True]
    assert [m.destination for m in smsc.wait_for(3)] == [
        "13800000001",
        "13800000002",
        "13800000003",
    ]
    # Every receipt arrives, the first one's too (the SMSC keeps it until acknowledged).
    wanted = {first.message_ref, again[0].message_ref, again[1].message_ref}
    refs = {r.message_ref for r in early}
    deadline = time.monotonic() + 5
    while refs != wanted and time.monotonic() < deadline:
        refs |= {r.message_ref for r in sms.receipts()}
        time.sleep(0.01)
    assert refs == wanted


def test_a_dropped_session_is_reopened_within_the_send(smsc: SmscSim, sms: SmppChannel) -> None:
    assert sms.send(None, [msg(1, "13800000001")])[0].ok
    smsc.drop_connections()
    result = sms.send(None, [msg(2, "13800000002")])[0]
    assert result.ok, result.error
    assert smsc.binds == 2
    assert [m.destination for m in smsc.wait_for(2)] == ["13800000001", "13800000002"]


def test_receipts_held_during_a_drop_arrive_after_the_rebind(smsc: SmscSim) -> None:
    # Nobody is bound to receive: the SMSC keeps the receipt until a session binds again.
    sender = SmppChannel(host="127.0.0.1", port=smsc.port, system_id="perkflow", password="secret")
    ref = sender.send(None, [msg(1, "13800000001")])[0].message_ref
    smsc.drop_connections()
    receipts = poll(sender.receipts, count=1)  # receipts() rebinds and reads
    sender.close()
    assert receipts == [Receipt(message_ref=str(ref), delivered=True)]


def test_a_wrong_password_fails_retryably_without_raising(smsc: SmscSim) -> None:
    channel = SmppChannel(host="127.0.0.1", port=smsc.port, system_id="perkflow", password="nope")
    [result] = channel.send(None, [msg(1, "13800000001")])
    channel.close()
    assert not result.ok and result.retryable and "refused the bind" in (result.error or "")
    assert smsc.messages == []


def test_any_session_may_ask_the_smsc_for_a_message_s_final_state(smsc: SmscSim) -> None:
    sender = SmppChannel(host="127.0.0.1", port=smsc.port, system_id="perkflow", password="secret")
    good, bad = sender.send(None, [msg(1, "13800000001"), msg(2, "13900000002")])
    sender.close()
    asker = SmppChannel(host="127.0.0.1", port=smsc.port, system_id="perkflow", password="secret")
    found = asker.query([str(good.message_ref), str(bad.message_ref), "FFFFFFFFFF"])
    asker.close()
    assert found == [
        Receipt(message_ref=str(good.message_ref), delivered=True),
        Receipt(message_ref=str(bad.message_ref), delivered=False, error="UNDELIV"),
    ]  # an id the SMSC does not know gives nothing


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("smpp_password", "123456789", "at most 8 characters"),
        ("smpp_system_id", "perkflow-province-gd", "at most 15 characters"),
        ("smpp_system_id", "", "required"),
        ("smpp_password", "pässwd", "printable ASCII"),
    ],
)
def test_smpp_settings_an_smsc_would_refuse_are_refused_when_they_load(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**{variable: value})
    assert Settings(smpp_password="12345678", smpp_system_id="a" * 15).smpp_password == "12345678"
