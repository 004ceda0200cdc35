"""Use cases of coupons: batches, claims, prize coupons, codes, redemption, binding.

One submodule per part; this package re-exports each part's public names, so callers keep
writing `from perkflow.coupons import service as coupons` and `coupons.claim_coupon(...)`.
Submodules import each other directly, never through this file.
"""

from __future__ import annotations

from perkflow.coupons.models import CouponBatch
from perkflow.coupons.rules import slug_problem
from perkflow.coupons.service.access import (
    owner_for,
    require_edit,
)
from perkflow.coupons.service.batches import (
    StockView,
    activity,
    add_stock,
    create_batch,
    get_batch,
    list_batches,
    read_batch,
    set_batch_status,
    stock_levels,
    stock_of,
    update_batch,
)
from perkflow.coupons.service.binding import (
    CouponBinding,
    bind_coupons,
)
from perkflow.coupons.service.claim_group import claim_coupon
from perkflow.coupons.service.claims import (
    CLAIM_TERMS_TTL_S,
    ClaimedCoupon,
    ClaimOutcome,
    LimitReached,
    NotClaimable,
    OfferView,
    SoldOut,
    WalletItem,
    admit_claim_attempt,
    claim_center,
    code_hash,
    decrypt_code,
    open_claim_terms,
    prune_rate_buckets,
    require_claimant,
    seen_sold_out,
    wallet,
    wallet_item,
)
from perkflow.coupons.service.codes import (
    ImportReport,
    export_codes,
    fail_job,
    get_job,
    import_codes,
    job_is_stale,
    jobs_of,
    run_code_chunk,
    start_code_job,
)
from perkflow.coupons.service.home import (
    CouponActivity,
    coupon_activity,
    low_stock_batches,
)
from perkflow.coupons.service.prizes import (
    batches_of_coupons,
    check_prize_batch,
    issue_prize_coupon,
    prize_batch,
    prize_coupon_id,
    take_prize_unit,
)
from perkflow.coupons.service.reads import (
    LedgerFact,
    claims_since,
    redemptions_since,
)
from perkflow.coupons.service.redemption import (
    CouponCard,
    OfflineResult,
    Refused,
    StoreRedemption,
    look_up_coupon,
    redeem_coupon,
    redeem_offline,
    reverse_redemption,
    store_today,
)
from perkflow.org.rules import subscriber_actor

__all__ = [
    "CLAIM_TERMS_TTL_S",
    "ClaimOutcome",
    "ClaimedCoupon",
    "CouponActivity",
    "CouponBatch",
    "CouponBinding",
    "CouponCard",
    "ImportReport",
    "LedgerFact",
    "LimitReached",
    "NotClaimable",
    "OfferView",
    "OfflineResult",
    "Refused",
    "SoldOut",
    "StockView",
    "StoreRedemption",
    "WalletItem",
    "activity",
    "add_stock",
    "admit_claim_attempt",
    "batches_of_coupons",
    "bind_coupons",
    "check_prize_batch",
    "claim_center",
    "claim_coupon",
    "claims_since",
    "code_hash",
    "coupon_activity",
    "create_batch",
    "decrypt_code",
    "export_codes",
    "fail_job",
    "get_batch",
    "get_job",
    "import_codes",
    "issue_prize_coupon",
    "job_is_stale",
    "jobs_of",
    "list_batches",
    "look_up_coupon",
    "low_stock_batches",
    "open_claim_terms",
    "owner_for",
    "prize_batch",
    "prize_coupon_id",
    "prune_rate_buckets",
    "read_batch",
    "redeem_coupon",
    "redeem_offline",
    "redemptions_since",
    "require_claimant",
    "require_edit",
    "reverse_redemption",
    "run_code_chunk",
    "seen_sold_out",
    "set_batch_status",
    "slug_problem",
    "start_code_job",
    "stock_levels",
    "stock_of",
    "store_today",
    "subscriber_actor",
    "take_prize_unit",
    "update_batch",
    "wallet",
    "wallet_item",
]
