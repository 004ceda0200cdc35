"""Contact lists: opt-outs (免打扰) and complaints in the ledger, and their export to the mart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import marts, rules
from perkflow.audience import repository as repo
from perkflow.audience.models import ContactListEntry
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")


def _check_list_args(kind: str, channel: str) -> None:
    if kind not in rules.LIST_KINDS:
        raise ValidationFailed(f"kind is one of {', '.join(rules.LIST_KINDS)}", field="kind")
    if channel != "all" and channel not in rules.CHANNELS:
        raise ValidationFailed(
            f"channel is all or one of {', '.join(rules.CHANNELS)}", field="channel"
        )
    if kind == "complaint" and channel != "all":
        raise ValidationFailed("a complaint holds for every channel", field="channel")


def _require_list_writer(actor: Actor) -> None:
    org.require_perm_or_scope(actor, perm=Perm.OPTOUTS_MANAGE, scope="optouts:write")


def _subscriber_province(session: Session, *, actor: Actor, subscriber_id: int) -> str:
    province = subscribers.provinces_of(session, subscriber_ids=[subscriber_id]).get(subscriber_id)
    if province is None:
        raise NotFound(f"no subscriber {subscriber_id}", field="subscriber_id")
    limited = org.visible_province(actor)
    if limited is not None and province != limited:
        raise Forbidden("this subscriber is outside your region")
    return province


def add_to_contact_list(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    kind: str = "opted_out",
    channel: str = "all",
    source: str = "console",
    note: str = "",
) -> ContactListEntry:
    """Put a subscriber on the opt-out or complaint list; adding twice keeps the first entry."""
    _require_list_writer(actor)
    _check_list_args(kind, channel)
    _subscriber_province(session, actor=actor, subscriber_id=subscriber_id)
    entry = ContactListEntry(
        subscriber_id=subscriber_id,
        kind=kind,
        channel=channel,
        source=source[:16],
        note=note[:255],
        created_by=actor.name,
        created_at=clock.now(),
    )
    try:
        # A savepoint: the unique (subscriber, kind, channel) decides a duplicate, not a read.
        with session.begin_nested():
            session.add(entry)
    except IntegrityError:
        existing = repo.contact_list_entry(
            session, subscriber_id=subscriber_id, kind=kind, channel=channel
        )
        if existing is None:  # removed again in between: nothing to keep
            raise Conflict("the list changed meanwhile; try again", field="subscriber_id") from None
        return existing
    org.record_audit(
        session,
        actor=actor,
        action=f"contact_list.add_{kind}",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"channel": channel, "source": source, "note": note[:255]},
    )
    return entry


def remove_from_contact_list(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    kind: str = "opted_out",
    channel: str = "all",
    note: str = "",
) -> None:
    """Take a subscriber off a list (404 if not on it)."""
    _require_list_writer(actor)
    _check_list_args(kind, channel)
    _subscriber_province(session, actor=actor, subscriber_id=subscriber_id)
    entry = repo.contact_list_entry(
        session, subscriber_id=subscriber_id, kind=kind, channel=channel
    )
    if entry is None or not repo.delete_contact_list_entry(session, entry.id):
        raise NotFound(f"subscriber {subscriber_id} is not on that list", field="subscriber_id")
    org.record_audit(
        session,
        actor=actor,
        action=f"contact_list.remove_{kind}",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"channel": channel, "note": note[:255]},
    )


def list_contact_list(
    session: Session,
    *,
    actor: Actor,
    kind: str | None = None,
    subscriber_id: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[Sequence[ContactListEntry], int]:
    """A page of list entries, newest first (a province sees its own subscribers' entries)."""
    org.require_perm_or_scope(actor, perm=Perm.SEGMENTS_READ, scope="optouts:write")
    ids: list[int] | None = None
    if subscriber_id is not None:
        _subscriber_province(session, actor=actor, subscriber_id=subscriber_id)
        ids = [subscriber_id]
    rows, total = repo.contact_list_page(
        session, subscriber_ids=ids, kind=kind, offset=0, limit=10**9
    )
    province = org.visible_province(actor)
    if province is not None:
        provinces = subscribers.provinces_of(
            session, subscriber_ids=sorted({r.subscriber_id for r in rows})
        )
        rows = [r for r in rows if provinces.get(r.subscriber_id) == province]
        total = len(rows)
    return list(rows)[offset : offset + limit], total


def export_contact_lists(session: Session, *, mart: Mart) -> int:
    """Write the ledger's opt-out and complaint lists to the mart: the one path they take there."""
    rows = repo.contact_list_chunks(session, size=10_000)
    table = pa.table(
        {
            "subscriber_id": pa.array([r[0] for r in rows], type=pa.int64()),
            "kind": pa.array([r[1] for r in rows], type=pa.string()),
            "channel": pa.array([r[2] for r in rows], type=pa.string()),
            "since": pa.array([r[3] for r in rows], type=marts.UTC_TS),
        },
        schema=marts.CONTACT_LISTS_SCHEMA,
    )
    mart.write(marts.CONTACT_LISTS, table)
    return int(table.num_rows)
