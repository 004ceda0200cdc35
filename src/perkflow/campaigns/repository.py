"""Queries over campaigns, their contacts and responses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow.campaigns.models import (
    Campaign,
    CampaignContact,
    CampaignResponse,
    CampaignWave,
    SubscriberEvent,
)
from perkflow.campaigns.rules import (
    EVALUATED,
    NOT_ASSIGNED_REASONS,
    TREATED,
    Cell,
    CellCount,
    ContactStatus,
    ResponseTime,
)

_CHUNK = 5_000


def cell_counts(
    session: Session, *, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[CellCount]:
    """Per (cell, variant, province): assigned contacts, distinct responders, revenue, spenders.

    Intent to treat: every assigned row counts, suppressed at send time or not; beside them the
    rows whose message went out (treated), for a treated-on-treated comparison.
    """
    per_contact = (
        select(
            CampaignResponse.contact_id.label("contact_id"),
            func.sum(CampaignResponse.value_fen).label("value"),
        )
        .where(CampaignResponse.campaign_id == campaign_id)
        .group_by(CampaignResponse.contact_id)
        .subquery()
    )
    c = CampaignContact
    treated = c.status.in_([s.value for s in TREATED])
    value = func.coalesce(per_contact.c.value, 0)
    stmt = (
        select(
            c.cell,
            c.variant,
            c.province_code,
            func.count(),
            func.count(per_contact.c.contact_id),
            func.coalesce(func.sum(per_contact.c.value), 0),
            func.sum(case((treated, 1), else_=0)),
            func.sum(case((treated & per_contact.c.contact_id.is_not(None), 1), else_=0)),
            func.sum(case((treated, value), else_=0)),
            # Per contact first (its responses summed), then counted and squared: what the
            # revenue interval reads (insights.stats.revenue).
            func.sum(case((value > 0, 1), else_=0)),
            func.sum(value * value),
            func.sum(case((treated & (value > 0), 1), else_=0)),
            func.sum(case((treated, value * value), else_=0)),
        )
        .outerjoin(per_contact, per_contact.c.contact_id == c.id)
        .where(
            c.campaign_id == campaign_id,
            or_(
                c.status != ContactStatus.SUPPRESSED.value,
                c.reason.is_(None),
                c.reason.not_in(sorted(NOT_ASSIGNED_REASONS)),
            ),
        )
        .group_by(c.cell, c.variant, c.province_code)
    )
    if wave_ids is not None:
        stmt = stmt.where(c.wave_id.in_(list(wave_ids)))
    return [
        CellCount(
            cell=cell,
            variant=variant,
            province_code=province,
            contacts=int(n),
            responders=int(r),
            revenue_fen=int(v),
            treated=int(tn or 0),
            treated_responders=int(tr or 0),
            treated_revenue_fen=int(tv or 0),
            spenders=int(sn or 0),
            revenue_sq_fen2=int(sq or 0),
            treated_spenders=int(tsn or 0),
            treated_revenue_sq_fen2=int(tsq or 0),
        )
        for cell, variant, province, n, r, v, tn, tr, tv, sn, sq, tsn, tsq in session.execute(stmt)
    ]


def first_responses(
    session: Session, *, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[ResponseTime]:
    """The first response of every responding contact, oldest first."""
    r = CampaignResponse
    stmt = (
        select(r.cell, r.variant, func.min(r.responded_at))
        .join(CampaignContact, CampaignContact.id == r.contact_id)
        .where(r.campaign_id == campaign_id)
        .group_by(r.contact_id, r.cell, r.variant)
        .order_by(func.min(r.responded_at))
    )
    if wave_ids is not None:
        stmt = stmt.where(CampaignContact.wave_id.in_(list(wave_ids)))
    return [
        ResponseTime(cell=cell, variant=variant, responded_at=at)
        for cell, variant, at in session.execute(stmt)
    ]


def insert_rows(session: Session, model: Any, rows: Iterable[dict[str, Any]]) -> int:
    """Bulk-insert plain rows through Core in chunks; returns how many."""
    n = 0
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _CHUNK:
            session.execute(insert(model), chunk)
            n += len(chunk)
            chunk = []
    if chunk:
        session.execute(insert(model), chunk)
        n += len(chunk)
    return n


def contact_id_of(session: Session, *, campaign_id: int, subscriber_id: int) -> int | None:
    """The contact id of one subscriber in one campaign (the unique pair's index)."""
    c = _CONTACTS.c
    found = session.connection().execute(
        select(c.id).where(c.campaign_id == campaign_id, c.subscriber_id == subscriber_id)
    )
    return found.scalar_one_or_none()


def contact_ids(session: Session, *, campaign_id: int) -> dict[int, int]:
    """subscriber id → contact id of every contact of a campaign."""
    stmt = select(CampaignContact.subscriber_id, CampaignContact.id).where(
        CampaignContact.campaign_id == campaign_id
    )
    return {int(s): int(i) for s, i in session.execute(stmt)}


# ---- writes and reads of runs (definition, waves, dispatch) ------------------------------------


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# The contacts table for Core statements on the dispatch hot path (no ORM bookkeeping per row).
_CONTACTS = cast(Table, CampaignContact.__table__)


def _insert(session: Session, model: Any) -> Any:
    """The dialect's INSERT … ON CONFLICT construct (PostgreSQL and SQLite spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def begin_write(session: Session) -> None:
    """Open the write transaction now on SQLite (BEGIN IMMEDIATE), so a claim is serialised."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not getattr(dbapi, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_fresh(session: Session, campaign_id: int) -> Campaign | None:
    # populate_existing: a CAS just ran as a Core UPDATE, so a loaded copy may be stale.
    return session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).execution_options(populate_existing=True)
    )


