"""Pure rules of grants and the connector's circuit breaker (the clock is the only fake)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from perkflow.grants.connector import CircuitBreaker
from perkflow.grants.rules import (
    TRANSITIONS,
    GrantStatus,
    Outcome,
    OutcomeKind,
    backoff_s,
    can_move,
    classify_reply,
    month_period,
    resume_to,
    sign,
    signature_problem,
)
from perkflow.kit import clock


def test_signature_round_trip_and_what_it_refuses() -> None:
    body = b'{"grant_id":1}'
    header = sign("s3cret", body, timestamp=1_000_000)
    assert signature_problem("s3cret", body, header, now_ts=1_000_100) is None
    assert signature_problem("s3cret", body + b" ", header, now_ts=1_000_100) == (
        "signature does not match"
    )
    assert signature_problem("other", body, header, now_ts=1_000_100) is not None
    assert "too old" in (signature_problem("s3cret", body, header, now_ts=1_000_400) or "")
    assert signature_problem("s3cret", body, None, now_ts=0) == "signature header missing"
    assert signature_problem("s3cret", body, "v1=abc", now_ts=0) == "signature timestamp missing"
    # The timestamp is inside the MAC: moving it breaks the signature.
    moved = header.replace("t=1000000", "t=1000100")
    assert signature_problem("s3cret", body, moved, now_ts=1_000_100) == "signature does not match"


@pytest.mark.parametrize(
    ("status", "payload", "kind", "expected"),
    [
        (200, {"status": "fulfilled", "order_id": "A"}, "fulfil", OutcomeKind.FULFILLED),
        (202, {"status": "accepted", "order_id": "A"}, "fulfil", OutcomeKind.ACCEPTED),
        (200, {"status": "revoked"}, "revoke", OutcomeKind.FULFILLED),
        (200, {"status": "revoked"}, "fulfil", OutcomeKind.RETRY),
        (200, {"status": "failed", "reason": "no such sku"}, "fulfil", OutcomeKind.REJECTED),
        (503, None, "fulfil", OutcomeKind.RETRY),
        (429, {}, "fulfil", OutcomeKind.RETRY),
        (408, {}, "fulfil", OutcomeKind.RETRY),
        (400, {"error": "bad"}, "fulfil", OutcomeKind.REJECTED),
        (200, "not a dict", "fulfil", OutcomeKind.RETRY),
    ],
)
def test_classify_reply(status: int, payload: object, kind: str, expected: OutcomeKind) -> None:
    outcome = classify_reply(status, payload, kind=kind)
    assert outcome.kind == expected
    if expected == OutcomeKind.FULFILLED and isinstance(payload, dict) and "order_id" in payload:
        assert outcome.order_id == payload["order_id"]


def test_state_machine_backoff_and_periods() -> None:
    assert can_move(GrantStatus.PENDING, GrantStatus.FULFILLED)
    assert not can_move(GrantStatus.FULFILLED, GrantStatus.PENDING)
    assert not any(
        TRANSITIONS[s] for s in (GrantStatus.USED, GrantStatus.EXPIRED, GrantStatus.REVOKED)
    )
    assert resume_to("pending") == GrantStatus.PENDING
    assert resume_to("fulfilled") == resume_to(None) == GrantStatus.FULFILLED
    assert [backoff_s(a, base_s=1) for a in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_s(30, base_s=1, cap_s=300) == 300
    at = datetime(2026, 1, 31, 16, 30, tzinfo=UTC)
    assert month_period(at, "Asia/Shanghai") == "2026-02" and month_period(at, "UTC") == "2026-01"


def test_circuit_breaker_opens_cools_down_and_lets_one_trial_through() -> None:
    frozen = clock.FrozenClock(datetime(2026, 11, 23, tzinfo=UTC))
    clock.set_clock(frozen)
    try:
        breaker = CircuitBreaker(threshold=3, cooldown_s=10)
        fail, ok = Outcome(OutcomeKind.RETRY, error="503"), Outcome(OutcomeKind.FULFILLED)
        for _ in range(2):
            assert breaker.allow()
            breaker.record(fail)
        breaker.record(ok)  # a success resets the count
        for _ in range(3):
            assert breaker.allow()
            breaker.record(fail)
        assert breaker.state == "open" and not breaker.allow()
        assert breaker.retry_in_s() == 10
        frozen.advance(seconds=10)
        assert breaker.state == "half-open"
        assert breaker.allow() and not breaker.allow()  # exactly one trial
        breaker.record(fail)
        assert breaker.state == "open" and not breaker.allow()
        frozen.advance(seconds=11)
        assert breaker.allow()
        breaker.record(ok)
        assert breaker.state == "closed" and breaker.allow()
        # A partner's refusal is an answer, not an outage.
        for _ in range(5):
            breaker.record(Outcome(OutcomeKind.REJECTED, error="400"))
        assert breaker.state == "closed"
    finally:
        clock.set_clock(None)
