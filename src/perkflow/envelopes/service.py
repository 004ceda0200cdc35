"""Use cases of red envelopes: lottery draws, share-to-unlock envelopes, prize credits, expiry.

A lottery tier may pay a coupon: those coupons are issued through `coupons.service`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.coupons import service as coupons
from perkflow.coupons.service import CouponBatch
from perkflow.envelopes import repository as repo
from perkflow.envelopes.models import (
    EnvelopeCredit,
    EnvelopeDraw,
    EnvelopeProgram,
    EnvelopeTier,
    ShareEnvelope,
    ShareHelp,
)
from perkflow.envelopes.rules import (
    MAX_DRAWS_PER_CALL,
    CreditKind,
    DrawOutcome,
    DrawResult,
    EnvelopeStatus,
    ProgramKind,
    ProgramStatus,
    Tier,
    draw_number,
    help_problem,
    pick_tier,
    settle_draws,
    tiers_problem,
)
from perkflow.envelopes.schemas import ProgramSpec
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Perm
from perkflow.subscribers import service as subscribers


def _require_api_scope(actor: Actor, scope: str) -> None:
    if actor.kind == "api_key" and not actor.has_scope(scope):
        raise Forbidden(f"this key lacks the {scope} scope")


def create_program(session: Session, *, actor: Actor, spec: ProgramSpec) -> EnvelopeProgram:
    """A draft red-envelope programme with its prize tiers; the lottery seed is logged here."""
    org.require(actor, Perm.COUPONS_EDIT)
    owner = coupons.owner_for(session, actor=actor, requested=spec.owner_region)
    coupons.require_edit(actor, owner)
    problem = coupons.slug_problem(spec.code)
    if problem:
        raise ValidationFailed(f"code: {problem}", field="code")
    tiers = [Tier(t.tier, t.prize_fen, t.weight_ppm, t.max_count) for t in spec.tiers]
    if spec.kind == ProgramKind.LOTTERY:
        problem = tiers_problem(tiers)
        if problem:
            raise ValidationFailed(problem, field="tiers")
        for t in spec.tiers:
            if t.prize_batch_id is not None:
                coupons.check_prize_batch(
                    session, actor=actor, owner=owner, batch_id=t.prize_batch_id
                )
    else:
        if spec.share_amount_fen is None or spec.helpers_needed is None:
            raise ValidationFailed(
                "share-to-unlock needs an amount and a number of helpers", field="helpers_needed"
            )
        if spec.share_amount_fen > spec.budget_fen:
            raise ValidationFailed("one envelope cannot exceed the budget", field="budget_fen")
    now = clock.now()
    program = EnvelopeProgram(
        code=spec.code,
        name_zh=spec.name_zh.strip(),
        name_en=spec.name_en.strip(),
        kind=spec.kind.value,
        owner_region=owner,
        budget_fen=spec.budget_fen,
        spent_fen=0,
        seed=spec.seed or secrets.token_hex(16),
        draws=0,
        limit_per_subscriber=spec.limit_per_subscriber,
        share_amount_fen=spec.share_amount_fen if spec.kind == ProgramKind.SHARE else None,
        helpers_needed=spec.helpers_needed if spec.kind == ProgramKind.SHARE else None,
        starts_at=spec.starts_at or now,
        ends_at=spec.ends_at,
        status=ProgramStatus.DRAFT.value,
        created_by=actor.name,
        created_at=now,
    )
    session.add(program)
    try:
        session.flush()  # the unique programme code decides duplicates
    except IntegrityError as exc:
        raise Conflict(f"programme code {spec.code!r} is taken", field="code") from exc
    if spec.kind == ProgramKind.LOTTERY:
        session.add_all(
            EnvelopeTier(
                program_id=program.id,
                tier=t.tier,
                name_zh=t.name_zh,
                name_en=t.name_en,
                prize_fen=t.prize_fen,
                weight_ppm=t.weight_ppm,
                max_count=t.max_count,
                won_count=0,
                prize_batch_id=t.prize_batch_id,
            )
            for t in spec.tiers
        )
    org.record_audit(
        session,
        actor=actor,
        action="envelope_program.create",
        target_type="envelope_program",
        target_id=str(program.id),
        details={
            "code": program.code,
            "kind": program.kind,
            "budget_fen": program.budget_fen,
            "seed": program.seed,
        },
    )
    return program


def get_program(session: Session, *, program_id: int) -> EnvelopeProgram:
    """A programme by id, or 404."""
    program = repo.get_program(session, program_id)
    if program is None:
        raise NotFound(f"no red-envelope programme {program_id}", field="program_id")
    return program


def program_for_edit(session: Session, *, actor: Actor, program_id: int) -> EnvelopeProgram:
    """A programme the actor may manage (404/403)."""
    program = get_program(session, program_id=program_id)
    coupons.require_edit(actor, program.owner_region)
    return program


def list_programs(session: Session, *, actor: Actor) -> Sequence[EnvelopeProgram]:
    """Programmes the actor may manage."""
    org.require(actor, Perm.COUPONS_EDIT)
    limited = org.visible_province(actor)
    return repo.list_programs(session, owner_regions=[limited] if limited else None, statuses=None)


def program_tiers(session: Session, *, program_id: int) -> Sequence[EnvelopeTier]:
    """A lottery's tiers in tier order."""
    return repo.tiers(session, program_id)


