"""Whether a campaign's channels can send from here: a warning at create, a refusal at start.

A channel whose peer is not configured (no SMPP host, SMTP host or webhook URL) would otherwise be
found only by the worker, one failed contact after another.
"""

from __future__ import annotations

from dataclasses import dataclass

from perkflow.campaigns import rules
from perkflow.channels import service as channels
from perkflow.errors import Conflict
from perkflow.settings import Settings


@dataclass(frozen=True, slots=True)
class ChannelGap:
    """A channel the campaign uses that cannot send here, and the setting it lacks."""

    channel: str
    setting: str
    field: str  # the first variant that uses it, as a spec path

    @property
    def message(self) -> str:
        """One line for the author."""
        return (
            f"channel {self.channel} is not configured (set {self.setting}); "
            "the campaign cannot start until it is"
        )


def channel_gaps(spec: rules.CampaignSpec, settings: Settings) -> list[ChannelGap]:
    """The spec's channels without a configured peer, in the order its variants use them."""
    first: dict[str, int] = {}
    for n, variant in enumerate(spec.variants):
        first.setdefault(variant.channel, n)
    missing = channels.missing_settings(settings, first)
    return [
        ChannelGap(channel=c, setting=missing[c], field=f"variants[{n}].channel")
        for c, n in first.items()
        if c in missing
    ]


def require_channels(spec: rules.CampaignSpec, settings: Settings) -> None:
    """Refuse (409, naming the channel and its setting) a start that would burn contacts."""
    gaps = channel_gaps(spec, settings)
    if gaps:
        names = ", ".join(f"{g.channel} (set {g.setting})" for g in gaps)
        which = f"channel {names} is" if len(gaps) == 1 else f"channels {names} are"
        raise Conflict(
            f"the campaign cannot start: {which} not configured",
            field=gaps[0].field,
            channels=[g.channel for g in gaps],
        )
