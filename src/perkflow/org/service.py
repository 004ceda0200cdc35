"""Use cases of the organisation: regions, staff, sign-in, API keys, audit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.errors import Conflict, Forbidden, NotFound, TooManyRequests, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import sha256_hex
from perkflow.kit.ids import prefixed_key
from perkflow.org import repository as repo
from perkflow.org.models import ApiKey, AuditEntry, LoginAttempt, Region, StaffUser
from perkflow.org.rules import (
    API_SCOPES,
    OWNER_KINDS,
    Actor,
    Perm,
    Role,
    covers,
    password_problem,
    province_of,
    role_fits_level,
)

_hasher = PasswordHasher()
# Verifying against this keeps the time of an unknown username equal to a wrong password.
_DUMMY_HASH = _hasher.hash("perkflow-timing-equaliser")


def load_region_data() -> dict[str, Any]:
    """The packaged region tree."""
    text = resources.files("perkflow.org").joinpath("data/regions.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def seed_regions(session: Session) -> int:
    """Load group, provinces, cities and stores from the packaged file; a no-op when present."""
    if repo.count_regions(session):
        return 0
    data = load_region_data()
    group = data["group"]
    rows = [
        Region(
            code=group["code"],
            parent_code=None,
            level="group",
            name_zh=group["name_zh"],
            name_en=group["name_en"],
            path=group["code"],
        )
    ]
    kinds = data["store_kinds"]
    for prov in data["provinces"]:
        ppath = f"{group['code']}/{prov['code']}"
        rows.append(
            Region(
                code=prov["code"],
                parent_code=group["code"],
                level="province",
                name_zh=prov["name_zh"],
                name_en=prov["name_en"],
                path=ppath,
            )
        )
        for city in prov["cities"]:
            cpath = f"{ppath}/{city['code']}"
            rows.append(
                Region(
                    code=city["code"],
                    parent_code=prov["code"],
                    level="city",
                    name_zh=city["name_zh"],
                    name_en=city["name_en"],
                    path=cpath,
                )
            )
            for i, (kind_zh, kind_en) in enumerate(kinds, start=1):
                scode = f"{city['code']}S{i}"
                rows.append(
                    Region(
                        code=scode,
                        parent_code=city["code"],
                        level="store",
                        name_zh=f"{city['name_zh']}{kind_zh}",
                        name_en=f"{city['name_en']} {kind_en}",
                        path=f"{cpath}/{scode}",
                    )
                )
    session.add_all(rows)
    session.flush()  # callers read the tree in the same transaction
    return len(rows)


def get_region(session: Session, *, code: str) -> Region:
    """A region by code, or 404."""
    region = repo.get_region(session, code)
    if region is None:
        raise NotFound(f"no region {code!r}", field="region_code")
    return region


def regions_by_code(session: Session, *, codes: set[str]) -> dict[str, Region]:
    """Regions for a set of codes, to show names beside codes."""
    return {r.code: r for r in repo.regions_by_codes(session, codes)} if codes else {}


def list_provinces(session: Session) -> Sequence[Region]:
    """All 31 provinces in code order."""
    return repo.regions_at_level(session, "province")


def list_cities(session: Session, *, province_code: str) -> Sequence[Region]:
    """The cities of one province."""
    province = get_region(session, code=province_code)
    return repo.regions_at_level(session, "city", under_path=province.path)


def require(actor: Actor, perm: Perm) -> None:
    """Raise 403 unless the actor holds the permission."""
    if not actor.can(perm):
        raise Forbidden(f"your role may not do this ({perm.value})")


def require_region(session: Session, *, actor: Actor, region_code: str) -> Region:
    """The region, if the actor's scope covers it; 403 otherwise."""
    region = get_region(session, code=region_code)
    if actor.kind != "system" and not covers(actor.scope_path, region.path):
        raise Forbidden(f"region {region_code} is outside your scope")
    return region


def visible_province(actor: Actor) -> str | None:
    """The one province an actor is limited to, or None for national scope."""
    return None if actor.kind == "system" else province_of(actor.scope_path)


