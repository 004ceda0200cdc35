"""Console pages of campaigns: the list and approval queue, the wizard, one campaign, the monitor.

One router for all of them (`_common.router`); importing each part registers its routes on it.
"""

from __future__ import annotations

# The order of these imports is the order of the routes: the fixed paths of the list and the
# wizard (/console/campaigns/new, /approvals, /segment-size) come before
# /console/campaigns/{campaign_id}, which would otherwise take them (and answer 422).
# isort: off
from perkflow.campaigns.pages import lists, wizard, campaign, monitor

# isort: on
from perkflow.campaigns.pages._common import router
from perkflow.campaigns.pages.monitor import dispatch_bounded
from perkflow.campaigns.pages.spec_form import form_of_campaign, form_of_post, raw_spec

__all__ = [
    "campaign",
    "dispatch_bounded",
    "form_of_campaign",
    "form_of_post",
    "lists",
    "monitor",
    "raw_spec",
    "router",
    "wizard",
]
