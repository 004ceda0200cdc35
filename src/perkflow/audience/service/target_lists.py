"""Target lists: a segment version's snapshot in the mart, each member's cell and why suppressed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from perkflow.audience import marts, rules
from perkflow.audience import repository as repo
from perkflow.audience.models import TargetList
from perkflow.audience.rules import InvalidDefinition
from perkflow.errors import Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.ids import token
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from ._common import _scope, invalid
from .catalog import catalog_for
from .compiling import sources
from .contact_lists import export_contact_lists
from .policy import get_contact_policy, get_universal_control
from .segments import _version, get_segment

if TYPE_CHECKING:
    import pyarrow as pa

    from perkflow.audience import compiler
else:
    compiler = lazy_module("perkflow.audience.compiler")


def build_target_list(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    vault: Vault,
    segment_id: int,
    channel: str,
    control_share_bp: int,
    version: int | None = None,
    send_at: datetime | None = None,
    salt: str | None = None,
    name: str | None = None,
    default_zone: str = "Asia/Shanghai",
) -> TargetList:
    """Snapshot a segment version into the mart: every member's cell, and why if suppressed."""
    org.require(actor, Perm.TARGET_LISTS_BUILD)
    started = time.perf_counter()
    if channel not in rules.CHANNELS:
        raise ValidationFailed(f"channel is one of {', '.join(rules.CHANNELS)}", field="channel")
    problem = rules.share_problem(control_share_bp)
    if problem:
        raise ValidationFailed(problem, field="control_share")
    salt = salt or token(12)
    if not rules.SALT.fullmatch(salt):
        raise ValidationFailed("salt: 1–64 letters, digits, _ . : -", field="salt")
    segment = get_segment(session, actor=actor, segment_id=segment_id)
    stored = _version(session, segment, version)
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(stored.definition, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc, prefix=f"segment {segment.id} v{stored.version}: ") from exc
    as_of = send_at or clock.now()
    if as_of.tzinfo is None:
        raise ValidationFailed("send_at needs a time zone", field="send_at")
    # The mart's lists are refreshed from the ledger first, so the policy sees today's opt-outs.
    export_contact_lists(session, mart=mart)
    src = sources(session, mart=mart, catalog=catalog, definition=definition, chain=(segment.id,))
    province = _scope(actor, segment.province_code)
    universal = get_universal_control(session)
    period = universal.period(as_of.date())
    policy = get_contact_policy(session)
    provinces = catalog.columns["province_code"].values or ()
    target_list = TargetList(
        name=(name or f"{segment.name} v{stored.version}")[:120],
        segment_id=segment.id,
        segment_version=stored.version,
        province_code=province,
        channel=channel,
        send_at=as_of,
        control_share_bp=control_share_bp,
        salt=salt,
        universal_period=period,
        universal_share_bp=universal.share_bp,
        status="building",
        mart_table="",
        built_by=actor.name,
        built_at=clock.now(),
        reasons={},
        by_province={},
    )
    session.add(target_list)
    session.flush()  # the id names the snapshot table and goes into every row
    target_list.mart_table = marts.target_list_table(target_list.id)
    plan = compiler.Assignment(
        target_list_id=target_list.id,
        channel=channel,
        as_of=as_of,
        control_share_bp=control_share_bp,
        control_prefix=rules.hash_input_prefix(vault.assignment_key, salt),
        universal_prefix=rules.hash_input_prefix(
            vault.assignment_key, universal.period_salt(period)
        ),
        universal_threshold=rules.hash_threshold(universal.share_bp),
        policy=policy,
        quiet_provinces=rules.quiet_provinces(
            policy, channel=channel, at=as_of, provinces=provinces, default_zone=default_zone
        ),
    )
    member_rows = compiler.members(compiler.Scoped(definition, province), src, as_of)
    snapshot = marts.conform(
        compiler.assign(member_rows, src, plan).to_pyarrow(), marts.TARGET_LIST_SCHEMA
    )
    mart.write(target_list.mart_table, snapshot)
    _fill_counts(target_list, snapshot)
    target_list.status = "ready"
    target_list.seconds = round(time.perf_counter() - started, 3)
    org.record_audit(
        session,
        actor=actor,
        action="target_list.build",
        target_type="target_list",
        target_id=str(target_list.id),
        details={
            "segment_id": segment.id,
            "segment_version": stored.version,
            "channel": channel,
            "control_share_bp": control_share_bp,
            "salt": salt,
            "members": target_list.members,
            "target": target_list.target,
            "control": target_list.control,
            "universal_control": target_list.universal_control,
            "suppressed": target_list.suppressed,
        },
    )
    return target_list


def _fill_counts(target_list: TargetList, snapshot: pa.Table) -> None:
    counted = snapshot.group_by(["province_code", "cell", "reason"]).aggregate(
        [("subscriber_id", "count")]
    )
    cells = dict.fromkeys((c.value for c in rules.ListCell), 0)
    reasons: dict[str, int] = {}
    by_province: dict[str, dict[str, int]] = {}
    for r in counted.to_pylist():
        n = int(r["subscriber_id_count"])
        cells[r["cell"]] += n
        if r["reason"] is not None:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + n
        per = by_province.setdefault(r["province_code"], dict.fromkeys(cells, 0))
        per[r["cell"]] += n
    target_list.members = int(snapshot.num_rows)
    target_list.target = cells[rules.ListCell.TARGET]
    target_list.control = cells[rules.ListCell.CONTROL]
    target_list.universal_control = cells[rules.ListCell.UNIVERSAL_CONTROL]
    target_list.suppressed = cells[rules.ListCell.SUPPRESSED]
    target_list.reasons = {r.value: reasons[r.value] for r in rules.Reason if r.value in reasons}
    target_list.by_province = dict(sorted(by_province.items()))


def _visible_list(target_list: TargetList, actor: Actor) -> bool:
    province = org.visible_province(actor)
    return province is None or target_list.province_code == province


def get_target_list(session: Session, *, actor: Actor, target_list_id: int) -> TargetList:
    """A target list the actor may see."""
    org.require(actor, Perm.SEGMENTS_READ)
    target_list = repo.get_target_list(session, target_list_id)
    if target_list is None:
        raise NotFound(f"no target list {target_list_id}", field="target_list_id")
    if not _visible_list(target_list, actor):
        raise Forbidden("this target list belongs to another province")
    return target_list


def list_target_lists(
    session: Session,
    *,
    actor: Actor,
    segment_id: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[Sequence[TargetList], int]:
    """A page of target lists within the actor's region, newest first."""
    org.require(actor, Perm.SEGMENTS_READ)
    return repo.target_lists_page(
        session,
        province=org.visible_province(actor),
        segment_id=segment_id,
        offset=offset,
        limit=limit,
    )


def target_list_rows(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    target_list_id: int,
    cell: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The first rows of a target list's snapshot (optionally of one cell), by subscriber id."""
    target_list = get_target_list(session, actor=actor, target_list_id=target_list_id)
    if not mart.has(target_list.mart_table):
        raise NotFound("the snapshot of this list is not in the mart", field="target_list_id")
    t = mart.table(target_list.mart_table)
    if cell is not None:
        t = t.filter(t.cell == cell)
    rows: list[dict[str, Any]] = t.order_by("subscriber_id").limit(limit).to_pyarrow().to_pylist()
    return rows
