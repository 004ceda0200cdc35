"""Use cases of the subscriber master: register, look up, change status, count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from perkflow.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault, mask_phone
from perkflow.kit.ids import token
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import repository as repo
from perkflow.subscribers.models import StatusEvent, Subscriber
from perkflow.subscribers.rules import Status, normalize_phone, transition_problem

if TYPE_CHECKING:
    from perkflow.mart import Mart


@dataclass(frozen=True)
class SubscriberView:
    """A subscriber as a person may see them: the phone masked unless revealed."""

    id: int
    phone: str
    province_code: str
    city_code: str
    plan_fee_fen: int
    status: Status
    joined_on: date
    status_changed_at: Any


def _phone_context(subscriber_id: int) -> bytes:
    # Binding the ciphertext to its row stops a copied blob from decrypting as another subscriber.
    return f"subscriber:{subscriber_id}".encode()


def encrypt_phone(vault: Vault, *, subscriber_id: int, phone: str) -> bytes:
    """The at-rest form of a subscriber's phone number."""
    return vault.pii.encrypt(phone, _phone_context(subscriber_id))


def phone_of(vault: Vault, sub: Subscriber) -> str:
    """The clear phone number; callers decide whether a person may see it."""
    return vault.pii.decrypt(sub.phone_enc, _phone_context(sub.id))


def _view(vault: Vault, sub: Subscriber, *, reveal: bool) -> SubscriberView:
    phone = phone_of(vault, sub)
    return SubscriberView(
        id=sub.id,
        phone=phone if reveal else mask_phone(phone),
        province_code=sub.province_code,
        city_code=sub.city_code,
        plan_fee_fen=sub.plan_fee_fen,
        status=Status(sub.status),
        joined_on=sub.joined_on,
        status_changed_at=sub.status_changed_at,
    )


def _require_region(actor: Actor, sub: Subscriber) -> None:
    province = org.visible_province(actor)
    if province is not None and sub.province_code != province:
        raise Forbidden("this subscriber is outside your region")


def _get_in_scope(session: Session, *, actor: Actor, subscriber_id: int) -> Subscriber:
    """A subscriber, if it exists (404) and lies in the actor's region (403)."""
    sub = repo.get(session, subscriber_id)
    if sub is None:
        raise NotFound(f"no subscriber {subscriber_id}", field="subscriber_id")
    _require_region(actor, sub)
    return sub


def hold_active_subscriber(session: Session, *, actor: Actor, subscriber_id: int) -> Subscriber:
    """An active subscriber in the actor's region, share-locked until commit (404/403/409)."""
    sub = repo.get_for_share(session, subscriber_id)
    if sub is None:
        raise NotFound(f"no subscriber {subscriber_id}", field="subscriber_id")
    province = org.visible_province(actor)
    if province is not None and sub.province_code != province:
        raise Forbidden("this subscriber is outside your region")
    if sub.status != Status.ACTIVE:
        raise Conflict(f"subscriber is {sub.status}", field="subscriber_id")
    return sub


def hold_subscribers(
    session: Session, *, subscriber_ids: Sequence[int]
) -> dict[int, tuple[str, str]]:
    """(province, status) of each known subscriber, share-locked until commit (bulk claims)."""
    return repo.hold_many(session, sorted(set(subscriber_ids)))


def require_in_scope(session: Session, *, actor: Actor, subscriber_id: int) -> None:
    """404 unless the subscriber exists, 403 unless the actor's region covers them."""
    _get_in_scope(session, actor=actor, subscriber_id=subscriber_id)


def subscriber_statuses(session: Session, *, subscriber_ids: Sequence[int]) -> dict[int, Status]:
    """The ledger status of each known subscriber among the ids (bulk, for reconciliation)."""
    found: dict[int, Status] = {}
    ids = list(subscriber_ids)
    for start in range(0, len(ids), 1000):  # bounded IN lists
        found.update(
            {k: Status(v) for k, v in repo.statuses(session, ids[start : start + 1000]).items()}
        )
    return found


def register_subscribers(session: Session, *, vault: Vault, rows: Sequence[dict[str, Any]]) -> int:
    """Bulk-insert subscribers given with clear phones; used by synth and imports."""
    at = clock.now()
    records = []
    for row in rows:
        phone = row["phone"]
        records.append(
            {
                "id": row["id"],
                "phone_enc": encrypt_phone(vault, subscriber_id=row["id"], phone=phone),
                "phone_hash": vault.lookup.digest(phone),
                "province_code": row["province_code"],
                "city_code": row["city_code"],
                "plan_fee_fen": row["plan_fee_fen"],
                "status": row["status"],
                "joined_on": row["joined_on"],
                "status_changed_at": at,
            }
        )
    repo.insert_many(session, records)
    return len(records)