def set_program_status(
    session: Session, *, actor: Actor, program_id: int, status: ProgramStatus
) -> EnvelopeProgram:
    """Start or end a programme."""
    program = get_program(session, program_id=program_id)
    coupons.require_edit(actor, program.owner_region)
    allowed = {
        ProgramStatus.DRAFT: {ProgramStatus.ACTIVE, ProgramStatus.ENDED},
        ProgramStatus.ACTIVE: {ProgramStatus.ENDED},
        ProgramStatus.ENDED: set(),
    }[ProgramStatus(program.status)]
    if status not in allowed:
        raise Conflict(f"cannot go from {program.status} to {status.value}", field="status")
    before = program.status
    program.status = status.value
    org.record_audit(
        session,
        actor=actor,
        action="envelope_program.status",
        target_type="envelope_program",
        target_id=str(program.id),
        details={"from": before, "to": status.value},
    )
    return program


def _require_running(program: EnvelopeProgram, kind: ProgramKind) -> None:
    now = clock.now()
    if program.kind != kind:
        raise Conflict(f"this programme is not a {kind.value}", field="program_id")
    if program.status != ProgramStatus.ACTIVE or now < program.starts_at:
        raise coupons.NotClaimable("this red-envelope programme is not running", field="program_id")
    if program.ends_at is not None and now >= program.ends_at:
        raise coupons.NotClaimable("this red-envelope programme has ended", field="program_id")


def _require_participant(
    session: Session, *, actor: Actor, program: EnvelopeProgram, subscriber_id: int
) -> None:
    if actor.kind == "subscriber" and actor.id != str(subscriber_id):
        raise Forbidden("a subscriber plays only for themself")
    if actor.kind == "staff":
        raise Forbidden("staff do not play for subscribers")
    _require_api_scope(actor, "coupons:claim")
    sub = subscribers.hold_active_subscriber(session, actor=SYSTEM, subscriber_id=subscriber_id)
    if program.owner_region != "CN" and sub.province_code != program.owner_region:
        raise Forbidden("this programme is for subscribers of another province")


def _prize_key(program_id: int, draw_no: int) -> str:
    # Claim keys all start with the subscriber id and a colon, so no claim can take this key.
    return f"prize:{program_id}:{draw_no}"


def _prize_batches(session: Session, tiers: Sequence[EnvelopeTier]) -> dict[int, CouponBatch]:
    out = {}
    for t in tiers:
        if t.prize_batch_id is not None:
            out[t.tier] = coupons.prize_batch(session, batch_id=t.prize_batch_id)
    return out