def record_audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit entry in the caller's transaction, so it lands only with the write."""
    entry = AuditEntry(
        at=clock.now(),
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_name=actor.name,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details or {},
        ip=actor.ip,
    )
    session.add(entry)
    return entry


def append_audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    """`record_audit` for hot paths: the same row in the caller's transaction, sent at once."""
    repo.insert_audit(
        session,
        {
            "at": clock.now(),
            "actor_kind": actor.kind,
            "actor_id": actor.id,
            "actor_name": actor.name,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "details": details or {},
            "ip": actor.ip,
        },
    )


def append_audits(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target_type: str,
    entries: Sequence[tuple[str, dict[str, Any]]],
) -> None:
    """`append_audit` for many targets of one actor and action: one executemany."""
    if not entries:
        return
    at = clock.now()
    repo.insert_audits(
        session,
        [
            {
                "at": at,
                "actor_kind": actor.kind,
                "actor_id": actor.id,
                "actor_name": actor.name,
                "action": action,
                "target_type": target_type,
                "target_id": target_id,
                "details": details,
                "ip": actor.ip,
            }
            for target_id, details in entries
        ],
    )


def list_audit(
    session: Session, *, actor: Actor, offset: int, limit: int, action: str | None = None
) -> tuple[Sequence[AuditEntry], int]:
    """A page of the audit log, newest first; hq_admin only."""
    require(actor, Perm.AUDIT_READ)
    return repo.audit_page(session, offset=offset, limit=limit, action=action)


def audit_of_target(
    session: Session, *, target_type: str, target_id: str, limit: int = 100
) -> Sequence[AuditEntry]:
    """The newest audit entries about one thing; the caller has checked the reader may see it."""
    return repo.audit_of_target(
        session, target_type=target_type, target_id=target_id, limit=min(max(limit, 1), 1000)
    )


def create_staff(
    session: Session,
    *,
    actor: Actor,
    username: str,
    display_name: str,
    password: str,
    role: Role,
    region_code: str,
) -> StaffUser:
    """Create a console user whose scope fits their role."""
    require(actor, Perm.STAFF_MANAGE)
    problem = password_problem(password)
    if problem:
        raise ValidationFailed(f"password {problem}", field="password")
    region = get_region(session, code=region_code)
    if not role_fits_level(role, region.level):
        raise ValidationFailed(
            f"a {role.value} is scoped to a region of another level than {region.level}",
            field="region_code",
        )
    user = StaffUser(
        username=username,
        display_name=display_name,
        password_hash=_hasher.hash(password),
        role=role.value,
        region_code=region.code,
        is_active=True,
        created_at=clock.now(),
    )
    session.add(user)
    try:
        session.flush()  # the unique username is the check: no read-then-insert race
    except IntegrityError as exc:
        raise Conflict(f"username {username!r} is taken", field="username") from exc
    record_audit(
        session,
        actor=actor,
        action="staff.create",
        target_type="staff",
        target_id=str(user.id),
        details={"username": username, "role": role.value, "region": region.code},
    )
    return user


def set_password(session: Session, *, actor: Actor, username: str, password: str) -> StaffUser:
    """Replace a staff member's password."""
    require(actor, Perm.STAFF_MANAGE)
    problem = password_problem(password)
    if problem:
        raise ValidationFailed(f"password {problem}", field="password")
    user = repo.get_staff_by_username(session, username)
    if user is None:
        raise NotFound(f"no staff user {username!r}", field="username")
    user.password_hash = _hasher.hash(password)
    record_audit(
        session,
        actor=actor,
        action="staff.set_password",
        target_type="staff",
        target_id=str(user.id),
        details={"username": username},
    )
    return user


