"""Queries over coupons; every limit statement is atomic on its own.

One submodule per part (batches, claims, claims_bulk: the set-based claim statements, codes,
redemption, reads); this package re-exports their public names, so the service keeps writing
`repo.get_batch(...)`.
"""

from __future__ import annotations

from perkflow.coupons.repository.batches import (
    add_shards,
    get_batch,
    get_batch_by_code,
    grow_stock,
    list_batches,
    replace_shards,
    set_batch_status,
    shards,
    stock_levels,
)
from perkflow.coupons.repository.claims import (
    batch_status,
    batch_terms,
    claim_id_by_key,
    give_back_to_shard,
    pool_code,
    shards_left,
)
from perkflow.coupons.repository.claims_bulk import (
    bump_claim_counters,
    claimed_counts,
    count_coupons,
    coupons_by_keys,
    give_back_rate_tokens,
    insert_claim,
    insert_claims,
    pool_codes,
    prune_rate_buckets,
    take_from_active_shard,
    take_rate_tokens,
    unbump_claim_counters,
    wallet,
)
from perkflow.coupons.repository.codes import (
    advance_pool,
    existing_hashes,
    get_job,
    insert_pool_codes,
    jobs_of,
    pool_codes_page,
)
from perkflow.coupons.repository.reads import (
    batches_of_coupons,
    claims_after,
    redemptions_after,
)
from perkflow.coupons.repository.redemption import (
    cas_coupon,
    cas_reverse,
    coupon_by_hash,
    get_coupon,
    get_redemption,
    move_subscriber_coupons,
    per_minute,
    redemption_by_ref,
    redemption_count,
    store_redemptions,
)

__all__ = [
    "add_shards",
    "advance_pool",
    "batch_status",
    "batch_terms",
    "batches_of_coupons",
    "bump_claim_counters",
    "cas_coupon",
    "cas_reverse",
    "claim_id_by_key",
    "claimed_counts",
    "claims_after",
    "count_coupons",
    "coupon_by_hash",
    "coupons_by_keys",
    "existing_hashes",
    "get_batch",
    "get_batch_by_code",
    "get_coupon",
    "get_job",
    "get_redemption",
    "give_back_rate_tokens",
    "give_back_to_shard",
    "grow_stock",
    "insert_claim",
    "insert_claims",
    "insert_pool_codes",
    "jobs_of",
    "list_batches",
    "move_subscriber_coupons",
    "per_minute",
    "pool_code",
    "pool_codes",
    "pool_codes_page",
    "prune_rate_buckets",
    "redemption_by_ref",
    "redemption_count",
    "redemptions_after",
    "replace_shards",
    "set_batch_status",
    "shards",
    "shards_left",
    "stock_levels",
    "store_redemptions",
    "take_from_active_shard",
    "take_rate_tokens",
    "unbump_claim_counters",
    "wallet",
]
