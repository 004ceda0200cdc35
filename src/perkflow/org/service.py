"""Use cases of the organisation: regions, staff, sign-in, API keys, audit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
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


@cache
def _dummy_hash() -> str:
    """Verifying against this keeps the time of an unknown username equal to a wrong password."""
    # Hashed on first sign-in, not at import: argon2 costs a quarter second every CLI start.
    return _hasher.hash("perkflow-timing-equaliser")


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


def count_stores(session: Session, *, under_paths: Sequence[str]) -> int:
    """How many stores lie in any of these regions (a store's own path counts as inside)."""
    codes: set[str] = set()
    for path in under_paths:
        codes |= {r.code for r in repo.regions_at_level(session, "store", under_path=path)}
        own = repo.get_region(session, path.rsplit("/", 1)[-1])
        if own is not None and own.level == "store" and own.path == path:
            codes.add(own.code)
    return len(codes)


def require(actor: Actor, perm: Perm) -> None:
    """Raise 403 unless the actor holds the permission."""
    if not actor.can(perm):
        raise Forbidden(f"your role may not do this ({perm.value})")


def require_perm_or_scope(actor: Actor, *, perm: Perm, scope: str | Sequence[str]) -> None:
    """403 unless staff hold the permission or an API key one of the scopes (system may)."""
    # The one check of every use case open to staff and keys: a route that names a scope in
    # org.rules.SCOPES must accept a key holding it, not only the staff permission.
    if actor.kind == "api_key":
        scopes = (scope,) if isinstance(scope, str) else tuple(scope)
        if not any(actor.has_scope(s) for s in scopes):
            raise Forbidden(f"this key lacks the {scopes[0]} scope")
        return
    require(actor, perm)


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
    # A new password ends every session: a cookie copied under the old one stops working.
    repo.bump_session_epoch(session, user.id)
    session.flush()
    session.refresh(user)
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


def set_staff_role(
    session: Session, *, actor: Actor, username: str, role: Role, region_code: str
) -> StaffUser:
    """Give a staff member another role or region; their open sessions end."""
    require(actor, Perm.STAFF_MANAGE)
    user = repo.get_staff_by_username(session, username)
    if user is None:
        raise NotFound(f"no staff user {username!r}", field="username")
    region = get_region(session, code=region_code)
    if not role_fits_level(role, region.level):
        raise ValidationFailed(
            f"a {role.value} is scoped to a region of another level than {region.level}",
            field="region_code",
        )
    before = {"role": user.role, "region": user.region_code}
    user.role = role.value
    user.region_code = region.code
    # A session signed under the old role must not keep its old powers for 8 hours.
    repo.bump_session_epoch(session, user.id)
    session.flush()
    session.refresh(user)
    record_audit(
        session,
        actor=actor,
        action="staff.set_role",
        target_type="staff",
        target_id=str(user.id),
        details={
            "username": username,
            "from": before,
            "to": {"role": role.value, "region": region.code},
        },
    )
    return user


def end_sessions(session: Session, *, staff_id: int) -> None:
    """Sign a staff member out everywhere (logout): every copy of their session cookie ends."""
    repo.bump_session_epoch(session, staff_id)


@dataclass(frozen=True)
class SignInTurn:
    """One sign-in try, counted against the limits before its password is checked."""

    username: str
    ip: str
    keys: tuple[str, ...]
    at: datetime


def take_sign_in_turn(
    session: Session, *, username: str, ip: str, max_failures: int, window_s: int
) -> SignInTurn:
    """Count a sign-in try per username and per address, or 429 when either window is spent."""
    now = clock.now()
    since = now - timedelta(seconds=window_s)
    username, ip = username[:64], ip[:64]
    limits = {f"user:{username}": max_failures, f"ip:{ip}": max_failures * 4}
    # Keys in one order for every try: two tries never lock each other's rows crosswise.
    for key in sorted(limits):
        if not repo.take_turn(session, key=key, limit=limits[key], now=now, since=since):
            # The caller rolls this transaction back: a refused try takes no turn anywhere.
            raise TooManyRequests("too many failed sign-ins; try again later", field="username")
    repo.prune_turns(session, before=since)
    return SignInTurn(username=username, ip=ip, keys=tuple(sorted(limits)), at=now)


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in try; the attempt is recorded either way."""

    user: StaffUser | None
    reason: str | None = None


def sign_in(session: Session, *, turn: SignInTurn, password: str) -> SignIn:
    """Check the credentials of a try that took its turn (`take_sign_in_turn`, committed first)."""
    user = repo.get_staff_by_username(session, turn.username)
    ok = False
    try:
        ok = _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        ok = False
    ok = ok and user is not None and user.is_active
    session.add(LoginAttempt(username=turn.username, ip=turn.ip, at=turn.at, success=ok))
    if not ok or user is None:
        return SignIn(user=None, reason="wrong username or password")
    repo.give_back_turns(session, keys=turn.keys)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return SignIn(user=user)


def get_staff(session: Session, *, staff_id: int) -> StaffUser | None:
    """An active staff member by id, or None."""
    user = repo.get_staff(session, staff_id)
    return user if user is not None and user.is_active else None


def staff_of_session(session: Session, *, staff_id: int, epoch: int | None) -> StaffUser | None:
    """The active staff member a session cookie signs in, or None once it was ended."""
    user = get_staff(session, staff_id=staff_id)
    # A cookie from before a logout, password or role change carries an older epoch.
    if user is None or epoch is None or user.session_epoch != epoch:
        return None
    return user


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
