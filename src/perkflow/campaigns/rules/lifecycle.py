"""Campaign lifecycle: the actions and the statuses they lead to, wave statuses, retry backoff."""

from __future__ import annotations

from enum import StrEnum

from .vocabulary import CampaignStatus, ContactStatus


class Action(StrEnum):
    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    FINISH = "finish"


# (from, action) → to. Anything not listed is refused with 409; editing is allowed in draft only.
TRANSITIONS: dict[tuple[CampaignStatus, Action], CampaignStatus] = {
    (CampaignStatus.DRAFT, Action.SUBMIT): CampaignStatus.PENDING_APPROVAL,
    (CampaignStatus.PENDING_APPROVAL, Action.APPROVE): CampaignStatus.APPROVED,
    (CampaignStatus.PENDING_APPROVAL, Action.REJECT): CampaignStatus.DRAFT,
    (CampaignStatus.APPROVED, Action.START): CampaignStatus.RUNNING,
    (CampaignStatus.RUNNING, Action.PAUSE): CampaignStatus.PAUSED,
    (CampaignStatus.PAUSED, Action.RESUME): CampaignStatus.RUNNING,
    (CampaignStatus.RUNNING, Action.FINISH): CampaignStatus.FINISHED,
    (CampaignStatus.PAUSED, Action.FINISH): CampaignStatus.FINISHED,
    (CampaignStatus.APPROVED, Action.FINISH): CampaignStatus.FINISHED,
}


def next_status(status: str, action: Action) -> CampaignStatus | None:
    """Where an action takes a campaign from `status`, or None when it may not."""
    try:
        return TRANSITIONS.get((CampaignStatus(status), action))
    except ValueError:
        return None


class WaveStatus(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    DONE = "done"


# Contacts that still hold a message to send; a wave with none left is done.
OPEN = frozenset({ContactStatus.QUEUED, ContactStatus.SENDING})
# Contacts a message went out to (or is going out to): what frequency caps and budgets count.
CONTACTED = frozenset({ContactStatus.SENDING, ContactStatus.SENT, ContactStatus.DELIVERED})


def backoff_s(attempts: int, *, base_s: float = 1.0, cap_s: float = 600.0) -> float:
    """Seconds before the next attempt after `attempts` failed ones: base, 2×base, 4×base …"""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))
