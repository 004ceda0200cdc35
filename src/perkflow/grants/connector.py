"""The partner connector: one signed HTTP request per delivery, a circuit breaker per partner."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from perkflow.grants.rules import Delivery, Outcome, OutcomeKind, classify_reply
from perkflow.kit import clock


def send(client: httpx.Client, delivery: Delivery) -> Outcome:
    """POST one delivery and classify the reply; network trouble is a retryable outcome."""
    try:
        response = client.post(
            delivery.url,
            content=delivery.body,
            headers=delivery.headers,
            timeout=httpx.Timeout(delivery.timeout_s),
        )
    except httpx.TimeoutException:
        return Outcome(OutcomeKind.RETRY, error=f"timed out after {delivery.timeout_s:g} s")
    except httpx.HTTPError as exc:
        return Outcome(OutcomeKind.RETRY, error=f"{type(exc).__name__}: {exc}"[:300])
    try:
        payload = response.json()
    except ValueError:
        payload = None
    return classify_reply(response.status_code, payload, kind=delivery.kind)


@dataclass
class CircuitBreaker:
    """Closed until `threshold` failures in a row; open for `cooldown_s`; then one trial call."""

    threshold: int = 5
    cooldown_s: float = 30.0
    failures: int = 0
    opened_at: datetime | None = None
    trial_running: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allow(self) -> bool:
        """Whether a call may go out now (half-open lets exactly one through)."""
        with self._lock:
            if self.opened_at is None:
                return True
            if clock.now() < self.opened_at + timedelta(seconds=self.cooldown_s):
                return False
            if self.trial_running:
                return False
            self.trial_running = True
            return True

    def retry_in_s(self) -> float:
        """Seconds until the breaker lets a trial call through."""
        with self._lock:
            if self.opened_at is None:
                return 0.0
            left = self.opened_at + timedelta(seconds=self.cooldown_s) - clock.now()
            return max(0.0, left.total_seconds())

    def record(self, outcome: Outcome) -> None:
        """Count a call's outcome: only transport trouble and 5xx count against the partner."""
        with self._lock:
            self.trial_running = False
            if outcome.kind == OutcomeKind.RETRY:
                self.failures += 1
                if self.opened_at is not None or self.failures >= self.threshold:
                    self.opened_at = clock.now()
            elif outcome.kind != OutcomeKind.DEFERRED:
                self.failures = 0
                self.opened_at = None

    @property
    def state(self) -> str:
        """closed, open or half-open."""
        if self.opened_at is None:
            return "closed"
        if clock.now() < self.opened_at + timedelta(seconds=self.cooldown_s):
            return "open"
        return "half-open"


class Breakers:
    """One breaker per partner, in this process."""

    def __init__(self, *, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._by_partner: dict[int, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def of(self, partner_id: int) -> CircuitBreaker:
        """The breaker of a partner, created closed on first use."""
        with self._lock:
            breaker = self._by_partner.get(partner_id)
            if breaker is None:
                breaker = CircuitBreaker(threshold=self.threshold, cooldown_s=self.cooldown_s)
                self._by_partner[partner_id] = breaker
            return breaker