def draw_lottery(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    program_id: int,
    subscriber_id: int,
    count: int = 1,
) -> list[DrawResult]:
    """Draw `count` times for a subscriber: reproducible from the seed, never past the budget."""
    # Each won prize is credited in the same transaction: a coupon of the tier's batch in the
    # wallet, or cash to the subscriber's red-envelope balance.
    if not 1 <= count <= MAX_DRAWS_PER_CALL:
        raise ValidationFailed(f"draw 1-{MAX_DRAWS_PER_CALL} at a time", field="count")
    if actor.kind == "subscriber" and count > 10:
        raise ValidationFailed("at most ten draws at a time", field="count")
    program = get_program(session, program_id=program_id)
    _require_running(program, ProgramKind.LOTTERY)
    _require_participant(session, actor=actor, program=program, subscriber_id=subscriber_id)
    # Lock order everywhere: the subscriber's counter, then the programme row, then its tiers.
    if not repo.bump_envelope_counter(
        session,
        program_id=program.id,
        subscriber_id=subscriber_id,
        n=count,
        limit=program.limit_per_subscriber,
    ):
        raise coupons.LimitReached("you have used all your draws", field="count")
    reserved = repo.reserve_draws(session, program_id=program.id, n=count)
    assert reserved is not None
    last, spent, budget, seed = reserved
    tiers = repo.tiers(session, program.id, lock=True)
    rule_tiers = [Tier(t.tier, t.prize_fen, t.weight_ppm, t.max_count) for t in tiers]
    prize_batches = _prize_batches(session, tiers)
    units: list[tuple[int, int]] = []

    def deliver(tier: Tier) -> bool:
        # A coupon prize takes its unit now, in draw order, so a sold-out batch turns the draw
        # into `prize_sold_out` before the budget is charged for it.
        batch = prize_batches.get(tier.tier)
        if batch is None:
            return True
        unit = coupons.take_prize_unit(session, batch=batch)
        if unit is not None:
            units.append(unit)
        return unit is not None

    results, new_spent, won = settle_draws(
        seed=seed,
        first_draw_no=last - count + 1,
        count=count,
        tiers=rule_tiers,
        won_counts={t.tier: t.won_count for t in tiers},
        spent_fen=spent,
        budget_fen=budget,
        deliver=deliver,
    )
    # We hold the programme row since reserve_draws, so nobody moved spent_fen meanwhile;
    # the CHECK constraint (spent <= budget) would reject any arithmetic slip.
    if new_spent != spent:
        repo.set_spent(session, program_id=program.id, spent_fen=new_spent)
    for t in tiers:
        if won.get(t.tier, 0) != t.won_count:
            repo.set_won_count(session, program_id=program.id, tier=t.tier, won=won[t.tier])
    at = clock.now()
    repo.insert_draws(
        session,
        [
            {
                "program_id": program.id,
                "draw_no": r.draw_no,
                "subscriber_id": subscriber_id,
                "u": r.u,
                "tier": r.tier,
                "outcome": r.outcome.value,
                "prize_fen": r.prize_fen,
                "at": at,
            }
            for r in results
        ],
    )
    credits = []
    taken = iter(units)
    for r in results:
        if r.outcome != DrawOutcome.WON or r.tier is None:
            continue
        credit: dict[str, object] = {
            "subscriber_id": subscriber_id,
            "program_id": program.id,
            "draw_no": r.draw_no,
            "envelope_id": None,
            "kind": CreditKind.CASH.value,
            "amount_fen": r.prize_fen,
            "coupon_id": None,
            "at": at,
        }
        batch = prize_batches.get(r.tier)
        if batch is not None:
            credit["kind"] = CreditKind.COUPON.value
            credit["coupon_id"] = coupons.issue_prize_coupon(
                session,
                vault=vault,
                batch=batch,
                subscriber_id=subscriber_id,
                key=_prize_key(program.id, r.draw_no),
                taken=next(taken),
            )
        credits.append(credit)
    # The draw numbers were reserved by this call, so no credit of them can exist yet; the
    # unique (programme, draw number) would refuse a second one.
    repo.insert_credits(session, credits)
    org.record_audit(
        session,
        actor=actor,
        action="envelope.draw",
        target_type="envelope_program",
        target_id=str(program.id),
        details={
            "subscriber": subscriber_id,
            "draws": [results[0].draw_no, results[-1].draw_no],
            "paid_fen": new_spent - spent,
            "credited": len(credits),
        },
    )
    return results


