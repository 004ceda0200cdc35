"""Pure rules of coupons and red envelopes: value, validity, scope, codes, limits, lottery draws."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum


class ValueKind(StrEnum):
    AMOUNT = "amount"
    PERCENT = "percent"


class CouponValidity(StrEnum):
    """How long a claimed coupon is valid: to a fixed instant, or some days from its claim."""

    FIXED = "fixed"
    DAYS = "days"


class CodeSource(StrEnum):
    AUTO = "auto"  # a code is derived from the claim's stock slot at claim time
    PATTERN = "pattern"  # a pool generated up front from the pattern (printable, exportable)
    IMPORT = "import"  # a pool supplied by a partner or printer


class BatchStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"


class CouponStatus(StrEnum):
    CLAIMED = "claimed"
    REDEEMED = "redeemed"
    # Binding (绑): suspension pauses an unredeemed coupon, reactivation resumes it, churn voids it.
    PAUSED = "paused"
    VOID = "void"


class RedemptionStatus(StrEnum):
    DONE = "done"
    REVERSED = "reversed"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# Why a redemption is refused: stable codes for offline uploads and the clerk page.
class Refusal(StrEnum):
    NOT_FOUND = "not_found"
    ALREADY_REDEEMED = "already_redeemed"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    OUT_OF_SCOPE = "out_of_scope"
    MIN_SPEND = "min_spend"
    BATCH_INACTIVE = "batch_inactive"
    DUPLICATE_UPLOAD = "duplicate_upload"
    PAUSED = "paused"
    VOID = "void"


BATCH_TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.DRAFT: frozenset({BatchStatus.ACTIVE, BatchStatus.ENDED}),
    BatchStatus.ACTIVE: frozenset({BatchStatus.PAUSED, BatchStatus.ENDED}),
    BatchStatus.PAUSED: frozenset({BatchStatus.ACTIVE, BatchStatus.ENDED}),
    BatchStatus.ENDED: frozenset(),
}

# Claim attempts admitted per fixed window, across every API process (the ledger counts them).
RATE_WINDOW_S = 10
RATE_PER_SUBSCRIBER = 5
RATE_PER_DEVICE = 20
# A process that saw a batch sold out answers "sold out" without the database for this long.
SOLD_OUT_MEMO_S = 2.0
DEFAULT_SHARDS = 16
# The most stock one batch may hold (the editor's own bound), and one addition's shard count.
MAX_STOCK = 50_000_000
MIN_SHARD_UNITS = 64
DEFAULT_REVERSAL_WINDOW_S = 30 * 60

# No 0/O, 1/I/L: a code read aloud or typed from a phone screen stays unambiguous.
CHARSETS: dict[str, str] = {
    "digits": "0123456789",
    "alnum": "23456789ABCDEFGHJKMNPQRSTUVWXYZ",
    "upper": "ABCDEFGHJKMNPQRSTUVWXYZ",
}
_CODE_CHARS = re.compile(r"^[0-9A-Z]+$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$")
# A valid code should be at most one in this many of the pattern's space: guessing is hopeless.
CODE_SPARSITY = 1000


def slug_problem(code: str) -> str | None:
    """Why a batch or program code is not a usable slug, or None."""
    if not _SLUG.match(code):
        return "use 3-48 lowercase letters, digits and hyphens"
    return None


def discount_fen(
    *,
    value_kind: ValueKind,
    amount_fen: int,
    percent_off: int | None,
    cap_fen: int | None,
    order_fen: int,
) -> int:
    """What a coupon takes off an order: at most the order, a percentage at most its cap."""
    if order_fen <= 0:
        return 0
    if value_kind == ValueKind.AMOUNT:
        return min(amount_fen, order_fen)
    off = order_fen * (percent_off or 0) // 100
    if cap_fen is not None:
        off = min(off, cap_fen)
    return min(off, order_fen)


def value_problem(
    *, value_kind: ValueKind, amount_fen: int, percent_off: int | None, cap_fen: int | None
) -> str | None:
    """Why a coupon value is inconsistent, or None."""
    if value_kind == ValueKind.AMOUNT:
        if amount_fen <= 0:
            return "a fixed-amount coupon needs an amount above zero"
        return None
    if percent_off is None or not 1 <= percent_off <= 99:
        return "a percentage coupon takes 1-99 percent off"
    if cap_fen is not None and cap_fen <= 0:
        return "the cap must be above zero"
    return None


def validity_problem(
    *,
    kind: CouponValidity,
    valid_from: datetime | None,
    valid_until: datetime | None,
    valid_days: int | None,
) -> str | None:
    """Why a validity setting is inconsistent, or None."""
    if kind == CouponValidity.FIXED:
        if valid_from is None or valid_until is None:
            return "a fixed window needs a start and an end"
        if valid_until <= valid_from:
            return "the window must end after it starts"
        return None
    if valid_days is None or not 1 <= valid_days <= 3650:
        return "days from claim must be 1-3650"
    return None


def coupon_validity(
    *,
    kind: CouponValidity,
    claimed_at: datetime,
    valid_from: datetime | None,
    valid_until: datetime | None,
    valid_days: int | None,
) -> tuple[datetime, datetime]:
    """The window in which one claimed coupon can be redeemed."""
    if kind == CouponValidity.FIXED:
        assert valid_from is not None and valid_until is not None
        return valid_from, valid_until
    return claimed_at, claimed_at + timedelta(days=valid_days or 0)


def period_keys(day: date) -> tuple[str, str]:
    """The counter periods one claim counts against: the batch total and the local day."""
    return "total", day.isoformat()


def split_stock(total: int, shards: int) -> list[tuple[int, int]]:
    """(slot base, size) of each stock shard: contiguous slot ranges covering 0..total-1."""
    count = max(1, min(shards, total)) if total > 0 else 1
    base, extra = divmod(total, count)
    out = []
    start = 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        out.append((start, size))
        start += size
    return out


def addition_shards(*, quantity: int, flash_sale: bool) -> int:
    """How many shards an addition of stock gets: as a new batch, but none under 64 units."""
    # A tiny shard is emptied by a handful of claims and then only costs claimers a miss.
    return max(1, min(DEFAULT_SHARDS if flash_sale else 1, quantity // MIN_SHARD_UNITS))


def added_shards(
    *, stock_total: int, shard_count: int, quantity: int, shards: int
) -> list[tuple[int, int, int]]:
    """(shard number, slot base, size) of stock added after `stock_total` existing slots."""
    # The new slots continue where the batch ends, so they never overlap an existing range.
    return [
        (shard_count + i, stock_total + base, size)
        for i, (base, size) in enumerate(split_stock(quantity, shards))
    ]


def slot_of(*, slot_base: int, size: int, remaining_after: int) -> int:
    """The stock slot a decrement handed out: shards give slots from their base upwards."""
    return slot_base + size - remaining_after - 1


def rate_window(epoch_s: float, window_s: int = RATE_WINDOW_S) -> int:
    """Start of the fixed rate window containing a moment."""
    return int(epoch_s // window_s) * window_s


# ---- codes --------------------------------------------------------------------------------


def normalize_code(raw: str) -> str:
    """A typed or scanned code as stored: upper case, no spaces or hyphens."""
    return re.sub(r"[\s\-]", "", raw).upper()


@dataclass(frozen=True)
class CodePattern:
    """How codes look: a prefix, then `length` characters from `charset`."""

    charset: str
    prefix: str
    length: int

    @property
    def capacity(self) -> int:
        """How many distinct codes the pattern can spell."""
        return int(len(self.charset) ** self.length)

    def spell(self, index: int) -> str:
        """The code of a number in 0..capacity-1 (base-len(charset) digits, fixed width)."""
        base = len(self.charset)
        chars = []
        for _ in range(self.length):
            index, digit = divmod(index, base)
            chars.append(self.charset[digit])
        return self.prefix + "".join(reversed(chars))


def resolve_charset(name_or_chars: str) -> str:
    """A named charset, or a custom one given as its characters."""
    return CHARSETS.get(name_or_chars, name_or_chars)


def pattern_problem(pattern: CodePattern, *, count: int) -> str | None:
    """Why a pattern cannot give `count` unguessable distinct codes, or None."""
    cs = pattern.charset
    if len(cs) < 2 or len(set(cs)) != len(cs) or not _CODE_CHARS.match(cs):
        return "the charset needs 2+ distinct characters from 0-9 and A-Z"
    if pattern.prefix and not _CODE_CHARS.match(pattern.prefix):
        return "the prefix may only use 0-9 and A-Z"
    if len(pattern.prefix) > 8:
        return "the prefix is at most 8 characters"
    if not 4 <= pattern.length <= 24:
        return "the code length must be 4-24"
    if pattern.capacity < max(count, 1) * CODE_SPARSITY:
        return (
            f"the pattern spells {pattern.capacity:,} codes; {count:,} codes need at least "
            f"{count * CODE_SPARSITY:,} so that guessing one is hopeless (longer or wider charset)"
        )
    return None


def imported_code_problem(code: str) -> str | None:
    """Why an imported code (normalized) is unusable, or None."""
    if not 4 <= len(code) <= 32:
        return "a code has 4-32 characters"
    if not _CODE_CHARS.match(code):
        return "a code uses only 0-9 and A-Z"
    return None


class Permutation:
    """A keyed bijection on 0..n-1 (Feistel with cycle walking): distinct inputs, distinct codes."""

    ROUNDS = 4

    def __init__(self, key: bytes, n: int) -> None:
        if n < 2:
            raise ValueError("domain too small")
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self.n = n
        self.half = bits // 2
        self.mask = (1 << self.half) - 1
        self.keys = [hashlib.blake2b(key + bytes([r]), digest_size=32).digest() for r in range(4)]

    def _round(self, r: int, x: int) -> int:
        digest = hashlib.blake2b(x.to_bytes(8, "big"), key=self.keys[r], digest_size=8).digest()
        return int.from_bytes(digest, "big") & self.mask

    def _once(self, x: int) -> int:
        left, right = x >> self.half, x & self.mask
        for r in range(self.ROUNDS):
            left, right = right, left ^ self._round(r, right)
        return (left << self.half) | right

    def __call__(self, x: int) -> int:
        if not 0 <= x < self.n:
            raise ValueError("outside the domain")
        # Cycle walking: a bijection on the power-of-two domain, restricted to 0..n-1.
        y = self._once(x)
        while y >= self.n:
            y = self._once(y)
        return y


# ---- scope --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Where a coupon can be used; an empty list places no restriction of that kind."""

    stores: tuple[str, ...] = ()
    region_paths: tuple[str, ...] = ()
    partners: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Place:
    """Where a redemption happens: a store of the operator, or a partner merchant."""

    store_code: str | None
    store_path: str | None
    partner_code: str | None
    category: str | None


