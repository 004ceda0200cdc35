"""JSON API of the audience: segments, previews, target lists, contact lists, control settings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from perkflow.audience import service as audience
from perkflow.audience.rules import policy_to_dict
from perkflow.audience.schemas import (
    ContactListIn,
    ContactListOut,
    ContactListPage,
    CountOut,
    DefinitionIn,
    PreviewOut,
    SegmentCreate,
    SegmentOut,
    SegmentVersionCreate,
    SegmentVersionOut,
    TargetListCreate,
    TargetListOut,
    TargetListPage,
    TemplateOut,
    UniversalControlIn,
    UniversalControlOut,
)
from perkflow.kit.bounds import IdParam, LineParam
from perkflow.web.auth import ApiActor, DbSession, MartDep, VaultDep

router = APIRouter(prefix="/v1", tags=["audience"])


def _bp(share: float) -> int:
    return round(share * 10_000)


@router.post("/segments/count", response_model=CountOut)
def count_definition(
    body: DefinitionIn, actor: ApiActor, session: DbSession, mart: MartDep
) -> CountOut:
    """How many subscribers a definition selects, per province (within the caller's region)."""
    out = audience.count_definition(
        session, mart=mart, actor=actor, raw=body.definition, as_of=body.as_of
    )
    return CountOut(**out)


@router.post("/segments/preview", response_model=PreviewOut)
def preview_definition(
    body: DefinitionIn, actor: ApiActor, session: DbSession, mart: MartDep
) -> PreviewOut:
    """Count and breakdown by province, plan fee and activity; 422 names the bad node's path."""
    p = audience.preview_definition(
        session, mart=mart, actor=actor, raw=body.definition, as_of=body.as_of
    )
    return PreviewOut(**p.__dict__)


@router.get("/segments", response_model=list[SegmentOut])
def list_segments(actor: ApiActor, session: DbSession) -> list[SegmentOut]:
    """Segments the caller may see."""
    return [SegmentOut.model_validate(s) for s in audience.list_segments(session, actor=actor)]


@router.post("/segments", response_model=SegmentOut, status_code=201)
def create_segment(
    body: SegmentCreate, actor: ApiActor, session: DbSession, mart: MartDep
) -> SegmentOut:
    """A new segment with version 1."""
    segment = audience.create_segment(
        session,
        mart=mart,
        actor=actor,
        name=body.name,
        description=body.description,
        raw=body.definition,
    )
    return SegmentOut.model_validate(segment)


@router.get("/segments/{segment_id}", response_model=SegmentOut)
def get_segment(segment_id: IdParam, actor: ApiActor, session: DbSession) -> SegmentOut:
    """One segment."""
    return SegmentOut.model_validate(
        audience.get_segment(session, actor=actor, segment_id=segment_id)
    )


@router.get("/segments/{segment_id}/versions", response_model=list[SegmentVersionOut])
def segment_versions(
    segment_id: IdParam, actor: ApiActor, session: DbSession
) -> list[SegmentVersionOut]:
    """Every version of a segment, newest first."""
    return [
        SegmentVersionOut.model_validate(v)
        for v in audience.segment_versions(session, actor=actor, segment_id=segment_id)
    ]


@router.post("/segments/{segment_id}/versions", response_model=SegmentVersionOut)
def save_segment_version(
    segment_id: IdParam,
    body: SegmentVersionCreate,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
) -> SegmentVersionOut:
    """A new version (409 if `expected_version` is stale); an unchanged definition keeps it."""
    version = audience.save_segment_version(
        session,
        mart=mart,
        actor=actor,
        segment_id=segment_id,
        raw=body.definition,
        expected_version=body.expected_version,
        name=body.name,
        description=body.description,
    )
    return SegmentVersionOut.model_validate(version)


@router.post("/target-lists", response_model=TargetListOut, status_code=201)
def build_target_list(
    body: TargetListCreate,
    request: Request,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
) -> TargetListOut:
    """Snapshot a segment version with control split and contact-policy suppressions."""
    target_list = audience.build_target_list(
        session,
        mart=mart,
        actor=actor,
        vault=vault,
        segment_id=body.segment_id,
        version=body.version,
        channel=body.channel,
        control_share_bp=_bp(body.control_share),
        send_at=body.send_at,
        salt=body.salt,
        name=body.name,
        default_zone=request.app.state.settings.timezone,
    )
    return TargetListOut.model_validate(target_list)


@router.get("/target-lists", response_model=TargetListPage)
def list_target_lists(
    actor: ApiActor,
    session: DbSession,
    segment_id: IdParam | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TargetListPage:
    """Target lists in the caller's region, newest first."""
    rows, total = audience.list_target_lists(
        session, actor=actor, segment_id=segment_id, offset=(page - 1) * size, limit=size
    )
    return TargetListPage(items=[TargetListOut.model_validate(r) for r in rows], total=total)


@router.get("/target-lists/{target_list_id}", response_model=TargetListOut)
def get_target_list(target_list_id: IdParam, actor: ApiActor, session: DbSession) -> TargetListOut:
    """One target list with its counts per cell, reason and province."""
    return TargetListOut.model_validate(
        audience.get_target_list(session, actor=actor, target_list_id=target_list_id)
    )


@router.get("/target-lists/{target_list_id}/rows")
def target_list_rows(
    target_list_id: IdParam,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
    cell: LineParam | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The first rows of a list's snapshot, by subscriber id."""
    return audience.target_list_rows(
        session, mart=mart, actor=actor, target_list_id=target_list_id, cell=cell, limit=limit
    )


@router.post("/contact-lists", response_model=ContactListOut, status_code=201)
def add_to_contact_list(
    body: ContactListIn, response: Response, actor: ApiActor, session: DbSession, mart: MartDep
) -> ContactListOut:
    """Put a subscriber on the opt-out (免打扰) or complaint list."""
    entry = audience.add_to_contact_list(
        session,
        actor=actor,
        subscriber_id=body.subscriber_id,
        kind=body.kind,
        channel=body.channel,
        source=body.source,
        note=body.note,
    )
    out = ContactListOut.model_validate(entry)
    # The mart copy follows once the ledger has it: commit first, then the one export path.
    session.commit()
    audience.export_contact_lists(session, mart=mart)
    return out


@router.delete("/contact-lists/{subscriber_id}", status_code=204)
def remove_from_contact_list(
    subscriber_id: IdParam,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
    kind: str = "opted_out",
    channel: str = "all",
) -> Response:
    """Take a subscriber off a list."""
    audience.remove_from_contact_list(
        session, actor=actor, subscriber_id=subscriber_id, kind=kind, channel=channel
    )
    session.commit()
    audience.export_contact_lists(session, mart=mart)
    return Response(status_code=204)


@router.get("/contact-lists", response_model=ContactListPage)
def list_contact_list(
    actor: ApiActor,
    session: DbSession,
    kind: LineParam | None = None,
    subscriber_id: IdParam | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ContactListPage:
    """List entries, newest first."""
    rows, total = audience.list_contact_list(
        session,
        actor=actor,
        kind=kind,
        subscriber_id=subscriber_id,
        offset=(page - 1) * size,
        limit=size,
    )
    return ContactListPage(items=[ContactListOut.model_validate(r) for r in rows], total=total)


def _universal_out(report: audience.UniversalReport) -> UniversalControlOut:
    return UniversalControlOut(
        share_bp=report.setting.share_bp,
        rotation_days=report.setting.rotation_days,
        started_on=report.setting.started_on,
        period=report.period,
        first_day=report.first_day,
        last_day=report.last_day,
        size=report.size,
        population=report.population,
        by_province=report.by_province,
    )


@router.get("/universal-control", response_model=UniversalControlOut)
def universal_control(
    actor: ApiActor, session: DbSession, mart: MartDep, vault: VaultDep
) -> UniversalControlOut:
    """The universal control group of the current rotation period, reported on its own."""
    return _universal_out(
        audience.universal_control_report(session, mart=mart, actor=actor, vault=vault)
    )


@router.put("/universal-control", response_model=UniversalControlOut)
def set_universal_control(
    body: UniversalControlIn, actor: ApiActor, session: DbSession, mart: MartDep, vault: VaultDep
) -> UniversalControlOut:
    """Change the share or the rotation (hq_admin)."""
    audience.set_universal_control(
        session,
        actor=actor,
        share_bp=_bp(body.share),
        rotation_days=body.rotation_days,
        salt=body.salt,
        started_on=body.started_on,
    )
    return _universal_out(
        audience.universal_control_report(session, mart=mart, actor=actor, vault=vault)
    )


@router.get("/contact-policy")
def contact_policy(actor: ApiActor, session: DbSession) -> dict[str, Any]:
    """Frequency caps per channel and activity group, and quiet hours per channel."""
    return audience.contact_policy_view(session, actor=actor)


@router.put("/contact-policy")
def set_contact_policy(body: dict[str, Any], actor: ApiActor, session: DbSession) -> dict[str, Any]:
    """Replace the contact policy (hq_admin); 422 names the bad entry."""
    return policy_to_dict(audience.set_contact_policy(session, actor=actor, raw=body))


@router.get("/extraction-templates", response_model=list[TemplateOut])
def list_templates(actor: ApiActor, session: DbSession) -> list[TemplateOut]:
    """Saved extraction templates."""
    return [TemplateOut.model_validate(t) for t in audience.list_templates(session, actor=actor)]


@router.post("/extraction-templates", response_model=TemplateOut)
def save_template(
    body: dict[str, Any], actor: ApiActor, session: DbSession, mart: MartDep
) -> TemplateOut:
    """Create a template or replace the one of the same name."""
    return TemplateOut.model_validate(
        audience.save_template(session, mart=mart, actor=actor, raw=body)
    )