def move_campaign(
    session: Session,
    *,
    campaign_id: int,
    expected: str,
    target: str,
    at: datetime,
    version: int | None = None,
    **values: Any,
) -> bool:
    """Compare-and-set a campaign's status (and version when given); bumps the version."""
    stmt = update(Campaign).where(Campaign.id == campaign_id, Campaign.status == expected)
    if version is not None:
        stmt = stmt.where(Campaign.version == version)
    result = session.execute(
        stmt.values(
            status=target, updated_at=at, version=Campaign.version + 1, **values
        ).execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def campaigns_page(
    session: Session, *, province: str | None, status: str | None, offset: int, limit: int
) -> tuple[Sequence[Campaign], int]:
    stmt = select(Campaign)
    if province is not None:
        stmt = stmt.where(Campaign.province_code == province)
    if status is not None:
        stmt = stmt.where(Campaign.status == status)
    total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = session.scalars(stmt.order_by(Campaign.id.desc()).offset(offset).limit(limit)).all()
    return rows, total


def running_triggers(session: Session) -> Sequence[Campaign]:
    return session.scalars(
        select(Campaign)
        .where(Campaign.status == "running", Campaign.kind == "trigger")
        .order_by(Campaign.id)
    ).all()


def waves_of(session: Session, campaign_id: int) -> Sequence[CampaignWave]:
    return session.scalars(
        select(CampaignWave)
        .where(CampaignWave.campaign_id == campaign_id)
        .order_by(CampaignWave.id)
        .execution_options(populate_existing=True)
    ).all()


def wave_of_kind(session: Session, campaign_id: int, kind: str) -> CampaignWave | None:
    return session.scalar(
        select(CampaignWave)
        .where(CampaignWave.campaign_id == campaign_id, CampaignWave.kind == kind)
        .execution_options(populate_existing=True)
    )


def waves_in(
    session: Session, status: str, *, campaign_id: int | None = None
) -> Sequence[CampaignWave]:
    stmt = select(CampaignWave).where(CampaignWave.status == status)
    if campaign_id is not None:
        stmt = stmt.where(CampaignWave.campaign_id == campaign_id)
    return session.scalars(stmt.order_by(CampaignWave.id)).all()


def move_wave(session: Session, *, wave_id: int, expected: str, target: str, **values: Any) -> bool:
    result = session.execute(
        update(CampaignWave)
        .where(CampaignWave.id == wave_id, CampaignWave.status == expected)
        .values(status=target, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def insert_contacts_ignore(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert contact rows; a subscriber already in the campaign keeps their row (resumable)."""
    if not rows:
        return 0
    # RETURNING names only the rows inserted (rowcount is not reliable for ON CONFLICT on psycopg).
    # One cached statement run over the rows (insertmanyvalues), not a fresh multi-row VALUES
    # statement compiled per chunk.
    inserted = session.connection().execute(
        _insert(session, CampaignContact.__table__)
        .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
        .returning(CampaignContact.__table__.c.id),
        list(rows),
    )
    return len(inserted.all())


def count_by_status(session: Session, *, wave_id: int) -> dict[str, int]:
    rows = session.execute(
        select(CampaignContact.status, func.count())
        .where(CampaignContact.wave_id == wave_id)
        .group_by(CampaignContact.status)
    )
    return {str(s): int(n) for s, n in rows}


def sent_by_channel(session: Session, *, wave_id: int) -> dict[str, int]:
    rows = session.execute(
        select(CampaignContact.channel, func.count())
        .where(
            CampaignContact.wave_id == wave_id,
            CampaignContact.status.in_([ContactStatus.SENT.value, ContactStatus.DELIVERED.value]),
        )
        .group_by(CampaignContact.channel)
    )
    return {str(c): int(n) for c, n in rows}


def reasons_of(session: Session, *, wave_id: int) -> dict[str, int]:
    rows = session.execute(
        select(CampaignContact.reason, func.count())
        .where(
            CampaignContact.wave_id == wave_id,
            CampaignContact.status == ContactStatus.SUPPRESSED.value,
        )
        .group_by(CampaignContact.reason)
    )
    return {str(r): int(n) for r, n in rows}


def recent_failures(session: Session, *, wave_id: int, limit: int) -> Sequence[CampaignContact]:
    return session.scalars(
        select(CampaignContact)
        .where(
            CampaignContact.wave_id == wave_id,
            CampaignContact.status == ContactStatus.FAILED.value,
        )
        .order_by(CampaignContact.id.desc())
        .limit(limit)
    ).all()


def has_open(session: Session, *, wave_id: int) -> bool:
    """Whether a contact of the wave is still queued or sending."""
    # One index probe per status, not a count: the worker asks every round, and counting the
    # open rows of a 1M wave each round made the loop quadratic.
    c = _CONTACTS.c
    for status in (ContactStatus.SENDING.value, ContactStatus.QUEUED.value):
        stmt = select(c.id).where(c.wave_id == wave_id, c.status == status).limit(1)
        if session.connection().execute(stmt).first() is not None:
            return True
    return False


def count_taken_up(session: Session, *, campaign_id: int) -> int:
    """Target contacts that responded (took the offer up): what the budget has paid for."""
    return int(
        session.scalar(
            select(func.count(func.distinct(CampaignResponse.contact_id))).where(
                CampaignResponse.campaign_id == campaign_id,
                CampaignResponse.cell == Cell.TARGET.value,
            )
        )
        or 0
    )


def count_contacted(session: Session, *, campaign_id: int) -> int:
    """Target contacts a message went (or is going) out to: what caps count."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(CampaignContact)
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.status.in_(
                    [
                        ContactStatus.SENDING.value,
                        ContactStatus.SENT.value,
                        ContactStatus.DELIVERED.value,
                    ]
                ),
            )
        )
        or 0
    )


@dataclass(frozen=True, slots=True)
class DueContact:
    """What the claim step needs to decide about a due contact (no personalisation fields)."""

    id: int
    wave_id: int
    subscriber_id: int
    channel: str
    status: str
    attempts: int
    province_code: str | None


@dataclass(frozen=True, slots=True)
class LeasedContact:
    """A contact this worker now holds: `attempts` counts the attempt just leased."""

    id: int
    campaign_id: int
    wave_id: int
    subscriber_id: int
    channel: str
    variant: str | None
    attempts: int
    fields: dict[str, Any] | None


def _due(now: datetime) -> Any:
    """Queued and due, or sending under a lease that ran out."""
    c = _CONTACTS.c
    return or_(
        and_(
            c.status == ContactStatus.QUEUED.value,
            or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        ),
        and_(c.status == ContactStatus.SENDING.value, c.lease_until < now),
    )


def due_contacts(
    session: Session, *, wave_ids: Sequence[int], now: datetime, limit: int, skip_locked: bool
) -> list[DueContact]:
    """Queued contacts due now and sending ones whose lease ran out, in id order."""
    # At most `limit` of each status per wave: a wave held back by its throttle does not hide
    # the due contacts of the others.
    c = _CONTACTS.c
    cols = (c.id, c.wave_id, c.subscriber_id, c.channel, c.status, c.attempts, c.province_code)
    conn = session.connection()
    found: list[DueContact] = []
    for wave_id in wave_ids:
        # One (wave, status) pair a query, so each walks ix_…_wave_id_status_id in id order and
        # stops at the limit; the OR over statuses (and IN over waves) made SQLite read and sort
        # every row of the wave per batch, quadratic over a 1M list.
        expired = select(*cols).where(
            c.wave_id == wave_id,
            c.status == ContactStatus.SENDING.value,
            c.lease_until < now,
        )
        queued = select(*cols).where(
            c.wave_id == wave_id,
            c.status == ContactStatus.QUEUED.value,
            or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        )
        for stmt in (expired, queued):
            stmt = stmt.order_by(c.id).limit(limit)
            if skip_locked:
                # Two workers on PostgreSQL take disjoint batches instead of queueing on the
                # same rows.
                stmt = stmt.with_for_update(skip_locked=True)
            found.extend(DueContact(*row) for row in conn.execute(stmt))
    found.sort(key=lambda d: d.id)
    return found


def lease_contacts(
    session: Session, *, contact_ids: Sequence[int], now: datetime, until: datetime
) -> list[LeasedContact]:
    """Take the contacts that are still due for sending, in one statement; those taken, by id."""
    if not contact_ids:
        return []
    c = _CONTACTS.c
    # The compare-and-set is the due condition itself: a contact another worker leased (or
    # settled into a later retry) since it was read is not due any more and is left alone.
    stmt = (
        update(_CONTACTS)
        .where(c.id.in_(list(contact_ids)), _due(now))
        .values(status=ContactStatus.SENDING.value, lease_until=until, attempts=c.attempts + 1)
        .returning(
            c.id,
            c.campaign_id,
            c.wave_id,
            c.subscriber_id,
            c.channel,
            c.variant,
            c.attempts,
            c.fields,
        )
    )
    leased = [LeasedContact(*row) for row in session.connection().execute(stmt)]
    leased.sort(key=lambda x: x.id)
    return leased


def _row_id() -> Any:
    return bindparam("row_id", type_=_CONTACTS.c.id.type)


# Prebuilt for executemany: one statement, one parameter set per contact.
_SUPPRESS = (
    update(_CONTACTS)
    .where(_CONTACTS.c.id == _row_id(), _CONTACTS.c.status == bindparam("expected"))
    .values(
        status=ContactStatus.SUPPRESSED.value,
        reason=bindparam("v_reason", type_=_CONTACTS.c.reason.type),
        lease_until=None,
        # The moment it would have gone out: an assigned target stays in the evaluation (intent
        # to treat) and its responses are attributed from then on, as a held control's are.
        contacted_at=func.coalesce(
            _CONTACTS.c.contacted_at, bindparam("v_at", type_=_CONTACTS.c.contacted_at.type)
        ),
    )
)
_DEFER = (
    update(_CONTACTS)
    .where(_CONTACTS.c.id == _row_id(), _CONTACTS.c.status == bindparam("expected"))
    .values(
        status=ContactStatus.QUEUED.value,
        next_attempt_at=bindparam("v_next", type_=_CONTACTS.c.next_attempt_at.type),
        lease_until=None,
    )
)


def suppress_contacts(
    session: Session, *, rows: Sequence[tuple[int, str, str]], at: datetime
) -> int:
    """Suppress contacts (id, status seen, reason) still in the status seen; how many."""
    if not rows:
        return 0
    params = [{"row_id": i, "expected": st, "v_reason": r, "v_at": at} for i, st, r in rows]
    return _rowcount(session.connection().execute(_SUPPRESS, params))


def defer_contacts(session: Session, *, rows: Sequence[tuple[int, str, datetime]]) -> int:
    """Queue contacts (id, status seen, when) again for later, without using an attempt."""
    if not rows:
        return 0
    params = [{"row_id": i, "expected": st, "v_next": at} for i, st, at in rows]
    return _rowcount(session.connection().execute(_DEFER, params))


@lru_cache(maxsize=32)
def _settle_stmt(target: str, columns: tuple[str, ...]) -> Any:
    c = _CONTACTS.c
    return (
        update(_CONTACTS)
        .where(
            c.id == _row_id(),
            c.status == ContactStatus.SENDING.value,
            c.attempts == bindparam("held_attempts", type_=c.attempts.type),
        )
        .values(
            status=target,
            lease_until=None,
            **{k: bindparam(f"v_{k}", type_=c[k].type) for k in columns},
        )
    )


def settle_contacts(session: Session, *, target: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Record outcomes of attempts this worker holds, one statement over the rows; how many."""
    # Each row: `contact_id`, `attempts` (the attempt held) and the same columns to set. A contact
    # whose lease was lost (status or attempts moved on) is left alone.
    if not rows:
        return 0
    columns = tuple(sorted(k for k in rows[0] if k not in ("contact_id", "attempts")))
    params = [
        {
            "row_id": r["contact_id"],
            "held_attempts": r["attempts"],
            **{f"v_{k}": r[k] for k in columns},
        }
        for r in rows
    ]
    return _rowcount(session.connection().execute(_settle_stmt(target, columns), params))


def suppress_queued(session: Session, *, campaign_id: int, reason: str, at: datetime) -> int:
    c = CampaignContact
    result = session.execute(
        update(c)
        .where(c.campaign_id == campaign_id, c.status == ContactStatus.QUEUED.value)
        .values(
            status=ContactStatus.SUPPRESSED.value,
            reason=reason,
            contacted_at=func.coalesce(c.contacted_at, at),
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def apply_receipt(
    session: Session, *, message_ref: str, delivered: bool, error: str | None, at: datetime
) -> int:
    """A delivery report: a sent contact becomes delivered or failed (once)."""
    c = CampaignContact
    values: dict[str, Any] = (
        {"status": ContactStatus.DELIVERED.value, "delivered_at": at}
        if delivered
        else {"status": ContactStatus.FAILED.value, "error": (error or "undelivered")[:255]}
    )
    result = session.execute(
        update(c)
        .where(c.message_ref == message_ref, c.status == ContactStatus.SENT.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def unreceipted(
    session: Session, *, channel: str, since: datetime, before: datetime, limit: int
) -> list[str]:
    """Message refs of contacts still `sent` on a channel, sent in [since, before), oldest first."""
    c = CampaignContact
    return list(
        session.scalars(
            select(c.message_ref)
            .where(
                c.channel == channel,
                c.status == ContactStatus.SENT.value,
                c.message_ref.is_not(None),
                c.contacted_at >= since,
                c.contacted_at < before,
            )
            .order_by(c.contacted_at, c.id)
            .limit(limit)
        )
    )


def contacts_of_subscriber(session: Session, *, subscriber_id: int) -> Sequence[CampaignContact]:
    return session.scalars(
        select(CampaignContact)
        .where(
            CampaignContact.subscriber_id == subscriber_id,
            CampaignContact.contacted_at.is_not(None),
            or_(
                CampaignContact.status.in_([s.value for s in EVALUATED]),
                # Assigned but dropped at send time: still in its cell (intent to treat).
                and_(
                    CampaignContact.status == ContactStatus.SUPPRESSED.value,
                    CampaignContact.reason.not_in(sorted(NOT_ASSIGNED_REASONS)),
                ),
            ),
        )
        .order_by(CampaignContact.contacted_at.desc(), CampaignContact.id.desc())
    ).all()


def recent_on_channel(
    session: Session, *, subscriber_id: int, channel: str, since: datetime
) -> int:
    """This subscriber's contacts on a channel since a time, and the ones about to go out."""
    c = CampaignContact
    return int(
        session.scalar(
            select(func.count())
            .select_from(c)
            .where(
                c.subscriber_id == subscriber_id,
                c.channel == channel,
                or_(
                    c.status.in_([ContactStatus.QUEUED.value, ContactStatus.SENDING.value]),
                    and_(
                        c.status.in_([ContactStatus.SENT.value, ContactStatus.DELIVERED.value]),
                        c.contacted_at >= since,
                    ),
                ),
            )
        )
        or 0
    )


def next_due_at(session: Session, *, wave_ids: Sequence[int]) -> datetime | None:
    """When the next open contact of these waves is due: a queued one's time, a lease's end."""
    c = CampaignContact
    in_waves = c.wave_id.in_(list(wave_ids))
    now_due = session.scalar(
        select(c.id)
        .where(in_waves, c.status == ContactStatus.QUEUED.value, c.next_attempt_at.is_(None))
        .limit(1)
    )
    if now_due is not None:
        return datetime.min.replace(tzinfo=UTC)
    queued = session.scalar(
        select(func.min(c.next_attempt_at)).where(in_waves, c.status == ContactStatus.QUEUED.value)
    )
    leased = session.scalar(
        select(func.min(c.lease_until)).where(in_waves, c.status == ContactStatus.SENDING.value)
    )
    times = [t for t in (queued, leased) if t is not None]
    return min(times) if times else None


def totals(session: Session, *, wave_ids: Sequence[int]) -> tuple[int, int]:
    """(contacts, open contacts) of these waves."""
    c = CampaignContact
    rows = session.execute(
        select(c.status, func.count()).where(c.wave_id.in_(list(wave_ids))).group_by(c.status)
    )
    counts = {str(s): int(n) for s, n in rows}
    open_ = counts.get(ContactStatus.QUEUED.value, 0) + counts.get(ContactStatus.SENDING.value, 0)
    return sum(counts.values()), open_


def response_by_key(session: Session, key: str) -> CampaignResponse | None:
    return session.scalar(select(CampaignResponse).where(CampaignResponse.idempotency_key == key))


def event_by_key(session: Session, key: str) -> SubscriberEvent | None:
    return session.scalar(select(SubscriberEvent).where(SubscriberEvent.idempotency_key == key))


# ---- reads for insights (evaluation waves, mart history sync) -------------------------------
# Kept apart from the campaign engine's queries above; owned by the insights capability.


def wave_ids_of(session: Session, *, campaign_id: int, kind: str) -> list[int]:
    """Ids of a campaign's waves of one kind (test, rollout, ...)."""
    stmt = select(CampaignWave.id).where(
        CampaignWave.campaign_id == campaign_id, CampaignWave.kind == kind
    )
    return [int(i) for i in session.scalars(stmt)]


# (id, campaign, subscriber, channel, cell, contacted_at, target list) of one contact made.
HistoryContact = tuple[int, int, int, str, str, datetime, int | None]
# (id, campaign, subscriber, channel of the contact, kind, responded_at, value) of one response.
HistoryResponse = tuple[int, int, int, str, str, datetime, int]


def contacts_after(session: Session, *, after_id: int, limit: int) -> list[HistoryContact]:
    """(id, campaign, subscriber, channel, cell, contacted_at, target list) of contacts made.

    Contacts that happened (or were held back) only: a time is set and dispatch did not drop them.
    Keyset-paged by contact id.
    """
    c = CampaignContact
    stmt = (
        select(
            c.id,
            c.campaign_id,
            c.subscriber_id,
            c.channel,
            c.cell,
            c.contacted_at,
            Campaign.target_list_id,
        )
        .join(Campaign, Campaign.id == c.campaign_id)
        .where(
            c.id > after_id,
            c.contacted_at.is_not(None),
            c.status != ContactStatus.SUPPRESSED.value,
            # An outside source's unmatched ids are not our subscribers: the mart never sees them.
            c.import_source.is_(None),
        )
        .order_by(c.id)
        .limit(limit)
    )
    return [
        (int(i), int(cid), int(sid), ch, cell, at, tl)
        for i, cid, sid, ch, cell, at, tl in session.execute(stmt)
        if at is not None
    ]


def responses_after(session: Session, *, after_id: int, limit: int) -> list[HistoryResponse]:
    """Responses (id, campaign, subscriber, the contact's channel, kind, time, value) by id."""
    r = CampaignResponse
    stmt = (
        select(
            r.id,
            r.campaign_id,
            r.subscriber_id,
            CampaignContact.channel,
            r.kind,
            r.responded_at,
            r.value_fen,
        )
        .join(CampaignContact, CampaignContact.id == r.contact_id)
        .where(r.id > after_id, r.import_source.is_(None))
        .order_by(r.id)
        .limit(limit)
    )
    return [
        (int(i), int(cid), int(sid), ch, kind, at, int(v or 0))
        for i, cid, sid, ch, kind, at, v in session.execute(stmt)
    ]


def import_counts(
    session: Session, *, campaign_id: int
) -> tuple[int, int, datetime | None, datetime | None]:
    """(contacts, those matched to our subscribers, first and last contact) of a campaign."""
    c = CampaignContact
    row = session.execute(
        select(
            func.count(),
            func.count(c.id).filter(c.import_source.is_(None)),
            func.min(c.contacted_at),
            func.max(c.contacted_at),
        ).where(c.campaign_id == campaign_id)
    ).one()
    return int(row[0]), int(row[1]), row[2], row[3]


def response_totals(session: Session, *, campaign_id: int) -> tuple[int, int]:
    """(responses, revenue in fen) recorded for a campaign."""
    r = CampaignResponse
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(r.value_fen), 0)).where(
            r.campaign_id == campaign_id
        )
    ).one()
    return int(row[0]), int(row[1])


def offers_by_campaign(session: Session) -> dict[int, dict[str, Any]]:
    """campaign id → its offer (kind, category, cost)."""
    return {int(i): dict(o or {}) for i, o in session.execute(select(Campaign.id, Campaign.offer))}