def credit_draw(
    session: Session, *, vault: Vault, program_id: int, draw_no: int
) -> EnvelopeCredit | None:
    """Credit a won draw's prize unless it was credited (None for a draw that won nothing)."""
    existing = repo.credit_of_draw(session, program_id=program_id, draw_no=draw_no)
    if existing is not None:
        return existing
    draw = repo.get_draw(session, program_id=program_id, draw_no=draw_no)
    if draw is None:
        raise NotFound(f"no draw {draw_no}", field="draw_no")
    if draw.outcome != DrawOutcome.WON or draw.tier is None:
        return None
    tier = repo.get_tier(session, program_id=program_id, tier=draw.tier)
    assert tier is not None
    coupon_id = None
    if tier.prize_batch_id is not None:
        key = _prize_key(program_id, draw_no)
        coupon_id = coupons.prize_coupon_id(session, key=key)
        if coupon_id is None:
            batch = coupons.prize_batch(session, batch_id=tier.prize_batch_id)
            unit = coupons.take_prize_unit(session, batch=batch)
            if unit is None:
                raise coupons.SoldOut("the prize's coupon batch has no unit left", field="draw_no")
            coupon_id = coupons.issue_prize_coupon(
                session,
                vault=vault,
                batch=batch,
                subscriber_id=draw.subscriber_id,
                key=key,
                taken=unit,
            )
    # Insert-or-nothing on the unique (programme, draw number): a concurrent twin credits once.
    repo.insert_credit(
        session,
        {
            "subscriber_id": draw.subscriber_id,
            "program_id": program_id,
            "draw_no": draw_no,
            "kind": (CreditKind.COUPON if coupon_id else CreditKind.CASH).value,
            "amount_fen": draw.prize_fen,
            "coupon_id": coupon_id,
            "at": clock.now(),
        },
    )
    return repo.credit_of_draw(session, program_id=program_id, draw_no=draw_no)


def verify_draw(
    session: Session, *, program_id: int, draw_no: int
) -> tuple[EnvelopeDraw, int, int | None]:
    """A logged draw beside its recomputation from the seed: (draw, u again, tier again)."""
    program = get_program(session, program_id=program_id)
    draw = repo.get_draw(session, program_id=program.id, draw_no=draw_no)
    if draw is None:
        raise NotFound(f"no draw {draw_no}", field="draw_no")
    tiers = [
        Tier(t.tier, t.prize_fen, t.weight_ppm, t.max_count)
        for t in repo.tiers(session, program.id)
    ]
    u = draw_number(program.seed, draw_no)
    picked = pick_tier(u, tiers)
    return draw, u, picked.tier if picked else None


def draw_summary(session: Session, *, program_id: int) -> list[tuple[int | None, str, int, int]]:
    """(tier, outcome, count, paid) of a lottery's draws."""
    return repo.draw_summary(session, program_id)


def draws_of(session: Session, *, subscriber_id: int) -> Sequence[EnvelopeDraw]:
    """A subscriber's latest draws."""
    return repo.draws_of(session, subscriber_id=subscriber_id)