def remove_all_subscribers(session: Session) -> int:
    """Delete every subscriber and status event (replacing a synthetic operator)."""
    return repo.delete_all(session)


def count_subscribers(session: Session) -> int:
    """How many subscribers the ledger holds."""
    return repo.count(session)


def get_subscriber(
    session: Session, *, actor: Actor, vault: Vault, subscriber_id: int, reveal: bool = False
) -> SubscriberView:
    """One subscriber within the actor's scope; revealing the phone is audited."""
    org.require_perm_or_scope(actor, perm=Perm.SUBSCRIBERS_READ, scope="subscribers:read")
    sub = _get_in_scope(session, actor=actor, subscriber_id=subscriber_id)
    if reveal:
        org.require(actor, Perm.PHONE_REVEAL)
        org.record_audit(
            session,
            actor=actor,
            action="subscriber.reveal_phone",
            target_type="subscriber",
            target_id=str(sub.id),
        )
    return _view(vault, sub, reveal=reveal)


def find_by_phone(session: Session, *, vault: Vault, phone: str) -> Subscriber | None:
    """The subscriber with this number, by keyed hash; None if unknown or malformed."""
    normalized = normalize_phone(phone)
    if normalized is None:
        return None
    return repo.get_by_phone_hash(session, vault.lookup.digest(normalized))


def list_subscribers(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    province: str | None = None,
    status: Status | None = None,
    phone: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[SubscriberView], int]:
    """A page of subscribers in the actor's scope, phones masked."""
    org.require_perm_or_scope(actor, perm=Perm.SUBSCRIBERS_READ, scope="subscribers:read")
    limited = org.visible_province(actor)
    if limited is not None:
        if province not in (None, limited):
            raise Forbidden(f"province {province} is outside your region")
        province = limited
    phone_hash = None
    if phone:
        normalized = normalize_phone(phone)
        if normalized is None:
            raise ValidationFailed("phone must be an 11-digit mobile number", field="phone")
        phone_hash = vault.lookup.digest(normalized)
    rows, total = repo.page(
        session,
        province=province,
        status=status.value if status else None,
        phone_hash=phone_hash,
        offset=offset,
        limit=limit,
    )
    return [_view(vault, s, reveal=False) for s in rows], total


def change_status(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    status: Status,
    reason: str,
    source: str,
) -> StatusEvent:
    """Move a subscriber to a new status and keep the change as an event."""
    if actor.kind in ("staff", "api_key"):
        org.require_perm_or_scope(actor, perm=Perm.SUBSCRIBERS_STATUS, scope="subscribers:status")
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    sub = _get_in_scope(session, actor=actor, subscriber_id=subscriber_id)
    current = Status(sub.status)
    problem = transition_problem(current, status)
    if problem:
        raise Conflict(problem, field="status")
    at = clock.now()
    # Compare-and-set: two concurrent changes cannot both start from the same old status.
    if not repo.compare_and_set_status(
        session, subscriber_id=sub.id, expected=current.value, target=status.value, at=at
    ):
        raise Conflict("status changed meanwhile; reload and try again", field="status")
    event = StatusEvent(
        subscriber_id=sub.id,
        from_status=current.value,
        to_status=status.value,
        reason=reason.strip(),
        source=source,
        actor_name=actor.name,
        at=at,
    )
    session.add(event)
    session.refresh(sub)
    org.record_audit(
        session,
        actor=actor,
        action="subscriber.change_status",
        target_type="subscriber",
        target_id=str(sub.id),
        details={
            "from": current.value,
            "to": status.value,
            "reason": reason.strip(),
            "source": source,
        },
    )
    return event


def status_history(session: Session, *, actor: Actor, subscriber_id: int) -> Sequence[StatusEvent]:
    """Every status change of one subscriber, oldest first."""
    org.require_perm_or_scope(actor, perm=Perm.SUBSCRIBERS_READ, scope="subscribers:read")
    _get_in_scope(session, actor=actor, subscriber_id=subscriber_id)
    return repo.events(session, subscriber_id)


def counts(
    session: Session, *, actor: Actor, by: str = "province", province: str | None = None
) -> list[tuple[str, str, int]]:
    """(province or city, status, count) within the actor's scope, for dashboards."""
    org.require(actor, Perm.DASHBOARD)
    limited = org.visible_province(actor)
    if limited is not None and province not in (None, limited):
        raise Forbidden(f"province {province} is outside your region")
    return repo.counts_by(session, group=by, province=province or limited)


_LINK_SALT = "perkflow.h5-login"


class _ClockSigner(TimestampSigner):
    """Timestamps from perkflow's clock, so link expiry follows the same time as everything else."""

    def get_timestamp(self) -> int:
        return int(clock.now().timestamp())


def _link_serializer(vault: Vault) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(vault.link_key, salt=_LINK_SALT, signer=_ClockSigner)


