"""Reads for campaign dispatch: who may not be contacted on a channel now, and why."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from perkflow.audience import repository as repo
from perkflow.audience import rules


def opted_out(session: Session, *, subscriber_ids: Sequence[int], channel: str) -> dict[int, str]:
    """Which of the subscribers may not be contacted on a channel now, and why (ledger lists).

    `opted_out` for an opt-out on the channel or on all channels, `complaint` for the complaint
    list; the same first-reason order as a target list's policy pass.
    """
    ids = sorted(set(subscriber_ids))
    found: dict[int, str] = {}
    for start in range(0, len(ids), 5_000):
        for sid, kind in repo.list_kinds_for(session, ids[start : start + 5_000], channel=channel):
            if kind == "opted_out":
                found[sid] = rules.Reason.OPTED_OUT.value
            else:
                found.setdefault(sid, rules.Reason.COMPLAINT.value)
    return found