def start_share(
    session: Session, *, actor: Actor, program_id: int, subscriber_id: int
) -> ShareEnvelope:
    """Start (or return) a subscriber's share-to-unlock envelope; its amount is reserved now."""
    program = get_program(session, program_id=program_id)
    existing = repo.envelope_of(session, program_id=program.id, owner_id=subscriber_id)
    if existing is not None:
        return existing
    _require_running(program, ProgramKind.SHARE)
    _require_participant(session, actor=actor, program=program, subscriber_id=subscriber_id)
    amount = program.share_amount_fen or 0
    # Reserved when started, so every envelope that opens can be paid within the cap.
    if not repo.reserve_budget(session, program_id=program.id, amount_fen=amount):
        raise coupons.SoldOut("all red envelopes of this programme are taken", field="program_id")
    envelope_id = repo.insert_envelope(
        session,
        {
            "program_id": program.id,
            "owner_id": subscriber_id,
            "amount_fen": amount,
            "helpers_needed": program.helpers_needed or 1,
            "helpers_count": 0,
            "status": EnvelopeStatus.LOCKED.value,
            "created_at": clock.now(),
        },
    )
    if envelope_id is None:
        # A twin request started it first; hand our reservation back (we hold the row lock).
        repo.release_budget(session, program_id=program.id, amount_fen=amount)
        twin = repo.envelope_of(session, program_id=program.id, owner_id=subscriber_id)
        assert twin is not None
        return twin
    org.record_audit(
        session,
        actor=actor,
        action="envelope.share_start",
        target_type="share_envelope",
        target_id=str(envelope_id),
        details={"program": program.id, "subscriber": subscriber_id, "amount_fen": amount},
    )
    envelope = repo.get_envelope(session, envelope_id)
    assert envelope is not None
    return envelope


_SHARE_SALT = "perkflow.share-envelope"


def share_token(vault: Vault, *, envelope_id: int, via_id: int) -> str:
    """A help link's token: which envelope, through whose share (signed, not secret)."""
    return URLSafeSerializer(vault.link_key, salt=_SHARE_SALT).dumps([envelope_id, via_id])


def read_share_token(vault: Vault, token: str) -> tuple[int, int]:
    """(envelope id, via subscriber id) of a help link, or 404 for a forged one."""
    try:
        envelope_id, via_id = URLSafeSerializer(vault.link_key, salt=_SHARE_SALT).loads(token)
    except (BadSignature, ValueError, TypeError) as exc:
        raise NotFound("this help link is not valid", field="token") from exc
    return int(envelope_id), int(via_id)


def get_envelope(session: Session, *, envelope_id: int) -> ShareEnvelope:
    """A share envelope by id, or 404."""
    envelope = repo.get_envelope(session, envelope_id)
    if envelope is None:
        raise NotFound("no such red envelope", field="envelope_id")
    return envelope


def help_open(
    session: Session,
    *,
    actor: Actor,
    envelope_id: int,
    helper_id: int,
    via_id: int,
    device_id: str | None,
) -> ShareEnvelope:
    """A friend helps open an envelope: once per friend, never the owner, never past N."""
    if actor.kind == "subscriber" and actor.id != str(helper_id):
        raise Forbidden("a subscriber helps only as themself")
    envelope = get_envelope(session, envelope_id=envelope_id)
    problem = help_problem(owner_id=envelope.owner_id, helper_id=helper_id, status=envelope.status)
    if problem:
        raise Conflict(problem, field="envelope_id")
    program = get_program(session, program_id=envelope.program_id)
    _require_running(program, ProgramKind.SHARE)
    _require_participant(session, actor=actor, program=program, subscriber_id=helper_id)
    if via_id != envelope.owner_id and not repo.is_helper(
        session, envelope_id=envelope.id, subscriber_id=via_id
    ):
        via_id = envelope.owner_id  # a link from outside the chain counts as the owner's
    at = clock.now()
    # The unique (envelope, helper) row decides "a friend counts once", even at the same moment.
    if not repo.insert_help(
        session,
        {
            "envelope_id": envelope.id,
            "owner_id": envelope.owner_id,
            "helper_id": helper_id,
            "via_id": via_id,
            "device_id": device_id[:64] if device_id else None,
            "ip": actor.ip[:64],
            "at": at,
        },
    ):
        raise Conflict("you have already helped this red envelope", field="envelope_id")
    counted = repo.count_help(session, envelope_id=envelope.id, at=at)
    if counted is None:
        session.refresh(envelope)
        raise Conflict(
            help_problem(owner_id=envelope.owner_id, helper_id=helper_id, status=envelope.status)
            or "this red envelope is already open",
            field="envelope_id",
        )
    if counted[1] == EnvelopeStatus.OPENED:
        # This help opened it (the conditional UPDATE opens an envelope once): pay it now.
        _credit_envelope(session, envelope=envelope, at=at)
    org.record_audit(
        session,
        actor=actor,
        action="envelope.help",
        target_type="share_envelope",
        target_id=str(envelope.id),
        details={"helper": helper_id, "via": via_id, "count": counted[0], "status": counted[1]},
    )
    session.refresh(envelope)
    return envelope


