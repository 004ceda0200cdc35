"""`make run` serves a product with something in it: catalog, tiers, offers, a served subscriber."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from perkflow.catalog.models import Benefit, CardCode, CardCodeLot, Partner
from perkflow.channels.models import InboxMessage
from perkflow.cli.context import get_context
from perkflow.cli.main import app
from perkflow.coupons.models import Coupon, CouponBatch, Redemption
from perkflow.db import make_engine, make_session_factory
from perkflow.envelopes.models import EnvelopeDraw, EnvelopeProgram
from perkflow.grants.models import Grant
from perkflow.membership.models import BundleGrant, Member, MemberTier
from perkflow.subscribers import service as subscribers

runner = CliRunner()
LINK = re.compile(r"/h5/enter\?t=(\S+)")
COUNTED = [
    Partner,
    Benefit,
    CardCodeLot,
    CardCode,
    MemberTier,
    Member,
    BundleGrant,
    Grant,
    CouponBatch,
    Coupon,
    Redemption,
    EnvelopeProgram,
    EnvelopeDraw,
    InboxMessage,
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PERKFLOW_HOME", str(path))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("PERKFLOW_SECRET_KEY", raising=False)
    return path


def _demo() -> str:
    result = runner.invoke(app, ["demo", "--subscribers", "3000", "--seed", "3", "--no-serve"])
    assert result.exit_code == 0, result.output
    return result.output


def _counts(s: Session) -> dict[str, int]:
    return {m.__name__: int(s.scalar(select(func.count()).select_from(m)) or 0) for m in COUNTED}


def _signed(output: str) -> str:
    found = LINK.findall(output.replace("\n", ""))
    assert len(found) == 1, output
    return str(found[0])


def test_demo_seeds_a_product_and_links_a_served_subscriber(home: Path) -> None:
    """Every capability has something in it; the link's subscriber has benefits, coupons, mail."""
    first = _demo()
    sessions = make_session_factory(make_engine(f"sqlite:///{home / 'ledger.sqlite3'}"))
    vault = get_context().vault
    with sessions() as s:
        counts = _counts(s)
        for name in ("Partner", "Benefit", "CardCode", "MemberTier", "CouponBatch"):
            assert counts[name] > 0, name
        assert counts["EnvelopeProgram"] > 0 and counts["Redemption"] > 0
        categories = set(s.scalars(select(Benefit.category)))
        assert {"video", "music", "cloud_storage", "food_drink", "travel"} <= categories
        running = s.scalars(select(EnvelopeProgram.status)).all()
        assert "active" in running
        flash = s.scalars(select(CouponBatch).where(CouponBatch.flash_sale.is_(True))).all()
        assert [b.status for b in flash] == ["active"]

        # The printed link signs in (once) as a subscriber who has something to look at.
        sid = subscribers.redeem_login_token(s, vault=vault, signed=_signed(first), max_age_s=900)
        s.commit()
        grants = s.scalar(select(func.count()).where(Grant.subscriber_id == sid))
        wallet = s.scalar(select(func.count()).where(Coupon.subscriber_id == sid))
        inbox = s.scalar(select(func.count()).where(InboxMessage.subscriber_id == sid))
        card = s.scalar(
            select(func.count()).where(Grant.subscriber_id == sid, Grant.card_code_id.is_not(None))
        )
        assert grants and grants >= 1 and wallet and wallet >= 1 and inbox and inbox >= 1
        assert card and card >= 1

    # A second run on the same home adds nothing, and prints a fresh link that works.
    second = _demo()
    with sessions() as s:
        assert _counts(s) == counts
        again = subscribers.redeem_login_token(
            s, vault=vault, signed=_signed(second), max_age_s=900
        )
        assert again == sid
