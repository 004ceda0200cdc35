"""Pure channel rules: the token bucket, receipt parsing, signatures, reply classes."""

from __future__ import annotations

from perkflow.channels.rules import (
    Receipt,
    Throttle,
    parse_receipt,
    sign_body,
    signature_problem,
    smpp_status_retryable,
    smtp_retryable,
    webhook_retryable,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class TestThrottle:
    def test_a_burst_then_the_rate(self) -> None:
        clock = FakeClock()
        bucket = Throttle(10, burst=5, clock=clock)
        assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
        assert bucket.wait_s() == 0.1
        clock.t += 0.1
        assert bucket.try_take() and not bucket.try_take()

    def test_tokens_never_exceed_the_burst(self) -> None:
        clock = FakeClock()
        bucket = Throttle(2, clock=clock)
        clock.t += 3600  # an idle hour saves up no more than the burst
        assert bucket.take_up_to(10) == 2
        assert bucket.take_up_to(10) == 0
        assert bucket.wait_s(1) == 0.5

    def test_a_clock_stepping_back_adds_nothing(self) -> None:
        clock = FakeClock()
        bucket = Throttle(1, clock=clock)
        assert bucket.try_take()
        clock.t -= 50
        assert not bucket.try_take()


def test_take_up_to_respects_the_burst() -> None:
    clock = FakeClock()
    bucket = Throttle(2, clock=clock)
    bucket.take_up_to(2)
    clock.t += 1.6  # 3.2 tokens' worth of time, capped at the burst of 2
    assert bucket.take_up_to(10) == 2


def test_parse_receipt() -> None:
    text = (
        "id:00AB sub:001 dlvrd:001 submit date:2611231200 done date:2611231201"
        " stat:DELIVRD err:000 text:"
    )
    assert parse_receipt(text) == Receipt(message_ref="00AB", delivered=True)
    assert parse_receipt("id:9 stat:UNDELIV err:001") == Receipt(
        message_ref="9", delivered=False, error="UNDELIV err:001"
    )
    assert parse_receipt("id:9 stat:ENROUTE") is None
    assert parse_receipt("hello") is None


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"a":1}'
    header = sign_body("k", body, timestamp=1000)
    assert signature_problem("k", body, header, now_ts=1010) is None
    assert signature_problem("k", b'{"a":2}', header, now_ts=1010) == "signature does not match"
    assert signature_problem("other", body, header, now_ts=1010) == "signature does not match"
    assert (
        signature_problem("k", body, header, now_ts=5000)
        == "signature timestamp too old or in the future"
    )
    assert signature_problem("k", body, None, now_ts=1000) == "signature header missing"


def test_reply_classes() -> None:
    assert smpp_status_retryable(0x58) and smpp_status_retryable(0x14)  # throttled, queue full
    assert not smpp_status_retryable(0x0B)  # bad destination
    assert smtp_retryable(451) and smtp_retryable(421) and not smtp_retryable(550)
    assert webhook_retryable(503) and webhook_retryable(429) and not webhook_retryable(400)
