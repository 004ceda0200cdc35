"""Who could redeem a coupon batch at all: the warnings a batch is created or shown with.

A scope can be valid field by field and still leave nobody to redeem: regions without a store,
partner merchants that do not exist. Stores and partners may be added later, so these warn;
a validity that ends before claims open is refused where the spec is checked.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.coupons.models import CouponBatch
from perkflow.coupons.rules import ReachWarning, Scope, reach_warnings
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM


def batch_warnings(session: Session, *, batch: CouponBatch) -> list[ReachWarning]:
    """What in the batch's scope leaves nobody (or fewer than meant) able to redeem it."""
    scope = Scope(
        stores=tuple(batch.scope_stores),
        region_paths=tuple(batch.scope_regions),
        partners=tuple(batch.scope_partners),
        categories=tuple(batch.scope_categories),
    )
    stores = org.count_stores(session, under_paths=[*scope.region_paths]) + len(scope.stores)
    known = (
        {p.code for p in catalog.list_partners(session, actor=SYSTEM)} if scope.partners else set()
    )
    return reach_warnings(
        scope=scope,
        stores_in_scope=stores,
        unknown_partners=[p for p in scope.partners if p not in known],
    )
