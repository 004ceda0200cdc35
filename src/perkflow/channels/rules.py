"""What every channel adapter takes and gives back; pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from perkflow.kit import crypto

# The channels a campaign may use; the audience's contact policy knows the same names.
CHANNELS = ("sms", "email", "webhook", "in_app")


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message to one subscriber, keyed by the contact it belongs to."""

    contact_id: int
    subscriber_id: int
    campaign_id: int
    # Phone number (sms), e-mail address (email), subscriber id as text (in_app, webhook).
    address: str
    subject: str
    body: str
    # The H5 path of the offer the message is about (the in-app inbox shows it as a button).
    link: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key a peer can deduplicate on (Message-ID, webhook header...)."""
        return f"pf-{self.campaign_id}-{self.contact_id}"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one message: accepted (with the peer's reference) or failed (and why)."""

    contact_id: int
    ok: bool
    message_ref: str | None = None
    error: str | None = None
    # False when retrying cannot help (bad address, rejected content); the contact fails at once.
    retryable: bool = True
    # True when the channel itself confirms delivery (in-app, webhook 2xx); others await a receipt.
    delivered: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery report from a peer (SMPP deliver_sm, a webhook callback)."""

    message_ref: str
    delivered: bool
    error: str | None = None


class Channel(Protocol):
    """A channel adapter. ``session`` is the caller's ledger session (only in-app writes to it)."""

    name: str

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        """Send a batch; one result per message, in order. Never raises for a single bad message."""
        ...

    def receipts(self) -> list[Receipt]:
        """Delivery reports received since the last call (empty for channels without them)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AsksForReceipts(Protocol):
    """A channel whose peer answers for a message's final state later (SMS: query_sm)."""

    def query(self, refs: Sequence[str]) -> list[Receipt]:
        """Receipts for the messages whose state is final; nothing for the others."""
        ...


# Clock arithmetic in floats: 0.1 s at 10/s must give a whole token, not 0.9999999.
_EPSILON = 1e-9


class Throttle:
    """A token bucket: `rate_per_s` messages a second on average, bursts up to `burst`."""

    def __init__(
        self, rate_per_s: float, *, burst: float | None = None, clock: Callable[[], float]
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, burst if burst is not None else rate_per_s)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps back (a test, a bad monotonic source) adds nothing.
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate_per_s)
        self._at = now

    def try_take(self, n: int = 1) -> bool:
        """Take n tokens if they are there now."""
        self._refill()
        if self._tokens + _EPSILON >= n:
            self._tokens = max(0.0, self._tokens - n)
            return True
        return False

    def wait_s(self, n: int = 1) -> float:
        """Seconds until n tokens are there (0 when they are now); takes nothing."""
        self._refill()
        missing = min(float(n), self.burst) - self._tokens
        return 0.0 if missing <= _EPSILON else missing / self.rate_per_s

    def take_up_to(self, n: int) -> int:
        """Take as many whole tokens as are there, at most n; how many were taken."""
        self._refill()
        taken = max(0, min(n, int(self._tokens + _EPSILON)))
        self._tokens = max(0.0, self._tokens - taken)
        return taken


# ---- SMPP ----------------------------------------------------------------------------------

# submit_sm_resp statuses that no retry can fix: the message or address itself is bad.
SMPP_PERMANENT = frozenset(
    {
        0x01,  # ESME_RINVMSGLEN
        0x06,  # ESME_RINVPRTFLG
        0x0A,  # ESME_RINVSRCADR
        0x0B,  # ESME_RINVDSTADR
        0x43,  # ESME_RINVESMCLASS
        0x48,  # ESME_RINVSRCTON
        0x49,  # ESME_RINVSRCNPI
        0x50,  # ESME_RINVDSTTON
        0x51,  # ESME_RINVDSTNPI
        0x61,  # ESME_RINVSCHED (bad schedule time)
        0x62,  # ESME_RINVEXPIRY
        0xC4,  # ESME_RINVOPTPARAMVAL
    }
)

_RECEIPT_FIELD = re.compile(r"(id|stat|err):\s*([^\s]+)", re.IGNORECASE)
# Final states of SMPP 3.4 appendix B; anything else (ENROUTE, ACCEPTD) is not final.
_RECEIPT_FAILED = {"UNDELIV", "EXPIRED", "DELETED", "REJECTD", "UNKNOWN"}


def smpp_status_retryable(status: int) -> bool:
    """Whether a submit_sm refused with this command_status may succeed later."""
    return status not in SMPP_PERMANENT


def parse_receipt(text: str) -> Receipt | None:
    """The Receipt in a receipt's text (`id:… stat:DELIVRD err:000 …`); None if not final."""
    fields: dict[str, str] = {}
    for name, value in _RECEIPT_FIELD.findall(text):
        fields.setdefault(name.lower(), value)
    ref, stat = fields.get("id"), fields.get("stat", "").upper()
    if not ref or not stat:
        return None
    if stat == "DELIVRD":
        return Receipt(message_ref=ref, delivered=True)
    if stat in _RECEIPT_FAILED:
        err = fields.get("err")
        return Receipt(message_ref=ref, delivered=False, error=f"{stat} err:{err}" if err else stat)
    return None


# ---- SMTP ----------------------------------------------------------------------------------


def smtp_retryable(code: int) -> bool:
    """A 4xx reply is transient (try later); a 5xx reply is permanent for that message."""
    return not 500 <= code < 600


def message_id(message: Message) -> str:
    """The Message-ID header: the contact's key, so a receiver can drop a resent copy."""
    return f"<{message.key}@perkflow>"


# ---- webhook -------------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Perkflow-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The same signature scheme as partner callbacks (kit/crypto.py).
sign_body = crypto.sign_body
signature_problem = crypto.signature_problem


def webhook_retryable(status_code: int) -> bool:
    """5xx and 429 may pass later; any other 4xx means the request itself is refused."""
    return status_code >= 500 or status_code in (408, 429)


def webhook_payload(message: Message) -> dict[str, Any]:
    """The JSON a webhook receives for one message."""
    return {
        "key": message.key,
        "contact_id": message.contact_id,
        "campaign_id": message.campaign_id,
        "subscriber_id": message.subscriber_id,
        "address": message.address,
        "subject": message.subject,
        "body": message.body,
    }
