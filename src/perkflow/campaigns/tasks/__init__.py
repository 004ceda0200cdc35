"""The campaign worker: plans waves into contact rows and dispatches them through the channels.

An entry point like the grants outbox worker: every step is its own short unit of work, so a
worker killed at any instant leaves rows that the next one resumes. Planning inserts with
insert-ignore on (campaign, subscriber); dispatch leases contacts by compare-and-set and records
each outcome only if the lease is still its own. For the in-app channel the inbox row and the
"sent" mark commit together: exactly once. External channels are at least once, each message
carrying the contact's key for the peer to drop a resent copy.

One submodule per part (planning, dispatcher, claims, dispatch, receipts, loop); this package
re-exports their public names, so callers keep writing `tasks.run_worker(...)`.
"""

from __future__ import annotations

from .dispatch import (
    NOT_CONFIGURED,
    dispatch_batch,
)
from .dispatcher import (
    Dispatcher,
    DispatchReport,
)
from .loop import (
    WorkerReport,
    finish_waves,
    next_due_in_s,
    open_totals,
    run_worker,
)
from .planning import (
    PLAN_CHUNK,
    dispatch_order,
    plan_wave,
    wave_sample_salt,
)
from .receipts import (
    RECEIPT_QUERY_BATCH,
    RECEIPT_QUERY_HORIZON,
    apply_receipts,
    recover_receipts,
)

__all__ = [
    "NOT_CONFIGURED",
    "PLAN_CHUNK",
    "RECEIPT_QUERY_BATCH",
    "RECEIPT_QUERY_HORIZON",
    "DispatchReport",
    "Dispatcher",
    "WorkerReport",
    "apply_receipts",
    "dispatch_batch",
    "dispatch_order",
    "finish_waves",
    "next_due_in_s",
    "open_totals",
    "plan_wave",
    "recover_receipts",
    "run_worker",
    "wave_sample_salt",
]
