"""Membership use cases: bundles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.grants import service as grants
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.membership import repository as repo
from perkflow.membership import rules
from perkflow.membership.models import (
    BundleGrant,
)
from perkflow.membership.rules import (
    Cadence,
    Mode,
)
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

from .access import _require_edit, _require_write
from .program import _items_by_tier, load

# --- bundles -------------------------------------------------------------------------------------


@dataclass
class IssueCount:
    """What one bundle issue run did."""

    members: int = 0
    issued: int = 0
    replayed: int = 0
    refused: int = 0
    skipped: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # asked to stop: the chunks done are committed, a rerun continues

    def add(self, other: IssueCount) -> None:
        self.members += other.members
        self.issued += other.issued
        self.replayed += other.replayed
        self.refused += other.refused
        self.skipped += other.skipped
        for k, v in other.refusals.items():
            self.refusals[k] = self.refusals.get(k, 0) + v


def check_month(month: str) -> str:
    """A `2026-11` cycle month, or 422."""
    if rules.parse_month(month) is None:
        raise ValidationFailed("month must look like 2026-11", field="month")
    return month.strip()


def issue_bundles_for(
    session: Session,
    *,
    actor: Actor,
    members: Sequence[tuple[int, int]],
    month: str,
    zone: str,
    items: Mapping[int, Sequence[ItemRow]] | None = None,
) -> IssueCount:
    """Grant a group of members' automatic bundle benefits for the month's cycles, exactly once.

    Set-based: one group of grants (`grants.issue_grants`) and one statement of bundle rows,
    whether the group is a chunk of the monthly run or a single member.
    """
    if actor.kind != "system":
        _require_edit(actor)
    month = check_month(month)
    by_tier = items if items is not None else bundle_items(session)
    statuses = subscribers.subscriber_statuses(session, subscriber_ids=[s for s, _ in members])
    count = IssueCount()
    # Per tier, once: every automatic unit as (item, cycle, slot, the key's tail); a member's
    # key is then one concatenation ("tier:<subscriber>:<benefit>:<cycle>:<unit>").
    units = {
        tier_id: [
            (item, cycle, f"item:{item.id}:{u}", f":{item.benefit_id}:{cycle}:{u}")
            for item in tier_items
            if item.mode == Mode.AUTO.value
            for cycle in (rules.cycle_for_month(month, Cadence(item.cadence)),)
            for u in range(1, item.quantity + 1)
        ]
        for tier_id, tier_items in by_tier.items()
    }
    # (subscriber, tier, item, cycle, slot, key tail) of every automatic slot active members hold.
    wanted: list[tuple[int, int, ItemRow, str, str, str]] = []
    for sid, tier_id in members:
        if statuses.get(sid) != Status.ACTIVE:
            # Binding: a suspended member's bundle waits for reactivation, a churned one's is gone.
            count.skipped += 1
            continue
        count.members += 1
        wanted += [(sid, tier_id, *unit) for unit in units.get(tier_id, ())]
    if not wanted:
        return count
    # A slot recorded by an earlier run was granted with it (they commit together): a replay.
    taken = repo.taken_slots(
        session,
        subscriber_ids=[sid for sid, _ in members],
        cycles=sorted({w[3] for w in wanted}),
    )
    todo = [w for w in wanted if (w[0], w[3], w[4]) not in taken] if taken else wanted
    count.replayed += len(wanted) - len(todo)
    outcomes = grants.issue_grants(
        session,
        actor=SYSTEM,
        requests=[
            grants.GrantRequest(sid, item.benefit_id, f"tier:{sid}{tail}")
            for sid, _, item, _, _, tail in todo
        ],
        source="membership",
        zone=zone,
    )
    now = clock.now()
    rows: list[tuple[Any, ...]] = []
    for (sid, tier_id, item, cycle, slot, _), outcome in zip(todo, outcomes, strict=True):
        if outcome.grant_id is None:
            why = outcome.refusal or "refused"
            count.refused += 1
            count.refusals[why] = count.refusals.get(why, 0) + 1
            continue
        if outcome.replayed:
            count.replayed += 1
        else:
            count.issued += 1
        rows.append(
            (sid, tier_id, item.id, cycle, slot, outcome.grant_id, item.value_fen, "granted", now)
        )
    repo.add_bundle_grants(session, rows)
    if count.issued:
        org.record_audit(
            session,
            actor=actor,
            action="member.bundles",
            target_type="cycle",
            target_id=month,
            details={"members": count.members, "issued": count.issued},
        )
    return count


def pick_benefit(
    session: Session, *, actor: Actor, subscriber_id: int, item_id: int, zone: str
) -> BundleGrant:
    """A member chooses one option of a pick group this cycle ("pick 1 of 6 video VIPs")."""
    if actor.kind == "subscriber" and actor.id != str(subscriber_id):
        raise Forbidden("a subscriber picks only for themselves")
    if actor.kind not in ("subscriber", "system"):
        _require_write(actor)
    item = repo.item(session, item_id)
    member = repo.member(session, subscriber_id)
    if item is None or not item.active or item.mode != Mode.PICK.value:
        raise NotFound(f"no choice {item_id}", field="item_id")
    if member is None or member.tier_id != item.tier_id:
        raise Conflict("this choice is not part of your tier", field="item_id")
    status = subscribers.subscriber_statuses(session, subscriber_ids=[subscriber_id]).get(
        subscriber_id
    )
    if status == Status.SUSPENDED:
        raise Conflict("benefits are paused while your line is suspended", field="subscriber_id")
    if status != Status.ACTIVE:
        raise Conflict("your line is closed; its benefits are forfeited", field="subscriber_id")
    now = clock.now()
    cycle = rules.cycle_of(now, zone, Cadence(item.cadence))
    group = item.pick_group or ""
    taken = [
        g
        for g in repo.bundle_grants_of(session, subscriber_id=subscriber_id, cycles=[cycle])
        if g.slot.startswith(f"pick:{group}:")
    ]
    if len(taken) >= item.choose:
        raise Conflict("you have already made this cycle's choice", field="item_id")
    slot_n = len(taken) + 1
    slot = f"pick:{group}:{slot_n}"
    repo.begin_write(session)
    try:
        with session.begin_nested():
            # The slot is claimed first: its unique key refuses a second pick at the same time.
            if not repo.add_bundle_grant(
                session,
                {
                    "subscriber_id": subscriber_id,
                    "tier_id": item.tier_id,
                    "bundle_item_id": item.id,
                    "cycle": cycle,
                    "slot": slot,
                    "grant_id": None,
                    "value_fen": item.value_fen,
                    "status": "granted",
                    "at": now,
                },
            ):
                raise Conflict("you have already made this cycle's choice", field="item_id")
            issued = grants.issue_grant(
                session,
                actor=SYSTEM,
                subscriber_id=subscriber_id,
                benefit_id=item.benefit_id,
                source="membership-pick",
                idempotency_key=f"pick:{subscriber_id}:{group}:{cycle}:{slot_n}",
                zone=zone,
            )
            row = next(
                g
                for g in repo.bundle_grants_of(session, subscriber_id=subscriber_id, cycles=[cycle])
                if g.slot == slot
            )
            row.grant_id = issued.grant.id
            session.flush()
    except IntegrityError as exc:
        raise Conflict("you have already made this cycle's choice", field="item_id") from exc
    org.record_audit(
        session,
        actor=actor,
        action="member.pick",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"item_id": item.id, "benefit_id": item.benefit_id, "cycle": cycle},
    )
    return row


@dataclass(frozen=True)
class ItemRow:
    """A bundle item detached from the session (jobs keep it across transactions)."""

    id: int
    tier_id: int
    benefit_id: int
    mode: str
    cadence: str
    quantity: int
    value_fen: int


def bundle_items(session: Session) -> dict[int, list[ItemRow]]:
    """Active bundle items by tier id."""
    out: dict[int, list[ItemRow]] = {}
    for tier_id, items in _items_by_tier(session, [t.id for t in load(session).tiers]).items():
        out[tier_id] = [
            ItemRow(i.id, i.tier_id, i.benefit_id, i.mode, i.cadence, i.quantity, i.value_fen)
            for i in items
        ]
    return out
