"""Queries over campaigns, their waves, contacts and responses.

One submodule per part (campaigns, waves, dispatch, responses, history, reads); this package
re-exports their public names, so callers keep writing `repo.cell_counts(...)`.
"""

from __future__ import annotations

from .campaigns import (
    begin_write,
    campaigns_page,
    get_fresh,
    move_campaign,
    running_triggers,
)
from .dispatch import (
    DueContact,
    LeasedContact,
    apply_receipt,
    count_contacted,
    count_taken_up,
    defer_contacts,
    due_contacts,
    insert_contacts_ignore,
    lease_contacts,
    recent_on_channel,
    settle_contacts,
    suppress_contacts,
    suppress_queued,
    unreceipted,
)
from .history import (
    contact_ids,
    import_counts,
    insert_rows,
    response_totals,
)
from .reads import (
    HistoryContact,
    HistoryResponse,
    cell_counts,
    contacts_after,
    first_responses,
    offers_by_campaign,
    responses_after,
    wave_ids_of,
)
from .responses import (
    contact_id_of,
    contacts_of_subscriber,
    event_by_key,
    response_by_key,
)
from .waves import (
    count_by_status,
    has_open,
    move_wave,
    next_due_at,
    reasons_of,
    recent_failures,
    sent_by_channel,
    totals,
    wave_of_kind,
    waves_in,
    waves_of,
)

__all__ = [
    "DueContact",
    "HistoryContact",
    "HistoryResponse",
    "LeasedContact",
    "apply_receipt",
    "begin_write",
    "campaigns_page",
    "cell_counts",
    "contact_id_of",
    "contact_ids",
    "contacts_after",
    "contacts_of_subscriber",
    "count_by_status",
    "count_contacted",
    "count_taken_up",
    "defer_contacts",
    "due_contacts",
    "event_by_key",
    "first_responses",
    "get_fresh",
    "has_open",
    "import_counts",
    "insert_contacts_ignore",
    "insert_rows",
    "lease_contacts",
    "move_campaign",
    "move_wave",
    "next_due_at",
    "offers_by_campaign",
    "reasons_of",
    "recent_failures",
    "recent_on_channel",
    "response_by_key",
    "response_totals",
    "responses_after",
    "running_triggers",
    "sent_by_channel",
    "settle_contacts",
    "suppress_contacts",
    "suppress_queued",
    "totals",
    "unreceipted",
    "wave_ids_of",
    "wave_of_kind",
    "waves_in",
    "waves_of",
]
