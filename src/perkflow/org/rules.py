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
    GRANTS_READ = "grants.read"
    GRANTS_ISSUE = "grants.issue"
    GRANTS_REDRIVE = "grants.redrive"
    CATALOG_READ = "catalog.read"
    CATALOG_EDIT = "catalog.edit"
    SEGMENTS_READ = "segments.read"
    SEGMENTS_EDIT = "segments.edit"
    TARGET_LISTS_BUILD = "target_lists.build"
    OPTOUTS_MANAGE = "optouts.manage"
    CONTACT_POLICY_MANAGE = "contact_policy.manage"
    EXTRACT = "extract.run"
    EXTRACT_TEMPLATES = "extract.templates"
    COUPONS_EDIT = "coupons.edit"
    REDEEM = "coupons.redeem"
    MEMBERSHIP_READ = "membership.read"
    MEMBERSHIP_EDIT = "membership.edit"
    POINTS_ADJUST = "points.adjust"
    CAMPAIGNS_READ = "campaigns.read"
    CAMPAIGNS_EDIT = "campaigns.edit"
    # Approval is a second person's: the service refuses an approval by the campaign's author.
    CAMPAIGNS_APPROVE = "campaigns.approve"
    CAMPAIGNS_RUN = "campaigns.run"
    EVENTS_WRITE = "events.write"
    RESPONSES_WRITE = "responses.write"


ROLE_PERMS: dict[Role, frozenset[Perm]] = {
    Role.HQ_ADMIN: frozenset(Perm),
    Role.PROVINCE_MARKETER: frozenset(
        {
            Perm.DASHBOARD,
            Perm.SUBSCRIBERS_READ,
            Perm.SUBSCRIBERS_STATUS,
            Perm.GRANTS_READ,
            Perm.GRANTS_ISSUE,
            Perm.CATALOG_READ,
            # Audience: a marketer's segments and lists are confined to their province.
            Perm.SEGMENTS_READ,
            Perm.SEGMENTS_EDIT,
            Perm.TARGET_LISTS_BUILD,
            Perm.OPTOUTS_MANAGE,
            # Coupons: a marketer edits their own province's batches and red envelopes.
            Perm.COUPONS_EDIT,
            # Campaigns: a marketer runs their province's campaigns; approval stays at HQ.
            Perm.CAMPAIGNS_READ,
            Perm.CAMPAIGNS_EDIT,
            Perm.CAMPAIGNS_RUN,
        }
    ),
    Role.ANALYST: frozenset(
        {Perm.DASHBOARD, Perm.SUBSCRIBERS_READ, Perm.GRANTS_READ, Perm.CATALOG_READ}
        | {Perm.SEGMENTS_READ, Perm.EXTRACT, Perm.EXTRACT_TEMPLATES, Perm.CAMPAIGNS_READ}
        # Membership reports are national figures: provincial analysts are refused by scope.
        | {Perm.MEMBERSHIP_READ}
    ),
    Role.CLERK: frozenset({Perm.STORE_VIEW, Perm.REDEEM}),
}

# The region level each role's scope must sit at; analysts may be national or provincial.
ROLE_LEVELS: dict[Role, frozenset[str]] = {
    Role.HQ_ADMIN: frozenset({"group"}),
    Role.PROVINCE_MARKETER: frozenset({"province"}),
    Role.ANALYST: frozenset({"group", "province"}),
    Role.CLERK: frozenset({"store"}),
}

# Every scope an API key may carry, with what it lets the key do: the one list that key
# creation checks against, that `perkflow apikey create --help` shows and that the scope test
# walks (each scope opens at least one route).
SCOPES: dict[str, str] = {
    "subscribers:read": "list, search and read subscribers and their status history",
    "subscribers:status": "change a subscriber's status (binding follows)",
    "h5:link": "issue one-click H5 links (the channel that delivers them)",
    "grants:read": "read grants",
    "grants:write": "issue grants (and read them)",
    "catalog:read": "read partners, benefits and card-code lots",
    "optouts:write": "read and write contact lists (opt-outs, complaints)",
    "coupons:read": "read coupon batches and their stock",
    "coupons:claim": "claim coupons and draw red envelopes for subscribers; read their wallet",
    "coupons:redeem": "redeem coupons at a partner merchant (partner keys)",
    "members:read": "read tiers, members and the points liability",
    "members:write": "send prepayments, plan changes and bills (and read members)",
    "campaigns:read": "read campaigns, their progress and evaluation",
    "events:write": "send trigger events",
    "responses:write": "send campaign responses",
}
API_SCOPES: frozenset[str] = frozenset(SCOPES)
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
    # A partner key's partner code: such a key sees only that partner's benefits and grants.
    owner_ref: str | None = None
    # "partner" or "channel" for an API key: a partner key without a partner code sees nothing.
    owner_kind: str | None = None

    def can(self, perm: Perm) -> bool:
        """Whether the actor holds a permission (system holds all)."""
        if self.kind == "system":
            return True
        return self.role is not None and perm in ROLE_PERMS[self.role]

    def has_scope(self, scope: str) -> bool:
        """Whether an API key carries a scope."""
        return self.kind == "system" or scope in self.api_scopes


def subscriber_actor(subscriber_id: int, *, ip: str = "-") -> Actor:
    """The acting identity of a subscriber signed in to their own H5 pages."""
    return Actor(
        kind="subscriber", id=str(subscriber_id), name=f"subscriber {subscriber_id}", ip=ip
    )


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