def _credit_envelope(session: Session, *, envelope: ShareEnvelope, at: datetime) -> None:
    # Its amount was reserved from the budget when it started; crediting moves no budget.
    repo.insert_credit(
        session,
        {
            "subscriber_id": envelope.owner_id,
            "program_id": envelope.program_id,
            "envelope_id": envelope.id,
            "kind": CreditKind.CASH.value,
            "amount_fen": envelope.amount_fen,
            "at": at,
        },
    )


def credit_envelope(session: Session, *, envelope_id: int) -> EnvelopeCredit | None:
    """Credit an opened envelope's amount to its owner unless it was (None if not opened)."""
    envelope = get_envelope(session, envelope_id=envelope_id)
    if envelope.status != EnvelopeStatus.OPENED:
        return None
    # Insert-or-nothing on the unique envelope id: credited once however often this runs.
    _credit_envelope(session, envelope=envelope, at=clock.now())
    return repo.credit_of_envelope(session, envelope.id)


@dataclass(frozen=True)
class ExpiryReport:
    """What one expiry run did: envelopes expired and budget returned, per programme."""

    envelopes: int
    returned_fen: int
    programs: list[int]


def expire_envelopes(session: Session, *, now: datetime | None = None) -> ExpiryReport:
    """Expire share envelopes still locked when their programme ended; return their budget once."""
    moment = now or clock.now()
    expired = returned = 0
    programs = []
    for program_id in repo.share_programs_past_deadline(session, now=moment):
        # Lock order as in start_share: the programme row, then its envelopes. A concurrent
        # run waits here and then finds nothing locked (a programme that ended stays ended).
        repo.lock_program(session, program_id)
        rows = repo.expire_locked_envelopes(session, program_id=program_id)
        if not rows:
            continue
        amount = sum(a for _, _, a in rows)
        # The same transaction as the status change: an envelope's reservation comes back
        # exactly when it moves to expired, and only one run can move it.
        repo.release_budget(session, program_id=program_id, amount_fen=amount)
        org.append_audit(
            session,
            actor=SYSTEM,
            action="envelope.expire",
            target_type="envelope_program",
            target_id=str(program_id),
            details={"envelopes": len(rows), "returned_fen": amount},
        )
        expired += len(rows)
        returned += amount
        programs.append(program_id)
    return ExpiryReport(envelopes=expired, returned_fen=returned, programs=programs)


@dataclass(frozen=True)
class PrizeView:
    """A credited prize as its subscriber sees it: cash, or a coupon with its batch."""

    credit: EnvelopeCredit
    batch: CouponBatch | None


