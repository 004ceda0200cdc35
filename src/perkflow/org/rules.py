"""Roles, permissions and region scope: pure decisions, no database."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    HQ_ADMIN = "hq_admin"
    PROVINCE_MARKETER = "province_marketer"
    CLERK = "clerk"
    ANALYST = "analyst"


class Perm(StrEnum):
    DASHBOARD = "dashboard.view"
    SUBSCRIBERS_READ = "subscribers.read"
    SUBSCRIBERS_STATUS = "subscribers.change_status"
    PHONE_REVEAL = "phone.reveal"
    AUDIT_READ = "audit.read"
    STAFF_MANAGE = "staff.manage"
    APIKEYS_MANAGE = "apikeys.manage"
    STORE_VIEW = "store.view"


ROLE_PERMS: dict[Role, frozenset[Perm]] = {
    Role.HQ_ADMIN: frozenset(Perm),
    Role.PROVINCE_MARKETER: frozenset(
        {Perm.DASHBOARD, Perm.SUBSCRIBERS_READ, Perm.SUBSCRIBERS_STATUS}
    ),
    Role.ANALYST: frozenset({Perm.DASHBOARD, Perm.SUBSCRIBERS_READ}),
    Role.CLERK: frozenset({Perm.STORE_VIEW}),
}

# The region level each role's scope must sit at; analysts may be national or provincial.
ROLE_LEVELS: dict[Role, frozenset[str]] = {
    Role.HQ_ADMIN: frozenset({"group"}),
    Role.PROVINCE_MARKETER: frozenset({"province"}),
    Role.ANALYST: frozenset({"group", "province"}),
    Role.CLERK: frozenset({"store"}),
}

API_SCOPES: frozenset[str] = frozenset({"subscribers:read", "subscribers:status", "h5:link"})
OWNER_KINDS: frozenset[str] = frozenset({"partner", "channel"})


@dataclass(frozen=True)
class Actor:
    """Whoever is acting: a staff member, an API key, a subscriber or the system itself."""

    kind: str
    id: str
    name: str
    ip: str = "-"
    role: Role | None = None
    scope_path: str = "CN"
    api_scopes: frozenset[str] = field(default_factory=frozenset)

    def can(self, perm: Perm) -> bool:
        """Whether the actor holds a permission (system holds all)."""
        if self.kind == "system":
            return True
        return self.role is not None and perm in ROLE_PERMS[self.role]

    def has_scope(self, scope: str) -> bool:
        """Whether an API key carries a scope."""
        return self.kind == "system" or scope in self.api_scopes


SYSTEM = Actor(kind="system", id="system", name="perkflow")


def covers(scope_path: str, target_path: str) -> bool:
    """Whether a scope (a region path) includes a region: itself or anything below it."""
    return target_path == scope_path or target_path.startswith(scope_path + "/")


def role_fits_level(role: Role, level: str) -> bool:
    """Whether a role may be scoped to a region of this level."""
    return level in ROLE_LEVELS[role]


def province_of(path: str) -> str | None:
    """The province code in a region path (`CN/GD/GD01` → `GD`), or None at group level."""
    parts = path.split("/")
    return parts[1] if len(parts) > 1 else None


def password_problem(password: str) -> str | None:
    """Why a password is too weak, or None."""
    if len(password) < 10:
        return "must be at least 10 characters"
    if password.isdigit() or password.isalpha():
        return "must mix letters with digits or symbols"
    return None
