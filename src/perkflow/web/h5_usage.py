"""What the H5 shows beside each benefit so the subscriber can use it (docs/grants.md).

The words for each fulfilment kind live in one place, `templates/h5/_usage.html`; this module
gathers the facts they need: the partner's name, the benefit's category, the masked number a
recharge went to, and the QR code of a coupon code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.grants.service import GrantRow
from perkflow.kit.crypto import Vault
from perkflow.subscribers import service as subscribers
from perkflow.web.qr import qr_svg

# Categories whose benefit is a membership on a partner account opened with the phone number.
ACCOUNT_CATEGORIES = frozenset({"video", "music", "reading", "cloud_storage"})


@dataclass(frozen=True, slots=True)
class UsageFacts:
    """The facts beside one grant that its usage instructions name."""

    partner: str
    category: str
    phone: str
    qr: Markup | None = None

    @property
    def account(self) -> bool:
        """Credited to a partner account the subscriber opens by signing in with their number."""
        return self.category in ACCOUNT_CATEGORIES


def usage_facts(
    session: Session, *, vault: Vault, subscriber_id: int, rows: Sequence[GrantRow]
) -> dict[int, UsageFacts]:
    """grant id → the facts its usage instructions need (one lookup per partner and benefit)."""
    if not rows:
        return {}
    phone = subscribers.subscriber_home(session, vault=vault, subscriber_id=subscriber_id).phone
    partners: dict[int, str] = {}
    categories: dict[int, str] = {}
    out: dict[int, UsageFacts] = {}
    for r in rows:
        g = r.grant
        if g.partner_id not in partners:
            partners[g.partner_id] = catalog.get_partner(session, partner_id=g.partner_id).name
        if g.benefit_id not in categories:
            categories[g.benefit_id] = catalog.get_benefit(
                session, benefit_id=g.benefit_id
            ).category
        code = g.partner_order_id if r.kind == "coupon" else None
        out[g.id] = UsageFacts(
            partner=partners[g.partner_id],
            category=categories[g.benefit_id],
            phone=phone,
            qr=qr_svg(code, scale=4) if code else None,
        )
    return out