def list_staff(session: Session, *, actor: Actor) -> Sequence[StaffUser]:
    """Every staff member; hq_admin only."""
    require(actor, Perm.STAFF_MANAGE)
    return repo.list_staff(session)


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in try; the attempt is recorded either way."""

    user: StaffUser | None
    reason: str | None = None


def sign_in(
    session: Session, *, username: str, password: str, ip: str, max_failures: int, window_s: int
) -> SignIn:
    """Check credentials under a per-username and per-address failure limit."""
    now = clock.now()
    by_user, by_ip = repo.recent_failures(
        session, username=username, ip=ip, since=now - timedelta(seconds=window_s)
    )
    if by_user >= max_failures or by_ip >= max_failures * 4:
        raise TooManyRequests("too many failed sign-ins; try again later", field="username")
    user = repo.get_staff_by_username(session, username)
    ok = False
    try:
        ok = _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        ok = False
    ok = ok and user is not None and user.is_active
    session.add(LoginAttempt(username=username[:64], ip=ip[:64], at=now, success=ok))
    if not ok or user is None:
        return SignIn(user=None, reason="wrong username or password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return SignIn(user=user)


def get_staff(session: Session, *, staff_id: int) -> StaffUser | None:
    """An active staff member by id, or None."""
    user = repo.get_staff(session, staff_id)
    return user if user is not None and user.is_active else None


def actor_for_staff(session: Session, *, user: StaffUser, ip: str) -> Actor:
    """The acting identity of a signed-in staff member."""
    region = get_region(session, code=user.region_code)
    return Actor(
        kind="staff",
        id=str(user.id),
        name=user.username,
        ip=ip,
        role=Role(user.role),
        scope_path=region.path,
    )


def create_api_key(
    session: Session,
    *,
    actor: Actor,
    name: str,
    owner_kind: str,
    scopes: Sequence[str],
    owner_ref: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key for a partner or channel; the plaintext is returned once and never stored."""
    require(actor, Perm.APIKEYS_MANAGE)
    if owner_kind not in OWNER_KINDS:
        raise ValidationFailed(
            f"owner kind must be one of {sorted(OWNER_KINDS)}", field="owner_kind"
        )
    if owner_ref is not None and (owner_kind != "partner" or not 0 < len(owner_ref) <= 32):
        raise ValidationFailed(
            "owner_ref is a partner code (at most 32 characters) on a partner's key",
            field="owner_ref",
        )
    unknown = sorted(set(scopes) - API_SCOPES)
    if unknown or not scopes:
        raise ValidationFailed(
            f"unknown or missing scopes {unknown}; known: {sorted(API_SCOPES)}", field="scopes"
        )
    plaintext = prefixed_key("pk_" + owner_kind[:2])
    key = ApiKey(
        name=name,
        owner_kind=owner_kind,
        key_prefix=plaintext[:10],
        key_hash=sha256_hex(plaintext),
        scopes=sorted(set(scopes)),
        owner_ref=owner_ref,
        created_at=clock.now(),
    )
    session.add(key)
    session.flush()  # the id goes into the audit entry
    record_audit(
        session,
        actor=actor,
        action="apikey.create",
        target_type="api_key",
        target_id=str(key.id),
        details={"name": name, "scopes": key.scopes, "owner_ref": owner_ref},
    )
    return key, plaintext


def revoke_api_key(session: Session, *, actor: Actor, key_id: int) -> ApiKey:
    """Stop a key from working."""
    require(actor, Perm.APIKEYS_MANAGE)
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}", field="key_id")
    if key.revoked_at is None:
        key.revoked_at = clock.now()
        record_audit(
            session,
            actor=actor,
            action="apikey.revoke",
            target_type="api_key",
            target_id=str(key.id),
            details={"name": key.name},
        )
    return key


def list_api_keys(session: Session, *, actor: Actor) -> Sequence[ApiKey]:
    """All keys, revoked ones included."""
    require(actor, Perm.APIKEYS_MANAGE)
    return repo.list_api_keys(session)


def actor_for_api_key(session: Session, *, presented: str, ip: str) -> Actor | None:
    """The acting identity of a presented key, or None if unknown or revoked."""
    key = repo.get_api_key_by_hash(session, sha256_hex(presented))
    if key is None or key.revoked_at is not None:
        return None
    return Actor(
        kind="api_key",
        id=str(key.id),
        name=key.name,
        ip=ip,
        api_scopes=frozenset(key.scopes),
        owner_ref=key.owner_ref,
        owner_kind=key.owner_kind,
    )
