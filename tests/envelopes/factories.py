"""Red-envelope programmes for tests: an active lottery, an active share-to-unlock programme."""

from __future__ import annotations

import itertools

from sqlalchemy.orm import Session

from perkflow.envelopes import service as envelopes
from perkflow.envelopes.models import EnvelopeProgram
from perkflow.envelopes.rules import ProgramKind, ProgramStatus
from perkflow.envelopes.schemas import ProgramSpec, TierSpec
from perkflow.org.rules import SYSTEM

_n = itertools.count(1)


def make_lottery(
    session: Session, *, budget_fen: int, tiers: list[tuple[int, int, int]], limit: int = 10**6
) -> EnvelopeProgram:
    """An active lottery from (tier, prize fen, ppm) triples, committed."""
    program = envelopes.create_program(
        session,
        actor=SYSTEM,
        spec=ProgramSpec(
            code=f"lottery-{next(_n)}",
            name_zh="抽红包",
            name_en="Lucky draw",
            kind=ProgramKind.LOTTERY,
            budget_fen=budget_fen,
            limit_per_subscriber=limit,
            tiers=[
                TierSpec(tier=t, name_zh=f"{t}等奖", name_en=f"Tier {t}", prize_fen=p, weight_ppm=w)
                for t, p, w in tiers
            ],
            seed="seed-for-tests-0001",
        ),
    )
    envelopes.set_program_status(
        session, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ACTIVE
    )
    session.commit()
    return program


def make_share(
    session: Session, *, amount_fen: int = 888, helpers: int = 3, budget_fen: int = 100_000
) -> EnvelopeProgram:
    """An active share-to-unlock programme, committed."""
    program = envelopes.create_program(
        session,
        actor=SYSTEM,
        spec=ProgramSpec(
            code=f"share-{next(_n)}",
            name_zh="分享拆红包",
            name_en="Share to open",
            kind=ProgramKind.SHARE,
            budget_fen=budget_fen,
            share_amount_fen=amount_fen,
            helpers_needed=helpers,
        ),
    )
    envelopes.set_program_status(
        session, actor=SYSTEM, program_id=program.id, status=ProgramStatus.ACTIVE
    )
    session.commit()
    return program
