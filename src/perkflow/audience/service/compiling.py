"""Compiling definitions against the mart: the tables and segments they read, previews, counts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from perkflow.audience import marts, rules
from perkflow.audience import repository as repo
from perkflow.audience.rules import Catalog, Definition, InvalidDefinition
from perkflow.errors import ValidationFailed
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from ._common import _scope, invalid
from .catalog import catalog_for

if TYPE_CHECKING:
    from perkflow.audience import compiler
else:
    compiler = lazy_module("perkflow.audience.compiler")


def _resolve(
    session: Session,
    *,
    catalog: Catalog,
    definition: Definition,
    chain: tuple[int, ...],
    found: dict[tuple[int, int], compiler.Scoped],
) -> None:
    """Load every segment version a definition is a member-of test on, refusing cycles."""
    for sid, version in sorted(rules.referenced_segments(definition), key=str):
        if sid in chain:
            path = " → ".join(str(s) for s in (*chain, sid))
            raise ValidationFailed(f"segment {path} refers to itself", field="rule.segment")
        key = (sid, version or catalog.segments[sid])
        if key in found:
            continue
        stored = repo.get_version(session, key[0], key[1])
        segment = repo.get_segment(session, sid)
        if stored is None or segment is None:
            raise ValidationFailed(f"segment {sid} has no version {key[1]}", field="rule.segment")
        try:
            inner = rules.parse_definition(stored.definition, catalog)
        except InvalidDefinition as exc:
            raise invalid(exc, prefix=f"segment {sid} v{key[1]}: ") from exc
        found[key] = compiler.Scoped(definition=inner, province=segment.province_code)
        _resolve(session, catalog=catalog, definition=inner, chain=(*chain, sid), found=found)


def sources(
    session: Session,
    *,
    mart: Mart,
    catalog: Catalog,
    definition: Definition,
    chain: tuple[int, ...] = (),
) -> compiler.Sources:
    """The mart tables and referenced segments a definition compiles against."""
    found: dict[tuple[int, int], compiler.Scoped] = {}
    _resolve(session, catalog=catalog, definition=definition, chain=chain, found=found)

    def optional(name: str) -> Any:
        return mart.table(name) if mart.has(name) else None

    return compiler.Sources(
        profile=mart.table(marts.PROFILE),
        contacts=None if (c := optional(marts.CONTACT_HISTORY)) is None else marts.contacts_made(c),
        responses=optional(marts.RESPONSE_HISTORY),
        lists=optional(marts.CONTACT_LISTS),
        scores=optional(marts.MODEL_SCORES),
        segments=found,
        latest=dict(catalog.segments),
        score_columns=catalog.score_columns,
        features=optional(marts.RESPONSE_FEATURES),
        feature_columns=catalog.feature_columns,
    )


@dataclass(frozen=True)
class Preview:
    """How many subscribers a definition selects, broken down for the builder's chart."""

    count: int
    by_province: dict[str, int]
    by_plan_fee: dict[int, int]
    by_activity: dict[str, int]
    seconds: float


def preview_definition(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    raw: Any,
    as_of: datetime | None = None,
    segment_id: int | None = None,
) -> Preview:
    """Count a definition's members within the actor's region, by province, plan fee, activity."""
    org.require(actor, Perm.SEGMENTS_READ)
    started = time.perf_counter()
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(raw, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    chain = (segment_id,) if segment_id is not None else ()
    src = sources(session, mart=mart, catalog=catalog, definition=definition, chain=chain)
    scoped = compiler.Scoped(definition, province=_scope(actor))
    table = compiler.members(scoped, src, as_of or clock.now())
    rows = compiler.breakdown(table).to_pyarrow().to_pylist()
    by_province: dict[str, int] = {}
    by_fee: dict[int, int] = {}
    by_activity: dict[str, int] = {}
    for r in rows:
        n = int(r["n"])
        by_province[str(r["province_code"])] = by_province.get(str(r["province_code"]), 0) + n
        fee = int(r["plan_fee_yuan"])
        by_fee[fee] = by_fee.get(fee, 0) + n
        act = str(r["activity_level"])
        by_activity[act] = by_activity.get(act, 0) + n
    return Preview(
        count=sum(by_province.values()),
        by_province=dict(sorted(by_province.items(), key=lambda kv: (-kv[1], kv[0]))),
        by_plan_fee=dict(sorted(by_fee.items())),
        by_activity={a: by_activity[a] for a in rules.ACTIVITY_LEVELS if a in by_activity},
        seconds=time.perf_counter() - started,
    )


def count_definition(
    session: Session, *, mart: Mart, actor: Actor, raw: Any, as_of: datetime | None = None
) -> dict[str, Any]:
    """`{"count": N, "by_province": {...}}` of a definition: what `segment count` prints."""
    org.require(actor, Perm.SEGMENTS_READ)
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(raw, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    src = sources(session, mart=mart, catalog=catalog, definition=definition)
    table = compiler.members(compiler.Scoped(definition, _scope(actor)), src, as_of or clock.now())
    rows = compiler.by_province(table).to_pyarrow().to_pylist()
    by_province = {str(r["province_code"]): int(r["n"]) for r in rows}
    by_province = dict(sorted(by_province.items()))
    return {"count": sum(by_province.values()), "by_province": by_province}
