"""Shared test helpers: messages and bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from perkflow.channels.rules import Message

T = TypeVar("T")


def msg(contact_id: int, address: str, body: str = "hello", *, subject: str = "Hi") -> Message:
    return Message(
        contact_id=contact_id,
        subscriber_id=1000 + contact_id,
        campaign_id=7,
        address=address,
        subject=subject,
        body=body,
    )


def poll(fetch: Callable[[], list[T]], *, count: int, timeout_s: float = 5.0) -> list[T]:
    """Call fetch until it has given `count` items in all; fails after the timeout."""
    got: list[T] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got.extend(fetch())
        if len(got) >= count:
            return got
        time.sleep(0.01)
    raise AssertionError(f"only {len(got)} of {count} arrived within {timeout_s} s: {got}")
