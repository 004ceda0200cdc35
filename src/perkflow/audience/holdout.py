"""The universal control group at the moment of contact: the one check every send passes.

A target list leaves the group's members out when it is built, but a contact can go out later
(a trigger fires on an event, a wave dispatches after the rotation changed the members). Every
path that contacts anyone asks here first: batch dispatch (waves, rollouts, queued trigger
contacts) in the worker's claim and event triggers before they queue or deliver inline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date

from sqlalchemy.orm import Session

from perkflow.audience import rules
from perkflow.audience import service as audience
from perkflow.kit.crypto import Vault

REASON = rules.ListCell.UNIVERSAL_CONTROL.value  # the suppression reason a held-out contact gets


def members(
    setting: rules.UniversalControl, *, key: str, subscriber_ids: Iterable[int], on: date
) -> frozenset[int]:
    """Which of these subscribers are in the group on a day (the keyed hash of its period)."""
    if setting.share_bp <= 0:
        return frozenset()
    prefix = rules.hash_input_prefix(key, setting.period_salt(setting.period(on)))
    threshold = rules.hash_threshold(setting.share_bp)
    held = set()
    for sid in subscriber_ids:
        digest = hashlib.sha256(f"{prefix}{sid}".encode()).hexdigest()
        if digest[: rules.HASH_PREFIX_HEX] < threshold:
            held.add(sid)
    return frozenset(held)


def held_out(
    session: Session, *, vault: Vault, subscriber_ids: Iterable[int], on: date
) -> frozenset[int]:
    """The subscribers no campaign may contact on this day: the universal control group's."""
    setting = audience.get_universal_control(session)
    return members(setting, key=vault.assignment_key, subscriber_ids=subscriber_ids, on=on)
