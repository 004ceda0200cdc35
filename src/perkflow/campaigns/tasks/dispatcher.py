"""The dispatcher's state (channels, buckets, parsed specs), a batch's report, the sending waves."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign
from perkflow.campaigns.rules import WaveStatus
from perkflow.channels.rules import Channel, Throttle
from perkflow.kit.crypto import Vault
from perkflow.settings import Settings


@dataclass
class DispatchReport:
    """What one dispatch batch did."""

    claimed: int = 0
    sent: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    receipts: int = 0

    def add(self, other: DispatchReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Dispatcher:
    """Worker state kept between batches: channels, token buckets, settings."""

    channels: Mapping[str, Channel]
    vault: Vault
    settings: Settings
    lease_s: float = 30.0
    max_attempts: int = 5
    backoff_base_s: float = 2.0
    throttles: dict[Any, Throttle] = field(default_factory=dict)
    monotonic: Callable[[], float] = time.monotonic
    specs: dict[tuple[int, int], rules.CampaignSpec] = field(default_factory=dict)
    # A receipt can be lost (read by a worker that died before recording it): messages still
    # `sent` this long after sending are asked about, once per `receipt_query_every_s`.
    receipt_query_after_s: float = 600.0
    receipt_query_every_s: float = 60.0
    receipts_queried_at: float | None = None

    def spec_of(self, campaign: Campaign) -> rules.CampaignSpec:
        """The campaign's parsed spec, kept per version (every change bumps it)."""
        # Parsing validates every template again (~2 ms): once per version, not per batch.
        key = (campaign.id, campaign.version)
        if key not in self.specs:
            if len(self.specs) > 1_000:
                self.specs.clear()
            self.specs[key] = campaigns.spec_of(campaign)
        return self.specs[key]

    def throttle(self, campaign: Campaign, channel: str) -> Throttle | None:
        """The campaign's bucket for the channel, or the worker's bucket for the channel."""
        rate = (campaign.throttle or {}).get(channel)
        key: Any = (campaign.id, channel) if rate else channel
        if key not in self.throttles:
            if not rate:
                rate = self.settings.channel_rate_per_s.get(channel)
            if not rate:
                return None
            self.throttles[key] = Throttle(float(rate), clock=self.monotonic)
        return self.throttles[key]


@dataclass(frozen=True)
class _Claimed:
    contact_id: int
    subscriber_id: int
    campaign_id: int
    channel: str
    attempts: int
    subject: str
    body: str
    address: str | None
    error: str | None = None
    # The H5 page of the campaign's offer, carried by in-app messages.
    link: str | None = None


def _running_waves(session: Session, *, campaign_id: int | None = None) -> dict[int, Campaign]:
    """wave id → campaign of the waves that may send now (wave running, campaign running)."""
    out: dict[int, Campaign] = {}
    for wave in repo.waves_in(session, WaveStatus.RUNNING.value, campaign_id=campaign_id):
        campaign = session.get(Campaign, wave.campaign_id)
        if campaign is not None and campaign.status == rules.CampaignStatus.RUNNING:
            out[wave.id] = campaign
    return out
