"""One bad claim in a group of concurrent claims fails only itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import claim_gate
from perkflow.coupons.models import Coupon
from perkflow.coupons.service import ClaimOutcome
from perkflow.coupons.service.claim_group import ClaimRequest
from perkflow.errors import ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_api_key, make_subscribers

BIG = 2**63


@pytest.fixture
def app_client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    url = engine.url.render_as_string(hide_password=False)
    app = create_app(settings.model_copy(update={"database_url": url}), engine=engine)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _claimed(sessions: sessionmaker[Session], batch_id: int) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).where(Coupon.batch_id == batch_id)) or 0


def test_a_poisoned_group_of_http_claims_answers_each_good_claim_201(
    app_client: TestClient, sessions: sessionmaker[Session], vault: Vault
) -> None:
    with sessions() as s:
        ids = make_subscribers(s, vault, [(f"1350000{n:04d}", "GD", "GD01") for n in range(36)])
        batch = make_batch(s, stock_total=100, flash_sale=True, shard_count=4)
        key = make_api_key(s, scopes=["coupons:claim"])
    # Each wave: 12 good claims and 2 that the ledger cannot store, sent at once.
    poison = [
        {"subscriber_id": BIG, "idempotency_key": "poison-big"},
        {"subscriber_id": ids[0], "idempotency_key": "poison-\u0000-nul"},
    ]
    answers: list[tuple[str, int]] = []
    for wave in range(3):
        bodies = [
            ("good", {"subscriber_id": sid, "idempotency_key": f"good-{sid}"})
            for sid in ids[wave * 12 : wave * 12 + 12]
        ] + [("bad", body) for body in poison]
        barrier = threading.Barrier(len(bodies))

        def claim(
            item: tuple[str, dict[str, object]], barrier: threading.Barrier = barrier
        ) -> tuple[str, int]:
            barrier.wait()
            r = app_client.post(
                f"/v1/coupon-batches/{batch.id}/claims",
                json=item[1],
                headers={"authorization": f"Bearer {key}"},
            )
            return item[0], r.status_code

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers += list(pool.map(claim, bodies))
    assert [code for kind, code in answers if kind == "good"] == [201] * 36
    assert [code for kind, code in answers if kind == "bad"] == [422] * 6
    assert _claimed(sessions, batch.id) == 36


def test_a_round_the_driver_refuses_is_settled_again_one_by_one(
    sessions: sessionmaker[Session], vault: Vault, ledger_url: str
) -> None:
    # Past the edge's types (as a bug or a new field might let a value through), a value the
    # driver refuses fails the whole round; its requests are then settled one by one.
    with sessions() as s:
        ids = make_subscribers(s, vault, [(f"1360000{n:04d}", "GD", "GD01") for n in range(13)])
        batch = make_batch(s, stock_total=100, flash_sale=True, shard_count=4)

    def request(sid: int, key: str) -> ClaimRequest:
        return ClaimRequest(
            actor=SYSTEM,
            batch_id=batch.id,
            subscriber_id=sid,
            idempotency_key=key,
            device_id=None,
            zone=ZONE,
        )

    group = [request(sid, f"good-{sid}") for sid in ids[:12]]
    group.insert(3, request(BIG, "poison-big"))
    group.insert(9, request(ids[12], "poison-\u0000-nul"))
    results = claim_gate.settle(sessions, vault=vault, requests=group)
    on_postgres = ledger_url.startswith("postgresql")
    assert isinstance(results[3], ValidationFailed)
    # PostgreSQL text cannot hold NUL; SQLite's can, so there it is an ordinary claim.
    assert isinstance(results[9], ValidationFailed if on_postgres else ClaimOutcome)
    good = [r for i, r in enumerate(results) if i not in (3, 9)]
    assert all(isinstance(r, ClaimOutcome) for r in good)
    assert _claimed(sessions, batch.id) == (12 if on_postgres else 13)
