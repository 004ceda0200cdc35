"""Segments: read, list, create, version, archive, and the member ids of a saved version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import repository as repo
from perkflow.audience import rules
from perkflow.audience.models import Segment, SegmentVersion
from perkflow.audience.rules import InvalidDefinition
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from ._common import _scope, _visible, invalid
from .catalog import catalog_for
from .compiling import sources

if TYPE_CHECKING:
    import pyarrow as pa

    from perkflow.audience import compiler
else:
    compiler = lazy_module("perkflow.audience.compiler")


def get_segment(session: Session, *, actor: Actor, segment_id: int) -> Segment:
    """A segment the actor may see (404 otherwise, 403 if it belongs to another province)."""
    org.require(actor, Perm.SEGMENTS_READ)
    segment = repo.get_segment(session, segment_id)
    if segment is None or segment.archived:
        raise NotFound(f"no segment {segment_id}", field="segment_id")
    if not _visible(segment, actor):
        raise Forbidden("this segment belongs to another province")
    return segment


def _version(session: Session, segment: Segment, version: int | None) -> SegmentVersion:
    number = version or segment.latest_version
    stored = repo.get_version(session, segment.id, number)
    if stored is None:
        raise NotFound(f"segment {segment.id} has no version {number}", field="version")
    return stored


def get_segment_version(
    session: Session, *, actor: Actor, segment_id: int, version: int | None = None
) -> SegmentVersion:
    """One version of a segment (the latest when None)."""
    return _version(session, get_segment(session, actor=actor, segment_id=segment_id), version)


def list_segments(session: Session, *, actor: Actor) -> list[Segment]:
    """Segments the actor may see: national ones and those of their province."""
    org.require(actor, Perm.SEGMENTS_READ)
    return [s for s in repo.list_segments(session, province=None) if _visible(s, actor)]


def segment_versions(
    session: Session, *, actor: Actor, segment_id: int
) -> Sequence[SegmentVersion]:
    """Every version of a segment, newest first."""
    get_segment(session, actor=actor, segment_id=segment_id)
    return repo.versions(session, segment_id)


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= rules.MAX_NAME:
        raise ValidationFailed(f"a name of 1 to {rules.MAX_NAME} characters", field="name")
    return name


def create_segment(
    session: Session, *, mart: Mart, actor: Actor, name: str, raw: Any, description: str = ""
) -> Segment:
    """A new segment with its first version; a province marketer's is confined to their province."""
    org.require(actor, Perm.SEGMENTS_EDIT)
    name = _check_name(name)
    if len(description) > 2000:
        raise ValidationFailed("at most 2000 characters", field="description")
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(raw, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    sources(session, mart=mart, catalog=catalog, definition=definition)  # refuses cycles
    now = clock.now()
    segment = Segment(
        name=name,
        description=description,
        province_code=org.visible_province(actor),
        latest_version=1,
        created_by=actor.name,
        created_at=now,
        updated_at=now,
        archived=False,
    )
    session.add(segment)
    session.flush()  # the id goes into the version and the audit entry
    session.add(
        SegmentVersion(
            segment_id=segment.id,
            version=1,
            definition=rules.dump_definition(definition),
            created_by=actor.name,
            created_at=now,
        )
    )
    org.record_audit(
        session,
        actor=actor,
        action="segment.create",
        target_type="segment",
        target_id=str(segment.id),
        details={"name": name, "province": segment.province_code, "version": 1},
    )
    return segment


def save_segment_version(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    segment_id: int,
    raw: Any,
    expected_version: int | None = None,
    name: str | None = None,
    description: str | None = None,
) -> SegmentVersion:
    """A new version of a segment; an unchanged definition keeps the latest version."""
    org.require(actor, Perm.SEGMENTS_EDIT)
    segment = get_segment(session, actor=actor, segment_id=segment_id)
    limited = org.visible_province(actor)
    if limited is not None and segment.province_code != limited:
        raise Forbidden("a national segment is edited by headquarters")
    current = segment.latest_version
    if expected_version is not None and expected_version != current:
        raise Conflict(
            f"segment {segment_id} is at version {current}, not {expected_version}; reload",
            field="version",
        )
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(raw, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    sources(session, mart=mart, catalog=catalog, definition=definition, chain=(segment.id,))
    dumped = rules.dump_definition(definition)
    latest = _version(session, segment, None)
    now = clock.now()
    renamed = False
    if name is not None and name.strip() != segment.name:
        segment.name = _check_name(name)
        renamed = True
    if description is not None and description != segment.description:
        segment.description = description[:2000]
        renamed = True
    if rules.json_key(dumped) == rules.json_key(latest.definition):
        if renamed:
            segment.updated_at = now
            org.record_audit(
                session,
                actor=actor,
                action="segment.rename",
                target_type="segment",
                target_id=str(segment.id),
                details={"name": segment.name},
            )
        return latest
    # Compare-and-set on the version number: of two concurrent saves, one gets 409.
    if not repo.bump_version(session, segment_id=segment.id, expected=current, at=now):
        raise Conflict("the segment was saved meanwhile; reload and try again", field="version")
    version = SegmentVersion(
        segment_id=segment.id,
        version=current + 1,
        definition=dumped,
        created_by=actor.name,
        created_at=now,
    )
    session.add(version)
    try:
        session.flush()  # the unique (segment, version) pair is the final word on a race
    except IntegrityError as exc:
        raise Conflict("the segment was saved meanwhile; reload", field="version") from exc
    session.refresh(segment)
    org.record_audit(
        session,
        actor=actor,
        action="segment.save_version",
        target_type="segment",
        target_id=str(segment.id),
        details={"version": version.version, "name": segment.name},
    )
    return version


def archive_segment(session: Session, *, actor: Actor, segment_id: int) -> Segment:
    """Hide a segment from lists; its versions and target lists stay."""
    org.require(actor, Perm.SEGMENTS_EDIT)
    segment = get_segment(session, actor=actor, segment_id=segment_id)
    limited = org.visible_province(actor)
    if limited is not None and segment.province_code != limited:
        raise Forbidden("a national segment is archived by headquarters")
    segment.archived = True
    segment.updated_at = clock.now()
    org.record_audit(
        session,
        actor=actor,
        action="segment.archive",
        target_type="segment",
        target_id=str(segment.id),
    )
    return segment


@dataclass(frozen=True)
class Members:
    """A saved segment version's members as an engine expression (one ``subscriber_id`` column)."""

    segment: Segment
    version: int
    table: Any  # ibis Table on the mart's engine


def segment_members(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    segment_id: int,
    version: int | None = None,
    as_of: datetime | None = None,
) -> Members:
    """A saved segment version's members as of ``as_of``, unevaluated, to join in the engine."""
    segment = get_segment(session, actor=actor, segment_id=segment_id)
    stored = _version(session, segment, version)
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(stored.definition, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    src = sources(session, mart=mart, catalog=catalog, definition=definition, chain=(segment.id,))
    scoped = compiler.Scoped(definition, _scope(actor, segment.province_code))
    table = compiler.members(scoped, src, as_of or clock.now()).select("subscriber_id")
    return Members(segment=segment, version=stored.version, table=table)


def segment_member_ids(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    segment_id: int,
    version: int | None = None,
    as_of: datetime | None = None,
) -> pa.Array:
    """The sorted subscriber ids of a saved segment version (for checks and other capabilities)."""
    members = segment_members(
        session, mart=mart, actor=actor, segment_id=segment_id, version=version, as_of=as_of
    )
    ids = members.table.order_by("subscriber_id").to_pyarrow()["subscriber_id"]
    return ids.combine_chunks()
