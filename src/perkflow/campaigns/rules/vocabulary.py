"""Campaign vocabulary: statuses, kinds, cells, the contacts that count, history rows, counts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class CampaignKind(StrEnum):
    BATCH = "batch"
    TRIGGER = "trigger"
    IMPORTED = "imported"


class WaveKind(StrEnum):
    TEST = "test"
    ROLLOUT = "rollout"
    TRIGGER = "trigger"
    IMPORTED = "imported"


class ContactStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    HELD = "held"  # a control-cell subscriber: recorded, never sent
    SUPPRESSED = "suppressed"  # dropped at dispatch (opt-out since the list was built...)


class Cell(StrEnum):
    TARGET = "target"
    CONTROL = "control"


# Contacts that count in an evaluation: everyone assigned and not dropped before sending, so the
# target cell is judged by intent (a failed send still counts) exactly like the held-back control.
EVALUATED = frozenset(
    {
        ContactStatus.QUEUED,
        ContactStatus.SENDING,
        ContactStatus.SENT,
        ContactStatus.DELIVERED,
        ContactStatus.FAILED,
        ContactStatus.HELD,
    }
)

# An evaluation counts every assigned row (intent to treat): a target dropped at send time (a later
# opt-out, the budget or stock cap, the schedule's end, an early finish) stays in its cell, as its
# held-back control twin does. Only rows no variant matched were never part of the experiment:
# neither cell could have been sent anything.
NOT_ASSIGNED_REASONS = frozenset({"no_variant"})
# Target rows whose message went out: what treated-on-treated compares with the control.
TREATED = frozenset({ContactStatus.SENT, ContactStatus.DELIVERED})


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One line of an imported campaign history (a past campaign run elsewhere)."""

    subscriber_id: int
    cell: Cell
    variant: str | None
    contacted_at: datetime
    responded: bool
    revenue_fen: int | None
    phone: str | None = None  # an optional `phone` column, for matching to the subscriber master


# An import source names an outside system's id space: lower-case, a letter first.
IMPORT_SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def outside_id(source_id: int) -> int:
    """How an unmatched outside id is stored: negated, so it is never a subscriber of ours."""
    return -source_id


@dataclass(frozen=True, slots=True)
class CellCount:
    """Contacts, responders and revenue of one (cell, variant, province) group of a campaign."""

    cell: str
    variant: str | None
    province_code: str | None
    contacts: int
    responders: int
    revenue_fen: int
    # The contacts of the group whose message went out (sent or delivered), and theirs: what a
    # treated-on-treated comparison reads. Control rows are never sent, so 0 there.
    treated: int = 0
    treated_responders: int = 0
    treated_revenue_fen: int = 0
    # For the revenue interval: contacts whose revenue (their responses summed) is above zero,
    # and the sum over contacts of that revenue squared (fen²); None where not counted.
    spenders: int | None = None
    revenue_sq_fen2: int | None = None
    treated_spenders: int | None = None
    treated_revenue_sq_fen2: int | None = None


@dataclass(frozen=True, slots=True)
class ResponseTime:
    """When one contact first responded (for cumulative charts)."""

    cell: str
    variant: str | None
    responded_at: datetime