# The default of `Settings.h5_link_max_age_s`, for callers without settings at hand.
H5_LINK_MAX_AGE_S = 15 * 60


def issue_login_token(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    phone: str,
    max_age_s: int = H5_LINK_MAX_AGE_S,
) -> tuple[int, str]:
    """A signed one-click sign-in token for a subscriber's H5 pages, good for one use."""
    # A link signs in as the subscriber and shows their coupon codes: it is a channel's
    # capability (a key with h5:link) or the operator's own (the CLI), never a console user's.
    if actor.kind == "staff":
        raise Forbidden("one-click links are issued by a channel's key (h5:link), not by staff")
    if not actor.has_scope("h5:link"):
        raise Forbidden("this key lacks the h5:link scope")
    if normalize_phone(phone) is None:
        raise ValidationFailed("phone must be an 11-digit mobile number", field="phone")
    sub = find_by_phone(session, vault=vault, phone=phone)
    if sub is None:
        raise NotFound("no subscriber with this phone number", field="phone")
    _require_region(actor, sub)
    if sub.status == Status.CHURNED:
        raise Conflict("a churned subscriber cannot sign in", field="phone")
    now = clock.now()
    nonce = token(16)
    repo.prune_link_nonces(session, before=now)
    # The link works while this row exists; using it deletes the row (`redeem_login_token`).
    repo.add_link_nonce(
        session, nonce=nonce, subscriber_id=sub.id, expires_at=now + timedelta(seconds=max_age_s)
    )
    signed = _link_serializer(vault).dumps({"sid": sub.id, "n": nonce})
    org.record_audit(
        session,
        actor=actor,
        action="subscriber.issue_login_link",
        target_type="subscriber",
        target_id=str(sub.id),
    )
    return sub.id, signed


def redeem_login_token(session: Session, *, vault: Vault, signed: str, max_age_s: int) -> int:
    """The subscriber a one-click token signs in, if genuine, fresh and not used before."""
    try:
        data = _link_serializer(vault).loads(signed, max_age=max_age_s)
    except SignatureExpired as exc:
        raise Unauthenticated(
            "this sign-in link has expired; ask for a new one", field="token"
        ) from exc
    except BadSignature as exc:
        raise Unauthenticated("this sign-in link is not valid", field="token") from exc
    nonce = data.get("n") if isinstance(data, dict) else None
    if not isinstance(nonce, str):
        raise Unauthenticated("this sign-in link is not valid", field="token")
    sub = repo.get(session, int(data["sid"]))
    if sub is None or sub.status == Status.CHURNED:
        raise Unauthenticated("this sign-in link is no longer valid", field="token")
    # One atomic DELETE: of two uses of a link, even at the same moment, only one signs in.
    if not repo.consume_link_nonce(session, nonce=nonce, subscriber_id=sub.id, now=clock.now()):
        raise Unauthenticated(
            "this sign-in link was already used; ask for a new one", field="token"
        )
    return sub.id


def may_use_h5(session: Session, *, subscriber_id: int) -> bool:
    """Whether a signed-in subscriber's H5 session still stands (churn ends it)."""
    # Suspended subscribers may still look; claims refuse them (`hold_active_subscriber`).
    status = repo.statuses(session, [subscriber_id]).get(subscriber_id)
    return status is not None and status != Status.CHURNED


def subscriber_home(session: Session, *, vault: Vault, subscriber_id: int) -> SubscriberView:
    """What a signed-in subscriber sees of their own account (phone masked on screen)."""
    sub = repo.get(session, subscriber_id)
    if sub is None:
        raise NotFound("account not found", field="subscriber_id")
    return _view(vault, sub, reveal=False)


# Ids per lookup: far below SQLite's and PostgreSQL's bound-parameter limits.
LOOKUP_BATCH = 5_000


def provinces_of(session: Session, *, subscriber_ids: Sequence[int]) -> dict[int, str]:
    """The province of each known subscriber among the ids (unknown ids are left out)."""
    ids = list(subscriber_ids)
    found: dict[int, str] = {}
    for start in range(0, len(ids), LOOKUP_BATCH):
        for sid, _enc, province in repo.phones_and_provinces(
            session, ids[start : start + LOOKUP_BATCH]
        ):
            found[sid] = province
    return found


