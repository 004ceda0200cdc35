"""The in-app inbox: messages a subscriber reads in the H5 pages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime


class InboxMessage(Base):
    """One message in one subscriber's inbox; a campaign contact lands here at most once."""

    __tablename__ = "inbox_messages"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(BigInteger, index=True)
    # Unique: a contact resent after a crash finds its row already there (NULL for system notes).
    contact_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, default=None)
    campaign_id: Mapped[int | None] = mapped_column(Integer, default=None)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    # The H5 path of what the message invites the subscriber to claim or open (None: nothing).
    link: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
