"""Use cases of the audience: segments, previews, target lists, contact lists, extraction."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import marts, rules
from perkflow.audience import repository as repo
from perkflow.audience.models import (
    ContactListEntry,
    ContactPolicySetting,
    ExtractionTemplate,
    Segment,
    SegmentVersion,
    TargetList,
    UniversalControlSetting,
)
from perkflow.audience.rules import Catalog, ColumnSpec, Definition, InvalidDefinition, Kind
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.ids import token
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from perkflow.audience import compiler
else:
    compiler = lazy_module("perkflow.audience.compiler")
    pa = lazy_module("pyarrow")
    pc = lazy_module("pyarrow.compute")
    pacsv = lazy_module("pyarrow.csv")
    pq = lazy_module("pyarrow.parquet")

Progress = Callable[[int, int], None]
# String columns with at most this many distinct values get a vocabulary: typos become errors.
VOCABULARY_LIMIT = 200
EXPORT_BATCH = 50_000


def invalid(exc: InvalidDefinition, *, prefix: str = "") -> ValidationFailed:
    """The 422 for a bad definition: the first problem as message and field, all in details."""
    first = exc.problems[0]
    path = f"{prefix}{first.path}" if first.path else prefix.rstrip(".")
    errors = [
        {
            "path": f"{prefix}{p.path}" if p.path else prefix.rstrip("."),
            "message": p.message,
            **({"column": p.column} if p.column else {}),
            **({"op": p.op} if p.op else {}),
        }
        for p in exc.problems
    ]
    more = len(errors) - 1
    message = first.message + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )
    return ValidationFailed(message, field=path or "definition", errors=errors)


# ---- the catalog of what rules may test ------------------------------------------------------

_catalog_cache: dict[tuple[str, int], dict[str, ColumnSpec]] = {}


def _kind(arrow_type: pa.DataType) -> Kind | None:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type):
        return Kind.INTEGER
    if pa.types.is_floating(arrow_type):
        return Kind.NUMBER
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return Kind.STRING
    if pa.types.is_date(arrow_type):
        return Kind.DATE
    if pa.types.is_boolean(arrow_type):
        return Kind.BOOLEAN
    if pa.types.is_timestamp(arrow_type):
        return Kind.TIMESTAMP
    return None


def profile_columns(mart: Mart) -> dict[str, ColumnSpec]:
    """The profile's columns with their kinds and small vocabularies (cached per file version)."""
    path = mart.path(marts.PROFILE)
    if not path.exists():
        raise NotFound(
            "the mart has no subscriber profile yet; run `perkflow synth` first", field="mart"
        )
    key = (str(path), path.stat().st_mtime_ns)
    cached = _catalog_cache.get(key)
    if cached is not None:
        return cached
    schema = pq.read_schema(path)
    kinds = {f.name: _kind(f.type) for f in schema}
    strings = [n for n, k in kinds.items() if k == Kind.STRING]
    vocab: dict[str, tuple[str, ...] | None] = {}
    if strings:
        table = pq.read_table(path, columns=strings, read_dictionary=strings)
        for name in strings:
            values = pc.unique(table[name].combine_chunks().dictionary_decode())
            distinct = sorted(v for v in values.to_pylist() if v is not None)
            vocab[name] = tuple(distinct) if len(distinct) <= VOCABULARY_LIMIT else None
    columns = {
        name: ColumnSpec(name=name, kind=kind, values=vocab.get(name))
        for name, kind in kinds.items()
        if kind is not None
    }
    _catalog_cache.clear()  # one profile at a time is all a process reads
    _catalog_cache[key] = columns
    return columns


def feature_columns(mart: Mart) -> dict[str, ColumnSpec]:
    """Response features a rule may test (none before the first write-back); profile names win."""
    if not mart.has(marts.RESPONSE_FEATURES):
        return {}
    profile = profile_columns(mart)
    out: dict[str, ColumnSpec] = {}
    for f in pq.read_schema(mart.path(marts.RESPONSE_FEATURES)):
        kind = _kind(f.type)
        if kind is None or f.name in marts.FEATURE_COLUMNS_HIDDEN or f.name in profile:
            continue
        out[f.name] = ColumnSpec(name=f.name, kind=kind)
    return out


