"""Queries over the audience's ledger tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from perkflow.audience.models import (
    ContactListEntry,
    ContactPolicySetting,
    ExtractionTemplate,
    Segment,
    SegmentVersion,
    TargetList,
    UniversalControlSetting,
)


def get_segment(session: Session, segment_id: int) -> Segment | None:
    return session.get(Segment, segment_id)


def list_segments(session: Session, *, province: str | None) -> Sequence[Segment]:
    stmt = select(Segment).where(Segment.archived.is_(False))
    if province is not None:
        stmt = stmt.where(Segment.province_code == province)
    return session.scalars(stmt.order_by(Segment.updated_at.desc(), Segment.id.desc())).all()


def latest_versions(session: Session, *, province: str | None) -> dict[int, int]:
    """Segment id -> latest version, of the segments visible from a province (None: all)."""
    stmt = select(Segment.id, Segment.latest_version).where(Segment.archived.is_(False))
    if province is not None:
        stmt = stmt.where(Segment.province_code == province)
    return {int(i): int(v) for i, v in session.execute(stmt).all()}


def get_version(session: Session, segment_id: int, version: int) -> SegmentVersion | None:
    return session.scalar(
        select(SegmentVersion).where(
            SegmentVersion.segment_id == segment_id, SegmentVersion.version == version
        )
    )


def versions(session: Session, segment_id: int) -> Sequence[SegmentVersion]:
    return session.scalars(
        select(SegmentVersion)
        .where(SegmentVersion.segment_id == segment_id)
        .order_by(SegmentVersion.version.desc())
    ).all()


def bump_version(session: Session, *, segment_id: int, expected: int, at: datetime) -> bool:
    """Move latest_version from `expected` to the next; False if someone saved meanwhile."""
    result = session.execute(
        update(Segment)
        .where(Segment.id == segment_id, Segment.latest_version == expected)
        .values(latest_version=expected + 1, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def get_target_list(session: Session, target_list_id: int) -> TargetList | None:
    return session.get(TargetList, target_list_id)


def target_lists_page(
    session: Session, *, province: str | None, segment_id: int | None, offset: int, limit: int
) -> tuple[Sequence[TargetList], int]:
    stmt = select(TargetList)
    if province is not None:
        stmt = stmt.where(TargetList.province_code == province)
    if segment_id is not None:
        stmt = stmt.where(TargetList.segment_id == segment_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(TargetList.built_at.desc(), TargetList.id.desc()).offset(offset).limit(limit)
    ).all()
    return rows, total


def contact_list_entry(
    session: Session, *, subscriber_id: int, kind: str, channel: str
) -> ContactListEntry | None:
    return session.scalar(
        select(ContactListEntry).where(
            ContactListEntry.subscriber_id == subscriber_id,
            ContactListEntry.kind == kind,
            ContactListEntry.channel == channel,
        )
    )


def delete_contact_list_entry(session: Session, entry_id: int) -> bool:
    result = session.execute(delete(ContactListEntry).where(ContactListEntry.id == entry_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def contact_list_page(
    session: Session,
    *,
    subscriber_ids: Sequence[int] | None,
    kind: str | None,
    offset: int,
    limit: int,
) -> tuple[Sequence[ContactListEntry], int]:
    stmt = select(ContactListEntry)
    if subscriber_ids is not None:
        stmt = stmt.where(ContactListEntry.subscriber_id.in_(subscriber_ids))
    if kind is not None:
        stmt = stmt.where(ContactListEntry.kind == kind)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(ContactListEntry.id.desc()).offset(offset).limit(limit)
    ).all()
    return rows, total


def contact_list_chunks(session: Session, *, size: int) -> Sequence[tuple[int, str, str, datetime]]:
    """Every (subscriber_id, kind, channel, since) row, for the export to the mart."""
    stmt = select(
        ContactListEntry.subscriber_id,
        ContactListEntry.kind,
        ContactListEntry.channel,
        ContactListEntry.created_at,
    ).order_by(ContactListEntry.id)
    return [
        (int(a), str(b), str(c), d)
        for a, b, c, d in session.execute(stmt.execution_options(yield_per=size)).all()
    ]


def get_template(session: Session, template_id: int) -> ExtractionTemplate | None:
    return session.get(ExtractionTemplate, template_id)


def get_template_by_name(session: Session, name: str) -> ExtractionTemplate | None:
    return session.scalar(select(ExtractionTemplate).where(ExtractionTemplate.name == name))


def list_templates(session: Session) -> Sequence[ExtractionTemplate]:
    return session.scalars(select(ExtractionTemplate).order_by(ExtractionTemplate.name)).all()


def universal_control(session: Session) -> UniversalControlSetting | None:
    return session.get(UniversalControlSetting, 1)


def contact_policy(session: Session) -> ContactPolicySetting | None:
    return session.get(ContactPolicySetting, 1)


def list_kinds_for(session: Session, ids: Sequence[int], *, channel: str) -> list[tuple[int, str]]:
    """(subscriber, kind) of the opt-outs on the channel or all channels, and of complaints."""
    rows = session.execute(
        select(ContactListEntry.subscriber_id, ContactListEntry.kind).where(
            ContactListEntry.subscriber_id.in_(list(ids)),
            or_(
                ContactListEntry.kind == "complaint",
                ContactListEntry.channel.in_([channel, "all"]),
            ),
        )
    )
    return [(int(s), str(k)) for s, k in rows]