def _under(path: str, scope_path: str) -> bool:
    return path == scope_path or path.startswith(scope_path + "/")


def scope_problem(scope: Scope, place: Place) -> str | None:
    """Why a coupon cannot be used at this place, or None."""
    if place.partner_code is not None:
        if scope.partners and place.partner_code not in scope.partners:
            return f"not valid at partner {place.partner_code}"
        if not scope.partners and (scope.stores or scope.region_paths):
            return "only valid in the operator's stores"
    else:
        if scope.partners and not (scope.stores or scope.region_paths):
            return "only valid at partner merchants"
        if scope.stores or scope.region_paths:
            in_store = place.store_code in scope.stores
            in_region = place.store_path is not None and any(
                _under(place.store_path, p) for p in scope.region_paths
            )
            if not (in_store or in_region):
                return "not valid in this store's region"
    if scope.categories and place.category not in scope.categories:
        return "not valid for this category of purchase"
    return None


def redemption_refusal(
    *,
    coupon_status: str,
    batch_status: str,
    now: datetime,
    valid_from: datetime,
    valid_until: datetime,
    scope: Scope,
    place: Place,
    min_spend_fen: int,
    order_fen: int,
) -> tuple[Refusal, str] | None:
    """Why a coupon cannot be redeemed here and now, with a readable message, or None."""
    if coupon_status == CouponStatus.REDEEMED:
        return Refusal.ALREADY_REDEEMED, "this coupon was already redeemed"
    if coupon_status == CouponStatus.VOID:
        return Refusal.VOID, "this coupon is void: its subscriber has left the network"
    if coupon_status == CouponStatus.PAUSED:
        return Refusal.PAUSED, "this coupon is paused while its subscriber's line is suspended"
    if batch_status == BatchStatus.ENDED:
        return Refusal.BATCH_INACTIVE, "this coupon's campaign has ended"
    if now < valid_from:
        return Refusal.NOT_YET_VALID, "this coupon is not valid yet"
    if now >= valid_until:
        return Refusal.EXPIRED, "this coupon has expired"
    problem = scope_problem(scope, place)
    if problem:
        return Refusal.OUT_OF_SCOPE, problem
    if order_fen < min_spend_fen:
        return Refusal.MIN_SPEND, f"the order must reach the minimum spend of {min_spend_fen} fen"
    return None


