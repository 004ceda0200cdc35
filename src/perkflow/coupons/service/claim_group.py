"""Claims settled as a group: the one implementation of the claim rules (a lone claim is one).

`claim_group` settles a round of claims in the caller's transaction with a handful of set-based
statements: one attempt-count upsert, one read of keys already used, one share lock on the
subscribers, one counter upsert per batch, one stock decrement per shard, one multi-row coupon
INSERT, one audit insert. `claim_coupon` is a group of one (the H5 page, the CLI, the demo and
the claim gate's retries call it). Checks run in one order for every claim: the claimant, the
idempotency key, the batch's terms, the subscriber, the limits, the stock. Where a group of
several meets a case only a group of one settles exactly (a twin request with one of its keys
committed while the group took stock), it raises `RetryEach`, and the caller rolls back and
claims each request alone.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import Coupon
from perkflow.coupons.rules import (
    RATE_PER_DEVICE,
    RATE_PER_SUBSCRIBER,
    RATE_WINDOW_S,
    BatchStatus,
    CodeSource,
    CouponStatus,
    coupon_validity,
    period_keys,
    rate_window,
    slot_of,
)
from perkflow.errors import Conflict, Forbidden, NotFound, PerkflowError, TooManyRequests
from perkflow.kit import clock
from perkflow.kit.bounds import INT64_MAX
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import Actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

from .claims import (
    ClaimedCoupon,
    ClaimOutcome,
    ClaimTerms,
    LimitReached,
    NotClaimable,
    SoldOut,
    auto_code,
    note_sold_out,
    open_claim_terms,
    require_claimant,
)

ClaimResult = ClaimOutcome | PerkflowError


@dataclass(frozen=True)
class ClaimRequest:
    """One claim as an API call asked for it."""

    actor: Actor
    batch_id: int
    subscriber_id: int
    idempotency_key: str
    device_id: str | None
    zone: str
    channel: str = "api"

    @property
    def key(self) -> str:
        return f"{self.subscriber_id}:{self.idempotency_key}"

    @property
    def device(self) -> str | None:
        return self.device_id[:64] if self.device_id else None


class RetryEach(Exception):
    """The group met a case only a group of one settles exactly: roll back, claim each alone."""


def split_rounds(requests: Sequence[ClaimRequest]) -> list[list[int]]:
    """Indexes of the requests in rounds with no subscriber, device or key twice in one round.

    A repeat within one statement would be counted once, so it waits for the next round, as if
    it came later. A deferred request blocks its marks too, so later requests sharing any of
    them wait behind it: per subscriber, device and key, the order of arrival is kept.
    """
    rounds: list[list[int]] = []
    pending = list(range(len(requests)))
    while pending:
        seen: set[str] = set()
        now: list[int] = []
        later: list[int] = []
        for i in pending:
            r = requests[i]
            marks = {f"s:{r.subscriber_id}", f"k:{r.key}"}
            if r.device:
                marks.add(f"d:{r.device}")
            (later if marks & seen else now).append(i)
            seen |= marks
        rounds.append(now)
        pending = later
    return rounds


def claim_group(
    session: Session,
    *,
    vault: Vault,
    requests: Sequence[ClaimRequest],
    count_attempts: bool = True,
) -> list[ClaimResult]:
    """Claim one round of requests (see `split_rounds`) in the caller's transaction, in order.

    Each attempt is counted against the rate limits first unless the caller counted it already
    (`count_attempts=False`). Locks are taken table by table in one order (attempt counts,
    subscribers, claim counters, stock shards, coupons), each table's rows sorted, so two groups
    never wait on each other in a cycle; a round per transaction keeps it that way.
    """
    marks = [r.subscriber_id for r in requests]
    if len(set(marks)) != len(marks):
        raise ValueError("one round claims each subscriber once; use split_rounds")
    for r in requests:
        # The ledger's ids are 64-bit; a bulk statement would only find no such row, where the
        # value is in fact one the ledger cannot store (the caller's to refuse as such).
        if not all(-INT64_MAX - 1 <= v <= INT64_MAX for v in (r.subscriber_id, r.batch_id)):
            raise OverflowError("an id out of the ledger's 64-bit range")
    results: dict[int, ClaimResult] = {}
    _claim_round(session, vault, list(enumerate(requests)), results, count_attempts)
    return [results[i] for i in range(len(requests))]


def claim_coupon(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    batch_id: int,
    subscriber_id: int,
    idempotency_key: str,
    channel: str,
    device_id: str | None,
    zone: str,
) -> ClaimOutcome:
    """Claim one coupon into a subscriber's wallet: stock, limits and the key decide atomically.

    A group of one, the attempt counted by the caller (`admit_claim_attempt`); raises the
    claim's refusal.
    """
    request = ClaimRequest(
        actor=actor,
        batch_id=batch_id,
        subscriber_id=subscriber_id,
        idempotency_key=idempotency_key,
        device_id=device_id,
        zone=zone,
        channel=channel,
    )
    [result] = claim_group(session, vault=vault, requests=[request], count_attempts=False)
    if isinstance(result, PerkflowError):
        raise result
    return result


def _count_attempts(
    session: Session, items: list[tuple[int, ClaimRequest]], results: dict[int, ClaimResult]
) -> list[tuple[int, ClaimRequest]]:
    """Count every attempt (kept even when the claim is refused); the ones under the rate limit."""
    window = rate_window(clock.now().timestamp())
    limits: list[tuple[str, int]] = []
    for _, r in items:
        limits.append((f"s:{r.subscriber_id}", RATE_PER_SUBSCRIBER))
        if r.device:
            limits.append((f"d:{r.device}", RATE_PER_DEVICE))
    admitted = repo.take_rate_tokens(session, window_start=window, limits=limits)
    live, give_back = [], []
    for i, r in items:
        mine = [f"s:{r.subscriber_id}"] + ([f"d:{r.device}"] if r.device else [])
        if all(k in admitted for k in mine):
            live.append((i, r))
            continue
        # Refused by the rate limit: like a lone claim, it counts nothing at all.
        give_back += [k for k in mine if k in admitted]
        results[i] = TooManyRequests(
            f"too many attempts; try again in {RATE_WINDOW_S} seconds",
            field="device_id" if mine[0] in admitted else "subscriber_id",
            batch_id=r.batch_id,
        )
    repo.give_back_rate_tokens(session, window_start=window, keys=give_back)
    return live


def _replay(coupon: Coupon, r: ClaimRequest) -> ClaimResult:
    """The answer to a request whose key already claimed: that claim, or 409 if it was another."""
    if coupon.batch_id != r.batch_id or coupon.subscriber_id != r.subscriber_id:
        return Conflict("this idempotency key was used for another claim", field="idempotency_key")
    return ClaimOutcome(coupon=ClaimedCoupon.of(coupon), replayed=True)


def _replays(
    session: Session, items: list[tuple[int, ClaimRequest]], results: dict[int, ClaimResult]
) -> list[tuple[int, ClaimRequest]]:
    """Answer the requests whose key already claimed; the others."""
    if not items:
        return []
    twins = repo.coupons_by_keys(session, [r.key for _, r in items])
    rest = []
    for i, r in items:
        twin = twins.get(r.key)
        if twin is None:
            rest.append((i, r))
        else:
            results[i] = _replay(twin, r)
    return rest


def _claim_round(
    session: Session,
    vault: Vault,
    items: list[tuple[int, ClaimRequest]],
    results: dict[int, ClaimResult],
    count_attempts: bool,
) -> None:
    live = _count_attempts(session, items, results) if count_attempts else items
    claimants = []
    for i, r in live:
        try:
            require_claimant(r.actor, subscriber_id=r.subscriber_id)
        except PerkflowError as exc:
            results[i] = exc
        else:
            claimants.append((i, r))
    groups: dict[int, list[tuple[int, ClaimRequest]]] = defaultdict(list)
    for i, r in _replays(session, claimants, results):
        groups[r.batch_id].append((i, r))
    open_groups = []
    for batch_id, members in groups.items():
        try:
            open_groups.append((batch_id, open_claim_terms(session, batch_id=batch_id), members))
        except PerkflowError as exc:
            for i, _ in members:
                results[i] = exc
    found = subscribers.hold_subscribers(
        session, subscriber_ids=[r.subscriber_id for _, _, ms in open_groups for _, r in ms]
    )
    for batch_id, terms, members in open_groups:
        eligible = []
        for i, r in members:
            problem = _subscriber_problem(found.get(r.subscriber_id), r, terms.owner_region)
            if problem is None:
                eligible.append((i, r))
            else:
                results[i] = problem
        if eligible:
            _claim_in_batch(session, vault, batch_id, terms, eligible, results)


def _subscriber_problem(
    found: tuple[str, str] | None, r: ClaimRequest, owner_region: str
) -> PerkflowError | None:
    if found is None:
        return NotFound(f"no subscriber {r.subscriber_id}", field="subscriber_id")
    province, status = found
    if status != Status.ACTIVE:
        return Conflict(f"subscriber is {status}", field="subscriber_id")
    if owner_region != "CN" and province != owner_region:
        return Forbidden("this offer is for subscribers of another province", field="batch_id")
    return None


def _count_claims(
    session: Session,
    batch_id: int,
    terms: ClaimTerms,
    items: list[tuple[int, ClaimRequest]],
    results: dict[int, ClaimResult],
) -> tuple[list[tuple[int, ClaimRequest]], dict[int, list[tuple[int, str]]], list[int]]:
    """Count each claim against the subscriber's limits: the admitted, their rows, the refused."""
    wanted: dict[int, list[tuple[int, str]]] = {}
    for i, r in items:
        total, day = period_keys(clock.today(r.zone))
        wanted[i] = [(r.subscriber_id, total)]
        if terms.limit_per_day is not None:
            wanted[i].append((r.subscriber_id, day))
    counted = repo.bump_claim_counters(
        session,
        batch_id=batch_id,
        rows=[row for rows in wanted.values() for row in rows],
        limit_total=terms.limit_total,
        limit_day=terms.limit_per_day or 0,
    )
    admitted, undo, refused = [], [], []
    for i, r in items:
        if all(row in counted for row in wanted[i]):
            admitted.append((i, r))
        else:
            undo += [row for row in wanted[i] if row in counted]
            refused.append(i)
    repo.unbump_claim_counters(session, batch_id=batch_id, rows=undo)
    return admitted, {i: wanted[i] for i, _ in admitted}, refused


