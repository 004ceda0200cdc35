"""Campaign use cases: define, approve, run in waves, record responses and events."""

from __future__ import annotations

from perkflow.campaigns.models import Campaign

from .access import MAX_NAME, get_campaign
from .definitions import (
    approve_campaign,
    create_campaign,
    parse_spec,
    reject_campaign,
    submit_campaign,
    update_campaign,
)
from .history import ImportSummary, import_history, import_summary
from .progress import (
    Failure,
    Progress,
    WaveProgress,
    approval_queue,
    list_campaigns,
    list_waves,
    run_progress,
)
from .reads import (
    contact_counts,
    history_contacts,
    history_responses,
    offers,
    response_times,
    wave_ids,
)
from .responses import LEDGER_REWIND_IDS, LedgerResponses, collect_ledger_responses, record_response
from .runs import (
    complete_campaign,
    finish_campaign,
    pause_campaign,
    resume_campaign,
    roll_out,
    spec_of,
    start_campaign,
)
from .triggers import (
    IN_APP,
    INLINE_LEASE_S,
    EventOutcome,
    Triggered,
    message_regions,
    record_event,
    region_codes,
)

__all__ = [
    "INLINE_LEASE_S",
    "IN_APP",
    "LEDGER_REWIND_IDS",
    "MAX_NAME",
    "Campaign",
    "EventOutcome",
    "Failure",
    "ImportSummary",
    "LedgerResponses",
    "Progress",
    "Triggered",
    "WaveProgress",
    "approval_queue",
    "approve_campaign",
    "collect_ledger_responses",
    "complete_campaign",
    "contact_counts",
    "create_campaign",
    "finish_campaign",
    "get_campaign",
    "history_contacts",
    "history_responses",
    "import_history",
    "import_summary",
    "list_campaigns",
    "list_waves",
    "message_regions",
    "offers",
    "parse_spec",
    "pause_campaign",
    "record_event",
    "record_response",
    "region_codes",
    "reject_campaign",
    "response_times",
    "resume_campaign",
    "roll_out",
    "run_progress",
    "spec_of",
    "start_campaign",
    "submit_campaign",
    "update_campaign",
    "wave_ids",
]