def phones_for(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    subscriber_ids: Sequence[int],
    reveal: bool = False,
    purpose: str = "",
) -> dict[int, str]:
    """Phones of the subscribers in the actor's region, masked unless revealed (one audit entry)."""
    if actor.kind == "staff":
        org.require(actor, Perm.SUBSCRIBERS_READ)
    if reveal:
        org.require(actor, Perm.PHONE_REVEAL)
    province = org.visible_province(actor)
    ids = list(subscriber_ids)
    found: dict[int, str] = {}
    for start in range(0, len(ids), LOOKUP_BATCH):
        for sid, enc, sub_province in repo.phones_and_provinces(
            session, ids[start : start + LOOKUP_BATCH]
        ):
            if province is not None and sub_province != province:
                continue  # outside the actor's region: never shown, even masked
            phone = vault.pii.decrypt(enc, _phone_context(sid))
            found[sid] = phone if reveal else mask_phone(phone)
    if reveal and found:
        org.record_audit(
            session,
            actor=actor,
            action="subscriber.reveal_phones",
            target_type="subscriber",
            target_id=f"{min(found)}..{max(found)}",
            details={"count": len(found), "purpose": purpose},
        )
    return found


@dataclass(frozen=True)
class PlanFacts:
    """What membership tiers are derived from in the subscriber master."""

    subscriber_id: int
    plan_fee_fen: int
    joined_on: date
    status: Status
    province_code: str


def plan_facts(session: Session, *, subscriber_ids: Sequence[int]) -> dict[int, PlanFacts]:
    """Plan fee, join date, status and province of each known subscriber among the ids (bulk)."""
    ids = list(subscriber_ids)
    found: dict[int, PlanFacts] = {}
    for start in range(0, len(ids), LOOKUP_BATCH):
        for sid, fee, joined, status, province in repo.plan_facts(
            session, ids[start : start + LOOKUP_BATCH]
        ):
            found[sid] = PlanFacts(sid, fee, joined, Status(status), province)
    return found


def change_plan_fee(
    session: Session, *, actor: Actor, subscriber_id: int, plan_fee_fen: int, reason: str
) -> int:
    """Move a subscriber to a plan with another monthly fee; returns the previous fee; audited."""
    if actor.kind == "staff":
        org.require(actor, Perm.SUBSCRIBERS_STATUS)
    if not 0 <= plan_fee_fen <= 10_000_000:
        raise ValidationFailed("plan fee must be between 0 and 100,000 yuan", field="plan_fee_fen")
    _get_in_scope(session, actor=actor, subscriber_id=subscriber_id)
    before = repo.set_plan_fee(session, subscriber_id=subscriber_id, plan_fee_fen=plan_fee_fen)
    if before is None:
        raise NotFound(f"no subscriber {subscriber_id}", field="subscriber_id")
    org.record_audit(
        session,
        actor=actor,
        action="subscriber.plan",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"from_fen": before, "to_fen": plan_fee_fen, "reason": reason.strip()[:255]},
    )
    return before


def ids_in_province(*, province: str) -> Any:
    """A subquery of one province's subscriber ids, for other capabilities' region-scoped counts."""
    from sqlalchemy import select

    return select(Subscriber.id).where(Subscriber.province_code == province)


# --- the mart's copy of the status ----------------------------------------------------------------

MART_PROFILE = "subscriber_profile"
# The last status event the mart's profile reflects, kept in the profile file's own metadata: a
# profile rewritten from scratch (synth, an operator load) starts over from the first event.
STATUS_MARK = b"perkflow.status_event_id"
# Events are re-read this far behind the mark: a transaction that took an id before a later one
# but committed after it would otherwise be skipped. Re-applying the ledger's status is harmless.
STATUS_LOOKBACK = 1_000


def export_statuses(session: Session, *, mart: Mart) -> int:
    """Copy the ledger's status changes since the last export to the mart's profile; rows moved."""
    # The one sync path ledger → mart for `status` (the ledger is the truth). It runs after the
    # change committed (the mart is no part of the transaction) and before every job that reads
    # the profile's status: tier evaluation, extraction. Two runs at once both write what the
    # ledger says; the later mark may be the lower one, so the next run reads a little more.
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not mart.has(MART_PROFILE):
        return 0
    path = mart.path(MART_PROFILE)
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    mark = int(meta.get(STATUS_MARK, b"0"))
    changed, last = repo.statuses_changed_after(session, after=max(0, mark - STATUS_LOOKBACK))
    if last == mark and not changed:
        return 0
    column = table["status"]
    old = column.cast(pa.string())
    ids = pa.array(sorted(changed), type=pa.int64())
    new = pa.array([changed[i] for i in ids.to_pylist()], type=pa.string())
    at = pc.index_in(table["subscriber_id"].cast(pa.int64()), value_set=ids)
    status = pc.if_else(pc.is_valid(at), pc.take(new, at), old)
    moved = int(pc.sum(pc.not_equal(status, old).fill_null(False).cast(pa.int64())).as_py() or 0)
    meta[STATUS_MARK] = str(last).encode()
    index = table.schema.get_field_index("status")
    field = table.schema.field(index)
    out = table.set_column(index, field, status.cast(field.type)).replace_schema_metadata(meta)
    mart.write(MART_PROFILE, out)
    return moved