def _take_slots(
    session: Session, batch_id: int, terms: ClaimTerms, k: int
) -> list[tuple[int, int]]:
    """(shard, slot) for up to k units; fewer only when the batch sells out meanwhile."""
    first = random.randrange(terms.shard_count)
    # All k from one random shard in one statement; concurrent groups mostly hit other rows.
    got = repo.take_from_active_shard(session, batch_id=batch_id, shard=first, k=k)
    if got:
        base, size, after = got
        return [
            (first, slot_of(slot_base=base, size=size, remaining_after=after + j)) for j in range(k)
        ]
    # That shard has fewer than k (or the batch stopped): unit by unit over the shards that
    # still have stock, in ascending order, so groups that take from several shards lock them
    # in one order and never wait on each other in a cycle.
    slots: list[tuple[int, int]] = []
    while len(slots) < k:
        if repo.batch_status(session, batch_id) != BatchStatus.ACTIVE:
            if slots:  # stopped between two units: the lone path answers each exactly
                raise RetryEach("the batch stopped while its stock was taken")
            status = repo.batch_status(session, batch_id)
            raise NotClaimable(f"this offer is {status}", field="batch_id")
        left = repo.shards_left(session, batch_id)
        if not left:
            break
        for shard in sorted(left):
            while len(slots) < k:
                unit = repo.take_from_active_shard(session, batch_id=batch_id, shard=shard)
                if unit is None:
                    break
                base, size, after = unit
                slots.append((shard, slot_of(slot_base=base, size=size, remaining_after=after)))
    return slots


