"""Coupon test data through the same services as production."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.orm import Session

from perkflow.coupons import service as coupons
from perkflow.coupons.models import CouponBatch
from perkflow.coupons.rules import BatchStatus
from perkflow.coupons.schemas import BatchSpec
from perkflow.org.rules import SYSTEM

# The red-envelope factories live in tests/envelopes; the fuzz test still finds them here.
from tests.envelopes.factories import make_lottery as make_lottery
from tests.envelopes.factories import make_share as make_share

ZONE = "Asia/Shanghai"
_n = itertools.count(1)


def make_batch(session: Session, *, activate: bool = True, **fields: Any) -> CouponBatch:
    """A coupon batch (active by default), committed."""
    values: dict[str, Any] = {
        "code": f"batch-{next(_n)}",
        "name_zh": "满50减10",
        "name_en": "10 off 50",
        "amount_fen": 1000,
        "min_spend_fen": 5000,
        "stock_total": 100,
    }
    values.update(fields)
    batch = coupons.create_batch(session, actor=SYSTEM, spec=BatchSpec(**values))
    if activate:
        coupons.set_batch_status(
            session, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE
        )
    session.commit()
    return batch