def _score_models(mart: Mart) -> frozenset[str]:
    if not mart.has(marts.MODEL_SCORES):
        return frozenset()
    table = pq.read_table(mart.path(marts.MODEL_SCORES), columns=["model"])
    return frozenset(str(v) for v in pc.unique(table["model"]).to_pylist() if v is not None)


def _visible(segment: Segment, actor: Actor) -> bool:
    province = org.visible_province(actor)
    return province is None or segment.province_code in (None, province)


def catalog_for(session: Session, *, mart: Mart, actor: Actor) -> Catalog:
    """What the actor's definitions may refer to."""
    columns = profile_columns(mart)
    features = feature_columns(mart)
    province = org.visible_province(actor)
    segments = repo.latest_versions(session, province=None)
    if province is not None:
        visible = {s.id for s in repo.list_segments(session, province=None) if _visible(s, actor)}
        segments = {k: v for k, v in segments.items() if k in visible}
    return Catalog(
        columns={**columns, **features},
        score_columns=frozenset(c for c in ("churn_risk",) if c in columns),
        score_models=_score_models(mart),
        feature_columns=frozenset(features),
        segments=segments,
    )


def parse(session: Session, *, mart: Mart, actor: Actor, raw: Any) -> Definition:
    """A validated definition; 422 naming the path of the bad node otherwise."""
    try:
        return rules.parse_definition(raw, catalog_for(session, mart=mart, actor=actor))
    except InvalidDefinition as exc:
        raise invalid(exc) from exc


def load_definition_text(text: str, *, filename: str = "") -> Any:
    """A definition or template read from JSON or YAML text (422 when it is neither)."""
    try:
        return rules.load_text(text, filename=filename)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc


# ---- compiling against the mart ----------------------------------------------------------------


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
        contacts=optional(marts.CONTACT_HISTORY),
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