def _claim_in_batch(
    session: Session,
    vault: Vault,
    batch_id: int,
    terms: ClaimTerms,
    items: list[tuple[int, ClaimRequest]],
    results: dict[int, ClaimResult],
) -> None:
    admitted, counted, refused = _count_claims(session, batch_id, terms, items, results)
    slots: list[tuple[int, int]] = []
    if admitted:
        try:
            slots = _take_slots(session, batch_id, terms, len(admitted))
        except PerkflowError as exc:  # the batch stopped: every admitted claim gets its answer
            repo.unbump_claim_counters(
                session, batch_id=batch_id, rows=[row for rows in counted.values() for row in rows]
            )
            for i, _ in admitted:
                results[i] = exc
            admitted = []
    served, short = admitted[: len(slots)], admitted[len(slots) :]
    if short:
        note_sold_out(session, batch_id=batch_id)
        repo.unbump_claim_counters(
            session, batch_id=batch_id, rows=[row for i, _ in short for row in counted[i]]
        )
    by_index = dict(items)
    late = [(i, by_index[i]) for i in refused] + short
    # A twin request with one of these keys may have committed while we worked (it took the
    # allowance or the last unit): the answer is then its replay. These counted nothing.
    twins = repo.coupons_by_keys(session, [r.key for _, r in late]) if late else {}
    for i, r in late:
        if r.key in twins:
            results[i] = _replay(twins[r.key], r)
        elif i in counted:
            results[i] = SoldOut("sold out", field="batch_id", batch_id=batch_id)
        else:
            results[i] = LimitReached(
                "you have claimed as many as this offer allows", field="batch_id"
            )
    if served:
        _insert_coupons(session, vault, batch_id, terms, served, slots, counted, results)


