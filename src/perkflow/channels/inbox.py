"""In-app channel: the message becomes an inbox row in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from perkflow.channels import repository
from perkflow.channels.rules import Message, Receipt, SendResult
from perkflow.kit import clock


def offer_link(*, kind: str, offer_id: int | None) -> str | None:
    """The H5 page where a campaign's offer is claimed or used (None: it offers nothing)."""
    if kind == "coupon_batch" and offer_id is not None:
        # The claim center lists every claimable batch; the anchor scrolls to this one.
        return f"/h5/coupons#offer-{offer_id}"
    if kind == "benefit":
        # A benefit offer arrives as a grant: the subscriber finds it, and how to use it, there.
        return "/h5/benefits"
    return None


class InAppChannel:
    """Exactly once per contact: the inbox row commits or rolls back with the contact's state."""

    name = "in_app"

    def send(self, session: Any, messages: Sequence[Message]) -> list[SendResult]:
        """Insert one inbox row per contact (a duplicate contact keeps its first row)."""
        if not isinstance(session, Session):
            raise TypeError("the in-app channel writes through the caller's ledger session")
        at = clock.now()
        ids = repository.insert_contacts(
            session,
            [
                {
                    "subscriber_id": m.subscriber_id,
                    "contact_id": m.contact_id,
                    "campaign_id": m.campaign_id,
                    "title": m.subject[:200],
                    "body": m.body,
                    "link": m.link,
                    "created_at": at,
                }
                for m in messages
            ],
        )
        return [
            SendResult(
                contact_id=m.contact_id,
                ok=True,
                message_ref=f"inbox-{ids[m.contact_id]}",
                delivered=True,
            )
            for m in messages
        ]

    def receipts(self) -> list[Receipt]:
        """None: delivery is the insert itself."""
        return []

    def close(self) -> None:
        """Nothing to release."""