def prizes_of(session: Session, *, subscriber_id: int) -> list[PrizeView]:
    """A subscriber's credited red-envelope prizes, newest first."""
    credits = repo.credits_of(session, subscriber_id=subscriber_id)
    batches = coupons.batches_of_coupons(
        session, coupon_ids=[c.coupon_id for c in credits if c.coupon_id is not None]
    )
    return [PrizeView(credit=c, batch=batches.get(c.coupon_id or 0)) for c in credits]


def draw_prizes(
    session: Session, *, program_id: int, draw_nos: Sequence[int]
) -> dict[int, PrizeView]:
    """The credited prize of each of these draws that won one, by draw number."""
    credits = repo.credits_of_draws(session, program_id=program_id, draw_nos=draw_nos)
    batches = coupons.batches_of_coupons(
        session, coupon_ids=[c.coupon_id for c in credits if c.coupon_id is not None]
    )
    return {
        int(c.draw_no or 0): PrizeView(credit=c, batch=batches.get(c.coupon_id or 0))
        for c in credits
    }


def cash_balance(session: Session, *, subscriber_id: int) -> int:
    """A subscriber's red-envelope cash balance in fen (what was credited to it)."""
    return repo.cash_balance(session, subscriber_id)


def my_envelopes(session: Session, *, subscriber_id: int) -> Sequence[ShareEnvelope]:
    """A subscriber's share envelopes."""
    return repo.envelopes_of(session, subscriber_id)


def helps_of(session: Session, *, envelope_id: int) -> Sequence[ShareHelp]:
    """Who helped an envelope, in order."""
    return repo.helps_of(session, envelope_id)


def running_programs(session: Session, *, subscriber_id: int) -> Sequence[EnvelopeProgram]:
    """Programmes a subscriber can take part in now."""
    me = subscribers.hold_active_subscriber(session, actor=SYSTEM, subscriber_id=subscriber_id)
    now = clock.now()
    return [
        p
        for p in repo.list_programs(
            session, owner_regions=["CN", me.province_code], statuses=[ProgramStatus.ACTIVE.value]
        )
        if p.starts_at <= now and (p.ends_at is None or p.ends_at > now)
    ]


@dataclass(frozen=True)
class HelpReview:
    """A help for anti-abuse review: its chain depth and signals."""

    help: ShareHelp
    envelope: ShareEnvelope
    depth: int
    device_helps: int
    flags: list[str]


def review_helps(
    session: Session, *, actor: Actor, program_id: int, limit: int = 200
) -> list[HelpReview]:
    """Recent helps of a share programme with chain depth and abuse signals."""
    program = get_program(session, program_id=program_id)
    coupons.require_edit(actor, program.owner_region)
    rows = repo.recent_helps(session, program_id=program.id, limit=limit)
    devices = sorted({h.device_id for h, _ in rows if h.device_id})
    per_device = repo.device_help_counts(session, devices)
    by_envelope: dict[int, dict[int, int]] = {}
    for env_id in {e.id for _, e in rows}:
        by_envelope[env_id] = {h.helper_id: h.via_id for h in repo.helps_of(session, env_id)}
    out = []
    for h, e in rows:
        chain = by_envelope[e.id]
        depth, node, hops = 1, h.via_id, 0
        while node in chain and hops < 50:
            depth, node, hops = depth + 1, chain[node], hops + 1
        flags = []
        if h.device_id and per_device.get(h.device_id, 0) > 3:
            flags.append("device helps many envelopes")
        if depth > 3:
            flags.append("long chain")
        same_device = [
            x for x in repo.helps_of(session, e.id) if x.device_id and x.device_id == h.device_id
        ]
        if len(same_device) > 1:
            flags.append("one device, several helpers")
        out.append(
            HelpReview(
                help=h,
                envelope=e,
                depth=depth,
                device_helps=per_device.get(h.device_id or "", 0),
                flags=flags,
            )
        )
    return out


def masked_phone(session: Session, *, vault: Vault, subscriber_id: int) -> str:
    """A subscriber's phone, masked for display."""
    return subscribers.subscriber_home(session, vault=vault, subscriber_id=subscriber_id).phone
