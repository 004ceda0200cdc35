from __future__ import annotations

from perkflow.subscribers.rules import Status, normalize_phone, transition_problem


def test_normalize_phone_accepts_common_spellings() -> None:
    assert normalize_phone("138 1234 5678") == "13812345678"
    assert normalize_phone("+8613812345678") == "13812345678"
    assert normalize_phone("12812345678") is None
    assert normalize_phone("1381234567") is None


def test_churn_is_final_and_same_status_is_refused() -> None:
    assert transition_problem(Status.ACTIVE, Status.SUSPENDED) is None
    assert transition_problem(Status.SUSPENDED, Status.ACTIVE) is None
    assert transition_problem(Status.ACTIVE, Status.ACTIVE) is not None
    assert transition_problem(Status.CHURNED, Status.ACTIVE) is not None
