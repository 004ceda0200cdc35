"""JSON API of red envelopes: lottery draws for a subscriber."""

from __future__ import annotations

from fastapi import APIRouter

from perkflow.envelopes import service as envelopes
from perkflow.envelopes.schemas import DrawIn, DrawOut
from perkflow.kit.bounds import IdParam
from perkflow.web.auth import ApiActor, DbSession, VaultDep

router = APIRouter(prefix="/v1", tags=["envelopes"])


@router.post("/envelope-programs/{program_id}/draws", response_model=list[DrawOut])
def draw(
    program_id: IdParam, body: DrawIn, actor: ApiActor, session: DbSession, vault: VaultDep
) -> list[DrawOut]:
    """Draw a lottery for a subscriber; won prizes are credited (cash balance or a coupon)."""
    results = envelopes.draw_lottery(
        session,
        actor=actor,
        vault=vault,
        program_id=program_id,
        subscriber_id=body.subscriber_id,
        count=body.count,
    )
    prizes = envelopes.draw_prizes(
        session, program_id=program_id, draw_nos=[r.draw_no for r in results]
    )
    out = []
    for r in results:
        prize = prizes.get(r.draw_no)
        out.append(
            DrawOut(
                draw_no=r.draw_no,
                u=r.u,
                tier=r.tier,
                outcome=r.outcome.value,
                prize_fen=r.prize_fen,
                credited=prize.credit.kind if prize else None,
                coupon_id=prize.credit.coupon_id if prize else None,
            )
        )
    return out
