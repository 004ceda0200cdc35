"""The universal control group and the contact policy: settings, and who is held out per period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import marts, rules
from perkflow.audience import repository as repo
from perkflow.audience.models import ContactPolicySetting, UniversalControlSetting
from perkflow.audience.rules import InvalidDefinition
from perkflow.errors import Conflict, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from ._common import invalid

if TYPE_CHECKING:
    from perkflow.audience import compiler
else:
    compiler = lazy_module("perkflow.audience.compiler")


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
