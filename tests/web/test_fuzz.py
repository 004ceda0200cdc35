"""API fuzzing: schemathesis over the whole OpenAPI document, in process, on both backends.

Every operation gets a bounded, derandomized set of generated calls (valid and invalid input,
and valid input aimed at the seeded rows), with a key holding every scope and with no key.
No call may answer 5xx, an undocumented status or a body off its schema; afterwards the
ledger's own checks and the stock, redemption and points invariants still hold.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.models import Coupon, CouponBatch, Redemption, StockShard
from perkflow.grants import service as grants
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.membership.models import PointsEntry
from perkflow.org.rules import API_SCOPES, SYSTEM
from perkflow.settings import Settings
from tests.coupons.factories import ZONE, make_batch, make_lottery
from tests.factories import make_api_key, make_benefit, make_partner, make_subscribers
from tests.membership.helpers import points_invariants

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Examples per operation and mode: small, so the whole probe stays within a few minutes.
EXAMPLES = {"positive": 10, "negative": 6, "seeded": 6, "anonymous": 2}


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Iterator[FastAPI]:
    url = engine.url.render_as_string(hide_password=False)
    yield create_app(settings.model_copy(update={"database_url": url}), engine=engine)


def _seed(sessions: sessionmaker[Session], vault: Vault) -> dict[str, Any]:
    """A small operator: subscribers, a partner's benefit and a grant, coupons, a lottery."""
    with sessions() as s:
        ids = make_subscribers(s, vault, [(f"1370000{n:04d}", "GD", "GD01") for n in range(4)])
        partner = make_partner(s)
        benefit = make_benefit(s, partner=partner)
        batch = make_batch(s, stock_total=50, flash_sale=True, shard_count=2)
        lottery = make_lottery(s, budget_fen=100_000, tiers=[(1, 100, 500_000)])
        key = make_api_key(s, scopes=sorted(API_SCOPES))
        grant = grants.issue_grant(
            s,
            actor=SYSTEM,
            subscriber_id=ids[0],
            benefit_id=benefit.id,
            source="fuzz",
            idempotency_key="fuzz-seed-grant",
            zone=ZONE,
        )
        claimed = coupons.claim_coupon(
            s,
            actor=SYSTEM,
            vault=vault,
            batch_id=batch.id,
            subscriber_id=ids[1],
            idempotency_key="fuzz-seed-claim",
            channel="api",
            device_id=None,
            zone=ZONE,
        )
        s.commit()
        return {
            "key": key,
            "path": {
                "subscriber_id": ids[0],
                "benefit_id": benefit.id,
                "partner_id": partner.id,
                "partner_code": partner.code,
                "batch_id": batch.id,
                "program_id": lottery.id,
                "grant_id": grant.grant.id,
                "redemption_id": claimed.coupon.id,
                "segment_id": 1,
                "campaign_id": 1,
                "target_list_id": 1,
                "bill_ref": "fuzz-bill-1",
            },
        }


def _fuzz(app: FastAPI, *, headers: dict[str, str], modes: list[str], path: dict[str, Any]) -> Any:
    """Run every operation through the modes; returns (operations, statuses seen, failures)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for operation in operations:
        names = re.findall(r"{(\w+)}", operation.path)
        for mode in modes:
            if mode == "seeded" and not names:
                continue
            kwargs: dict[str, Any] = {}
            if mode == "seeded":
                kwargs["path_parameters"] = {n: path[n] for n in names if n in path}
            generation = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
            strategy = operation.as_strategy(generation_mode=generation, **kwargs)

            @hsettings(
                max_examples=EXAMPLES[mode],
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call_and_validate(headers=headers, checks=CHECKS)
                statuses[response.status_code] += 1

            try:
                run()
            except Unsatisfiable:
                continue  # nothing to make invalid (an operation without parameters or body)
            except Exception as exc:  # collected: one report names every failing operation
                failures.append(f"{operation.label} [{mode}]: {str(exc)[:600]}")
    return len(operations), statuses, failures


def _invariants(sessions: sessionmaker[Session], engine: Engine) -> None:
    """The ledger's own checks, and stock, redemption and points invariants."""
    with sessions() as s:
        if engine.dialect.name == "sqlite":
            assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert s.execute(text("PRAGMA foreign_key_check")).all() == []
        for batch in s.scalars(select(CouponBatch)).all():
            size, left = s.execute(
                select(func.sum(StockShard.size), func.sum(StockShard.remaining)).where(
                    StockShard.batch_id == batch.id
                )
            ).one()
            claimed = s.scalar(select(func.count()).where(Coupon.batch_id == batch.id))
            assert left >= 0 and size == batch.stock_total, (batch.id, size, left)
            assert size - left == claimed, (batch.id, size, left, claimed)
        twice = s.execute(
            select(Redemption.coupon_id)
            .where(Redemption.status == "done")
            .group_by(Redemption.coupon_id)
            .having(func.count() > 1)
        ).all()
        assert twice == []
        for sid in s.scalars(select(PointsEntry.subscriber_id).distinct()).all():
            points_invariants(s, sid)


def test_the_api_survives_fuzzing(
    app: FastAPI,
    sessions: sessionmaker[Session],
    engine: Engine,
    vault: Vault,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = _seed(sessions, vault)
    started = time.monotonic()
    with_key = _fuzz(
        app,
        headers={"Authorization": f"Bearer {seed['key']}"},
        modes=["positive", "negative", "seeded"],
        path=seed["path"],
    )
    anonymous = _fuzz(app, headers={}, modes=["anonymous"], path=seed["path"])
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\nfuzz[{engine.dialect.name}]: {with_key[0]} operations, "
            f"{with_key[1].total()} calls with a key {dict(sorted(with_key[1].items()))}, "
            f"{anonymous[1].total()} without {dict(anonymous[1])}, {elapsed:.0f} s"
        )
    assert with_key[2] + anonymous[2] == []
    _invariants(sessions, engine)