def reversal_problem(
    *, status: str, redeemed_at: datetime, now: datetime, window_s: int
) -> str | None:
    """Why a redemption cannot be reversed now, or None."""
    if status == RedemptionStatus.REVERSED:
        return "this redemption was already reversed"
    if now - redeemed_at > timedelta(seconds=window_s):
        return f"a redemption can only be reversed within {window_s // 60} minutes"
    return None


# ---- who can redeem a batch at all --------------------------------------------------------


def claim_validity_problem(
    *, kind: CouponValidity, valid_until: datetime | None, claim_starts_at: datetime | None
) -> str | None:
    """Why a fixed window makes every claimed coupon unusable (it ends before claims open)."""
    if kind != CouponValidity.FIXED or valid_until is None or claim_starts_at is None:
        return None
    if valid_until <= claim_starts_at:
        return "the coupons' validity ends before the claim window opens: none could be used"
    return None


@dataclass(frozen=True)
class ReachWarning:
    """Why nobody, or fewer than meant, could redeem a batch: `kind` names the case for pages.

    A warning, not a validation problem: the batch is valid and kept, since stores and partner
    merchants may be added after it.
    """

    field: str
    kind: str  # no_store | unknown_partner | no_partner
    message: str
    code: str | None = None  # the partner merchant that does not exist


def reach_warnings(
    *, scope: Scope, stores_in_scope: int, unknown_partners: Sequence[str]
) -> list[ReachWarning]:
    """Each reason nobody, or fewer than meant, could redeem a batch with this scope."""
    warnings: list[ReachWarning] = []
    in_stores = bool(scope.stores or scope.region_paths)
    known = [p for p in scope.partners if p not in unknown_partners]
    if in_stores and stores_in_scope == 0:
        field = "scope_stores" if scope.stores else "scope_regions"
        who = "only partner merchants" if known else "nobody"
        message = f"no store is in the batch's scope: {who} can redeem it"
        warnings.append(ReachWarning(field, "no_store", message))
    for code in unknown_partners:
        message = f"no partner merchant {code}: none redeems there"
        warnings.append(ReachWarning("scope_partners", "unknown_partner", message, code))
    if scope.partners and not known and not in_stores:
        message = "no listed partner merchant exists: nobody can redeem it"
        warnings.append(ReachWarning("scope_partners", "no_partner", message))
    return warnings