def _insert_coupons(
    session: Session,
    vault: Vault,
    batch_id: int,
    terms: ClaimTerms,
    served: list[tuple[int, ClaimRequest]],
    slots: list[tuple[int, int]],
    counted: dict[int, list[tuple[int, str]]],
    results: dict[int, ClaimResult],
) -> None:
    now = clock.now()
    valid_from, valid_until = coupon_validity(
        kind=terms.validity_kind,
        claimed_at=now,
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        valid_days=terms.valid_days,
    )
    codes: dict[int, tuple[str, bytes]] = {}
    if terms.code_source == CodeSource.AUTO:
        for _, slot in slots:
            codes[slot] = auto_code(
                session, vault, batch_id=batch_id, pattern=terms.pattern, slot=slot
            )
    else:
        codes = repo.pool_codes(session, batch_id=batch_id, ordinals=[s for _, s in slots])
        if len(codes) < len(slots):
            raise Conflict("this batch's codes are missing; tell the operator", field="batch_id")
    rows: list[dict[str, Any]] = []
    for (_, r), (_, slot) in zip(served, slots, strict=True):
        rows.append(
            {
                "batch_id": batch_id,
                "subscriber_id": r.subscriber_id,
                "slot": slot,
                "code_hash": codes[slot][0],
                "code_enc": codes[slot][1],
                "idempotency_key": r.key,
                "status": CouponStatus.CLAIMED.value,
                "channel": r.channel,
                "device_id": r.device,
                "claimed_at": now,
                "valid_from": valid_from,
                "valid_until": valid_until,
            }
        )
    ids = repo.insert_claims(session, rows)
    if len(ids) < len(rows):
        if len(rows) > 1:
            raise RetryEach("an idempotency key was claimed concurrently")
        # One claim, whose twin with the same key committed while it worked: give back its own
        # unit and counts (their rows are still locked by this transaction, and the unit is the
        # last its shard gave, so the undo is exact), and answer the twin's claim.
        [(i, r)], [(shard, _)] = served, slots
        repo.give_back_to_shard(session, batch_id=batch_id, shard=shard)
        repo.unbump_claim_counters(session, batch_id=batch_id, rows=counted[i])
        twin = repo.coupons_by_keys(session, [r.key])[r.key]
        results[i] = _replay(twin, r)
        return
    by_actor: dict[Actor, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for (i, r), values in zip(served, rows, strict=True):
        coupon_id = ids[r.key]
        by_actor[r.actor].append(
            (
                str(coupon_id),
                {"batch": batch_id, "subscriber": r.subscriber_id, "channel": r.channel},
            )
        )
        results[i] = ClaimOutcome(coupon=ClaimedCoupon.inserted(coupon_id, values), replayed=False)
    for actor, entries in by_actor.items():
        org.append_audits(
            session, actor=actor, action="coupon.claim", target_type="coupon", entries=entries
        )
