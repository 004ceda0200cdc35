"""Channels: open the configured adapters, address subscribers, read and mark the in-app inbox."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from perkflow.channels import repository
from perkflow.channels.email import SmtpChannel
from perkflow.channels.inbox import InAppChannel

# Re-exported: campaigns link their in-app messages to their offer.
from perkflow.channels.inbox import offer_link as offer_link
from perkflow.channels.models import InboxMessage
from perkflow.channels.rules import CHANNELS, Channel, Message, SendResult, Throttle
from perkflow.channels.sms import SmppChannel
from perkflow.channels.webhook import WebhookChannel
from perkflow.errors import NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.settings import Settings

NOT_CONFIGURED = "channel not configured"


def open_channels(settings: Settings, *, vault: Vault) -> dict[str, Channel]:
    """The adapters whose peers are configured (in-app always); each connects on first use."""
    channels: dict[str, Channel] = {"in_app": InAppChannel()}
    if settings.smpp_host:
        channels["sms"] = SmppChannel(
            host=settings.smpp_host,
            port=settings.smpp_port,
            system_id=settings.smpp_system_id,
            password=settings.smpp_password,
            source_addr=settings.smpp_source_addr,
        )
    if settings.smtp_host:
        channels["email"] = SmtpChannel(
            host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_sender
        )
    if settings.webhook_url:
        channels["webhook"] = WebhookChannel(
            url=settings.webhook_url, secret=settings.webhook_secret or vault.webhook_key
        )
    return channels


# The setting without which open_channels leaves a channel closed (in-app needs none).
REQUIRED_SETTING = {"sms": "smpp_host", "email": "smtp_host", "webhook": "webhook_url"}


def missing_settings(settings: Settings, channels: Iterable[str]) -> dict[str, str]:
    """For each of `channels` that open_channels would leave closed, the variable it lacks."""
    missing: dict[str, str] = {}
    for channel in channels:
        name = REQUIRED_SETTING.get(channel)
        if name is not None and not getattr(settings, name):
            missing[channel] = "PERKFLOW_" + name.upper()
    return missing


def close_channels(channels: dict[str, Channel]) -> None:
    """Close every adapter."""
    for channel in channels.values():
        channel.close()


def throttles(settings: Settings) -> dict[str, Throttle]:
    """One token bucket per channel at its configured rate (monotonic clock)."""
    return {
        name: Throttle(rate, clock=time.monotonic)
        for name, rate in settings.channel_rate_per_s.items()
        if rate > 0
    }


def address_for(channel: str, *, phone: str, subscriber_id: int, settings: Settings) -> str:
    """Where a channel reaches a subscriber: the phone, the operator mailbox, or the id."""
    if channel == "sms":
        return phone
    if channel == "email":
        return f"{phone}@{settings.email_domain}"
    if channel in ("webhook", "in_app"):
        return str(subscriber_id)
    raise ValidationFailed(f"unknown channel; one of {', '.join(CHANNELS)}", field="channel")


# ---- the in-app inbox ----------------------------------------------------------------------


def send_in_app(session: Session, *, messages: Sequence[Message]) -> list[SendResult]:
    """Campaign messages into the inbox, in the caller's transaction (one row per contact)."""
    return InAppChannel().send(session, messages)


def post_system_message(
    session: Session, *, subscriber_id: int, title: str, body: str, link: str | None = None
) -> InboxMessage:
    """A message in a subscriber's inbox that belongs to no campaign contact."""
    return repository.add(
        session,
        InboxMessage(
            subscriber_id=subscriber_id,
            title=title[:200],
            body=body,
            link=link,
            created_at=clock.now(),
        ),
    )


def inbox_for(session: Session, *, subscriber_id: int, limit: int = 50) -> list[InboxMessage]:
    """The subscriber's newest messages first."""
    return repository.list_for(session, subscriber_id=subscriber_id, limit=max(1, min(limit, 200)))


def unread_count(session: Session, *, subscriber_id: int) -> int:
    """How many of the subscriber's messages are unread."""
    return repository.count_unread(session, subscriber_id=subscriber_id)


def mark_read(session: Session, *, subscriber_id: int, message_id: int) -> InboxMessage:
    """Mark one of the subscriber's own messages read (again is harmless); 404 for anyone else's."""
    message = repository.get(session, message_id=message_id)
    if message is None or message.subscriber_id != subscriber_id:
        # Someone else's message looks exactly like a missing one.
        raise NotFound("no such message", field="message_id")
    repository.set_read(session, subscriber_id=subscriber_id, message_id=message_id, at=clock.now())
    session.refresh(message)
    return message
