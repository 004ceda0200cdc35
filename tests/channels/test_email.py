"""E-mail over SMTP against a real aiosmtpd server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from perkflow.channels.email import SmtpChannel
from perkflow.channels.smtp_sink import SmtpSink, free_port
from tests.channels.helpers import msg


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(rejected={"13800000009@mail.example.net"}) as s:
        yield s


@pytest.fixture
def email(sink: SmtpSink) -> SmtpChannel:
    return SmtpChannel(
        host="127.0.0.1", port=sink.port, sender="benefits@mail.example.net", timeout_s=5
    )


def test_the_sink_receives_exactly_the_messages_sent(sink: SmtpSink, email: SmtpChannel) -> None:
    batch = [
        msg(1, "13800000001@mail.example.net", "您的会员权益已到账。", subject="权益到账提醒"),
        msg(2, "13800000002@mail.example.net", "Your coupon is ready.", subject="Coupon"),
    ]
    results = email.send(None, batch)
    assert [(r.ok, r.delivered) for r in results] == [(True, False), (True, False)]
    assert [r.message_ref for r in results] == ["<pf-7-1@perkflow>", "<pf-7-2@perkflow>"]
    got = sink.wait_for(2)
    assert [(m.to, m.subject, m.body, m.message_id) for m in got] == [
        (
            "13800000001@mail.example.net",
            "权益到账提醒",
            "您的会员权益已到账。",
            "<pf-7-1@perkflow>",
        ),
        ("13800000002@mail.example.net", "Coupon", "Your coupon is ready.", "<pf-7-2@perkflow>"),
    ]
    assert {m.mail_from for m in got} == {"benefits@mail.example.net"}
    assert email.receipts() == []


def test_a_550_recipient_fails_for_good_and_the_others_go_through(
    sink: SmtpSink, email: SmtpChannel
) -> None:
    results = email.send(
        None,
        [
            msg(1, "13800000001@mail.example.net"),
            msg(2, "13800000009@mail.example.net"),
            msg(3, "13800000003@mail.example.net"),
        ],
    )
    assert [(r.ok, r.retryable) for r in results] == [(True, True), (False, False), (True, True)]
    assert "550" in (results[1].error or "")
    assert [m.to for m in sink.wait_for(2)] == [
        "13800000001@mail.example.net",
        "13800000003@mail.example.net",
    ]


@pytest.mark.parametrize("code", [451, 421])
def test_a_temporary_outage_is_retryable(sink: SmtpSink, email: SmtpChannel, code: int) -> None:
    sink.outage = code
    results = email.send(None, [msg(1, "a@mail.example.net"), msg(2, "b@mail.example.net")])
    assert [(r.ok, r.retryable) for r in results] == [(False, True), (False, True)]
    assert str(code) in (results[0].error or "")
    sink.outage = None
    again = email.send(None, [msg(1, "a@mail.example.net"), msg(2, "b@mail.example.net")])
    assert all(r.ok for r in again)
    assert len(sink.wait_for(2)) == 2


def test_a_refused_connection_leaves_every_message_retryable() -> None:
    channel = SmtpChannel(host="127.0.0.1", port=free_port(), sender="x@y.z", timeout_s=2)
    results = channel.send(None, [msg(1, "a@mail.example.net"), msg(2, "b@mail.example.net")])
    assert [(r.ok, r.retryable) for r in results] == [(False, True), (False, True)]
    assert "unreachable" in (results[0].error or "")


def test_a_message_that_cannot_be_built_fails_alone(sink: SmtpSink, email: SmtpChannel) -> None:
    bad = msg(1, "a@mail.example.net", subject="line one\r\nBcc: everyone@example.net")
    results = email.send(None, [bad, msg(2, "b@mail.example.net")])
    assert [(r.ok, r.retryable) for r in results] == [(False, False), (True, True)]
    assert [m.to for m in sink.wait_for(1)] == ["b@mail.example.net"]
