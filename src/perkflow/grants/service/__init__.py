"""Use cases of grants: issue, fulfil through partners (outbox), callbacks, binding, expiry."""

from __future__ import annotations

from perkflow.org.rules import subscriber_actor

from .access import require_read
from .bulk import GrantRequest, GroupIssued, issue_grants
from .callbacks import CallbackResult, receive_callback
from .dead_letters import DeadLetter, dead_letters, redrive
from .home import GrantActivity, grant_activity
from .issuing import Issued, issue_grant
from .lifecycle import (
    Binding,
    ChangesStatus,
    StatusChanged,
    VerifyRow,
    apply_binding,
    change_subscriber_status,
    expire_grants,
    verify_binding,
)
from .outbox import claim_messages, outbox_counts, prepare_delivery, record_outcome, subscriber_ref
from .reading import (
    GrantRow,
    get_grant,
    grant_history,
    grants_per_day,
    list_grants,
    my_grants,
    reveal_card_code,
    search_by_phone,
)
from .reads import GrantUse, uses_since

__all__ = [
    "Binding",
    "CallbackResult",
    "ChangesStatus",
    "DeadLetter",
    "GrantActivity",
    "GrantRequest",
    "GrantRow",
    "GrantUse",
    "GroupIssued",
    "Issued",
    "StatusChanged",
    "VerifyRow",
    "apply_binding",
    "change_subscriber_status",
    "claim_messages",
    "dead_letters",
    "expire_grants",
    "get_grant",
    "grant_activity",
    "grant_history",
    "grants_per_day",
    "issue_grant",
    "issue_grants",
    "list_grants",
    "my_grants",
    "outbox_counts",
    "prepare_delivery",
    "receive_callback",
    "record_outcome",
    "redrive",
    "require_read",
    "reveal_card_code",
    "search_by_phone",
    "subscriber_actor",
    "subscriber_ref",
    "uses_since",
    "verify_binding",
]