def _scope(actor: Actor, segment_province: str | None = None) -> str | None:
    """The province a compilation is confined to: the actor's region, else the segment's."""
    return org.visible_province(actor) or segment_province


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
    segment = get_segment(session, actor=actor, segment_id=segment_id)
    stored = _version(session, segment, version)
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(stored.definition, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    src = sources(session, mart=mart, catalog=catalog, definition=definition, chain=(segment.id,))
    scoped = compiler.Scoped(definition, _scope(actor, segment.province_code))
    table = compiler.members(scoped, src, as_of or clock.now())
    ids = table.select("subscriber_id").order_by("subscriber_id").to_pyarrow()["subscriber_id"]
    return ids.combine_chunks()


# ---- segments ----------------------------------------------------------------------------------


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


# ---- universal control group and contact policy -------------------------------------------------


def get_universal_control(session: Session) -> rules.UniversalControl:
    """The universal control setting in force (the defaults until someone sets one)."""
    row = repo.universal_control(session)
    if row is None:
        return rules.DEFAULT_UNIVERSAL_CONTROL
    return rules.UniversalControl(
        share_bp=row.share_bp,
        rotation_days=row.rotation_days,
        started_on=row.started_on,
        salt=row.salt,
    )


def set_universal_control(
    session: Session,
    *,
    actor: Actor,
    share_bp: int,
    rotation_days: int,
    salt: str | None = None,
    started_on: date | None = None,
) -> rules.UniversalControl:
    """Change the universal control share or rotation; a new salt draws new members at once."""
    org.require(actor, Perm.CONTACT_POLICY_MANAGE)
    current = get_universal_control(session)
    salt = salt or current.salt
    problem = rules.universal_control_problem(
        share_bp=share_bp, rotation_days=rotation_days, salt=salt
    )
    if problem:
        raise ValidationFailed(problem, field="universal_control")
    row = repo.universal_control(session)
    now = clock.now()
    if row is None:
        row = UniversalControlSetting(id=1)
        session.add(row)
    row.share_bp = share_bp
    row.rotation_days = rotation_days
    row.salt = salt
    row.started_on = started_on or current.started_on
    row.updated_by = actor.name
    row.updated_at = now
    try:
        session.flush()  # the fixed primary key settles two first-time setters
    except IntegrityError as exc:
        raise Conflict("the setting changed meanwhile; reload", field="universal_control") from exc
    org.record_audit(
        session,
        actor=actor,
        action="universal_control.set",
        target_type="universal_control",
        target_id="1",
        details={
            "share_bp": share_bp,
            "rotation_days": rotation_days,
            "salt_changed": salt != current.salt,
            "started_on": row.started_on.isoformat(),
        },
    )
    return get_universal_control(session)


def get_contact_policy(session: Session) -> rules.ContactPolicy:
    """The contact policy in force (the case-study defaults until someone sets one)."""
    row = repo.contact_policy(session)
    if row is None:
        return rules.default_policy()
    return rules.policy_from_dict(row.body)


def contact_policy_view(session: Session, *, actor: Actor) -> dict[str, Any]:
    """The policy in force as JSON, for anyone who builds or reads target lists."""
    org.require(actor, Perm.SEGMENTS_READ)
    return rules.policy_to_dict(get_contact_policy(session))


def set_contact_policy(session: Session, *, actor: Actor, raw: Any) -> rules.ContactPolicy:
    """Replace the caps and quiet hours; 422 naming the bad entry."""
    org.require(actor, Perm.CONTACT_POLICY_MANAGE)
    try:
        policy = rules.policy_from_dict(raw)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    row = repo.contact_policy(session)
    if row is None:
        row = ContactPolicySetting(id=1)
        session.add(row)
    row.body = rules.policy_to_dict(policy)
    row.updated_by = actor.name
    row.updated_at = clock.now()
    try:
        session.flush()  # the fixed primary key settles two first-time setters
    except IntegrityError as exc:
        raise Conflict("the policy changed meanwhile; reload", field="policy") from exc
    org.record_audit(
        session,
        actor=actor,
        action="contact_policy.set",
        target_type="contact_policy",
        target_id="1",
        details=row.body,
    )
    return policy


@dataclass(frozen=True)
class UniversalReport:
    """The universal control group of one rotation period."""

    setting: rules.UniversalControl
    period: int
    first_day: date
    last_day: date
    size: int
    population: int
    by_province: dict[str, int]


def universal_control_report(
    session: Session, *, mart: Mart, actor: Actor, vault: Vault, on: date | None = None
) -> UniversalReport:
    """Who is held out of every campaign in the period of `on`, counted per province."""
    org.require(actor, Perm.SEGMENTS_READ)
    setting = get_universal_control(session)
    day = on or clock.today("UTC")
    period = setting.period(day)
    first, last = setting.period_bounds(period)
    src = compiler.Sources(profile=mart.table(marts.PROFILE))
    profile = src.profile
    province = org.visible_province(actor)
    if province is not None:
        profile = profile.filter(profile.province_code == province)
        src = compiler.Sources(profile=profile)
    held = compiler.universal_members(
        src,
        prefix=rules.hash_input_prefix(vault.assignment_key, setting.period_salt(period)),
        threshold=rules.hash_threshold(setting.share_bp),
    )
    rows = compiler.by_province(held).to_pyarrow().to_pylist()
    by_province = {str(r["province_code"]): int(r["n"]) for r in rows}
    return UniversalReport(
        setting=setting,
        period=period,
        first_day=first,
        last_day=last,
        size=sum(by_province.values()),
        population=int(profile.count().to_pyarrow().as_py()),
        by_province=dict(sorted(by_province.items(), key=lambda kv: -kv[1])),
    )


# ---- contact lists: opt-outs (免打扰) and complaints --------------------------------------------


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


# ---- target lists ------------------------------------------------------------------------------


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


# ---- self-service extraction (自助取数) ---------------------------------------------------------


def parse_template(session: Session, *, mart: Mart, actor: Actor, raw: Any) -> rules.Template:
    """A validated template; 422 naming the bad part."""
    try:
        return rules.parse_template(raw, catalog_for(session, mart=mart, actor=actor))
    except InvalidDefinition as exc:
        raise invalid(exc) from exc


def save_template(session: Session, *, mart: Mart, actor: Actor, raw: Any) -> ExtractionTemplate:
    """Create a template, or replace the one of the same name."""
    org.require(actor, Perm.EXTRACT_TEMPLATES)
    template = parse_template(session, mart=mart, actor=actor, raw=raw)
    body = rules.template_to_dict(template)
    now = clock.now()
    row = repo.get_template_by_name(session, template.name)
    action = "extraction_template.update"
    if row is None:
        action = "extraction_template.create"
        row = ExtractionTemplate(name=template.name, created_by=actor.name, created_at=now)
        session.add(row)
    row.body = body
    row.updated_at = now
    try:
        session.flush()  # the unique name decides between two first saves
    except IntegrityError as exc:
        raise Conflict(f"a template named {template.name!r} exists", field="name") from exc
    org.record_audit(
        session,
        actor=actor,
        action=action,
        target_type="extraction_template",
        target_id=str(row.id),
        details={"name": template.name, "columns": list(template.columns)},
    )
    return row


def list_templates(session: Session, *, actor: Actor) -> Sequence[ExtractionTemplate]:
    """Every saved template."""
    org.require(actor, Perm.EXTRACT)
    return repo.list_templates(session)


def get_template(session: Session, *, actor: Actor, template_id: int) -> ExtractionTemplate:
    """One template (404 otherwise)."""
    org.require(actor, Perm.EXTRACT)
    row = repo.get_template(session, template_id)
    if row is None:
        raise NotFound(f"no extraction template {template_id}", field="template_id")
    return row


@dataclass(frozen=True)
class ExtractionReport:
    """What one export wrote."""

    path: Path
    rows: int
    columns: tuple[str, ...]
    format: str
    revealed: bool
    seconds: float


def _writer(path: Path, fmt: str, schema: pa.Schema) -> Any:
    if fmt == "parquet":
        return pq.ParquetWriter(path, schema, compression="zstd")
    return pacsv.CSVWriter(path, schema)


def run_extraction(
    session: Session,
    *,
    mart: Mart,
    actor: Actor,
    vault: Vault,
    template_id: int,
    params: Mapping[str, Any],
    fmt: str,
    out_dir: Path,
    reveal: bool = False,
    limit: int | None = None,
    progress: Progress | None = None,
    ttl_s: int | None = None,
) -> ExtractionReport:
    """Export a template's rows to CSV or Parquet within the role's row limit; audited.

    The file is owner-only (0600). With `ttl_s`, `out_dir` is the home's exports folder: it is
    kept owner-only and exports older than `ttl_s` are deleted first (each deletion audited).
    """
    org.require(actor, Perm.EXTRACT)
    started = time.perf_counter()
    if fmt not in rules.EXPORT_FORMATS:
        raise ValidationFailed(
            f"format is one of {', '.join(rules.EXPORT_FORMATS)}", field="format"
        )
    if reveal:
        org.require(actor, Perm.PHONE_REVEAL)
    row = get_template(session, actor=actor, template_id=template_id)
    subscribers.export_statuses(session, mart=mart)  # churned in the ledger is churned here
    template = parse_template(session, mart=mart, actor=actor, raw=row.body)
    try:
        raw = rules.bind_params(template, params)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    catalog = catalog_for(session, mart=mart, actor=actor)
    try:
        definition = rules.parse_definition(raw, catalog)
    except InvalidDefinition as exc:
        raise invalid(exc) from exc
    src = sources(session, mart=mart, catalog=catalog, definition=definition)
    table = compiler.members(compiler.Scoped(definition, _scope(actor)), src, clock.now())
    total = int(table.count().to_pyarrow().as_py())
    allowed = rules.row_limit(actor)
    if limit is not None and limit < 1:
        raise ValidationFailed("limit is 1 or more", field="limit")
    if allowed is not None and allowed == 0:
        raise Forbidden("your role may not export rows")
    if allowed is not None and limit is not None and limit > allowed:
        raise ValidationFailed(f"your role may export at most {allowed:,} rows", field="limit")
    if allowed is not None and total > allowed and limit is None:
        raise ValidationFailed(
            f"this extraction has {total:,} rows; your role may export at most {allowed:,}: "
            "narrow it, or give a limit",
            field="limit",
        )
    rows_wanted = min(total, limit) if limit is not None else total
    mart_columns = [c for c in template.columns if c != rules.PHONE_COLUMN]
    if "subscriber_id" not in mart_columns:
        mart_columns = ["subscriber_id", *mart_columns]
    query = table.select(*mart_columns).order_by("subscriber_id").limit(rows_wanted)
    if ttl_s is not None:
        private_folder(out_dir)
        prune_exports(session, actor=actor, folder=out_dir, ttl_s=ttl_s)
    else:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{rules.safe_filename(template.name)}-{stamp}-{os.getpid()}-{token(4)}.{fmt}"
    tmp = path.with_suffix(path.suffix + ".part")
    # Created owner-only before a byte is written (a revealed export holds full phone numbers);
    # the writers reopen the existing file, which keeps its mode.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    written = 0
    writer = None
    try:
        # One Arrow result (bounded by the row limit), then batches: the phone join, the writer
        # and the progress bar go batch by batch. (Ibis's streaming reader is not used: it breaks
        # on DuckDB 2.)
        result = query.to_pyarrow()
        for batch in result.to_batches(max_chunksize=EXPORT_BATCH):
            chunk = pa.Table.from_batches([batch])
            if rules.PHONE_COLUMN in template.columns:
                ids = chunk["subscriber_id"].to_pylist()
                phones = subscribers.phones_for(
                    session,
                    actor=actor,
                    vault=vault,
                    subscriber_ids=ids,
                    reveal=reveal,
                    purpose=f"extraction_template:{row.id}",
                )
                chunk = chunk.append_column(
                    rules.PHONE_COLUMN, pa.array([phones.get(i) for i in ids], type=pa.string())
                )
            chunk = chunk.select(list(template.columns))
            # Dictionary-typed strings and float32 become plain types every reader takes.
            chunk = chunk.cast(_plain_schema(chunk.schema))
            if writer is None:
                writer = _writer(tmp, fmt, chunk.schema)
            writer.write_table(chunk)
            written += chunk.num_rows
            if progress is not None:
                progress(written, rows_wanted)
        if writer is None:
            empty = pa.schema([pa.field(c, pa.string()) for c in template.columns])
            writer = _writer(tmp, fmt, empty)
        writer.close()
        writer = None
    except BaseException:
        # A failed export leaves nothing behind (not even its first batches).
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    if progress is not None:
        progress(written, rows_wanted)
    org.record_audit(
        session,
        actor=actor,
        action="extraction.export",
        target_type="extraction_template",
        target_id=str(row.id),
        details={
            "name": template.name,
            "params": {k: str(v) for k, v in params.items()},
            "rows": written,
            "format": fmt,
            "columns": list(template.columns),
            "phones": "revealed" if reveal else "masked",
            "file": path.name,
        },
    )
    return ExtractionReport(
        path=path,
        rows=written,
        columns=template.columns,
        format=fmt,
        revealed=reveal,
        seconds=time.perf_counter() - started,
    )


# What an export leaves in its folder: the files, and a `.part` of one that was cut short.
_EXPORT_SUFFIXES = (".csv", ".parquet", ".part")


def private_folder(path: Path) -> Path:
    """The folder, owner-only (0700): created so, or narrowed when it exists wider."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)
    return path


def prune_exports(session: Session, *, actor: Actor, folder: Path, ttl_s: int) -> list[str]:
    """Delete the exports in the folder older than `ttl_s`; each deletion audited; their names."""
    if not folder.is_dir():
        return []
    cutoff = clock.now().timestamp() - ttl_s
    gone: list[str] = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.suffix not in _EXPORT_SUFFIXES:
            continue
        if entry.stat().st_mtime >= cutoff:
            continue
        entry.unlink(missing_ok=True)
        gone.append(entry.name)
        org.record_audit(
            session,
            actor=actor,
            action="extraction.expire",
            target_type="extraction_file",
            target_id=entry.name,
            details={"ttl_s": ttl_s},
        )
    return gone


def discard_export(session: Session, *, actor: Actor, path: Path, downloaded: bool) -> None:
    """Delete an export once it was sent (or its download broke off); audited."""
    path.unlink(missing_ok=True)
    org.record_audit(
        session,
        actor=actor,
        action="extraction.download" if downloaded else "extraction.download_failed",
        target_type="extraction_file",
        target_id=path.name,
        details={"deleted": True},
    )


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        fields.append(pa.field(f.name, t))
    return pa.schema(fields)


# ---- reads for campaign dispatch -----------------------------------------------------------------


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
