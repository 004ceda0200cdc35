"""The claim gate groups concurrent requests and gives each its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import claim_gate
from perkflow.coupons.models import Coupon
from perkflow.coupons.service.claim_group import ClaimRequest, ClaimResult
from perkflow.errors import Conflict, PerkflowError
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.coupons.factories import ZONE, make_batch
from tests.factories import make_api_key, make_subscribers


def _request(sub: int) -> ClaimRequest:
    return ClaimRequest(
        actor=SYSTEM, batch_id=1, subscriber_id=sub, idempotency_key="k", device_id=None, zone=ZONE
    )


def test_requests_arriving_during_a_group_form_the_next_and_get_their_own_answers() -> None:
    groups: list[list[int]] = []

    def settle(requests: list[ClaimRequest]) -> list[ClaimResult]:
        groups.append([r.subscriber_id for r in requests])
        time.sleep(0.05)  # the transaction: others arrive meanwhile
        return [
            Conflict(f"odd {r.subscriber_id}") if r.subscriber_id % 2 else r.subscriber_id  # type: ignore[misc]
            for r in requests
        ]

    gate = claim_gate.ClaimGate(settle, max_group=8, writers=1)

    async def one(sub: int) -> object:
        try:
            return await gate.claim(_request(sub))
        except PerkflowError as exc:
            return exc.message

    async def main() -> list[object]:
        first = asyncio.ensure_future(one(0))
        await asyncio.sleep(0.01)  # a writer has taken request 0 and is settling it
        rest = await asyncio.gather(*(one(n) for n in range(1, 20)))
        return [await first, *rest]

    answers = asyncio.run(main())
    # Each caller gets the answer for its own request, errors raised as its own.
    assert answers == [f"odd {n}" if n % 2 else n for n in range(20)]
    # One writer: the first request alone, then those that came meanwhile in groups of at most 8.
    assert groups == [[0], list(range(1, 9)), list(range(9, 17)), list(range(17, 20))]


def test_a_failing_group_fails_its_own_callers_and_the_gate_goes_on() -> None:
    calls = 0

    def settle(requests: list[ClaimRequest]) -> list[ClaimResult]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database went away")
        return [r.subscriber_id for r in requests]  # type: ignore[misc]

    gate = claim_gate.ClaimGate(settle, writers=1)

    async def main() -> tuple[str, object]:
        try:
            await gate.claim(_request(1))
            first = "answered"
        except RuntimeError as exc:
            first = str(exc)
        return first, await gate.claim(_request(2))

    assert asyncio.run(main()) == ("database went away", 2)


@pytest.fixture
def batch_and_key(web_sessions: sessionmaker[Session], vault: Vault) -> tuple[int, str, list[int]]:
    with web_sessions() as s:
        ids = make_subscribers(s, vault, [(f"1330000{n:04d}", "GD", "GD01") for n in range(60)])
        batch = make_batch(s, stock_total=40, flash_sale=True, shard_count=4)
        key = make_api_key(s, scopes=["coupons:claim"])
    return batch.id, key, ids


def test_concurrent_http_claims_are_grouped_and_never_oversold(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    batch_and_key: tuple[int, str, list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch_id, key, ids = batch_and_key
    sizes: list[int] = []
    real_settle = claim_gate.settle

    def counting_settle(
        sessions: sessionmaker[Session], *, vault: Vault, requests: list[ClaimRequest]
    ) -> list[ClaimResult]:
        sizes.append(len(requests))
        return real_settle(sessions, vault=vault, requests=requests)

    monkeypatch.setattr("perkflow.coupons.api.settle", counting_settle)
    barrier = threading.Barrier(30)

    def claim(sid: int) -> tuple[int, str]:
        barrier.wait()
        r = client.post(
            f"/v1/coupon-batches/{batch_id}/claims",
            json={"subscriber_id": sid, "idempotency_key": f"http-{sid}"},
            headers={"authorization": f"Bearer {key}", "x-device-id": f"dev-{sid}"},
        )
        return r.status_code, r.json().get("error", {}).get("code", "")

    with ThreadPoolExecutor(30) as pool:
        first = list(pool.map(claim, ids[:30]))
    with ThreadPoolExecutor(30) as pool:
        second = list(pool.map(claim, ids[30:]))
    answers = first + second
    assert sum(code == 201 for code, _ in answers) == 40
    assert sum(err == "sold_out" for _, err in answers) == 20
    assert sum(sizes) == 60 and max(sizes) > 1, sizes
    with web_sessions() as s:
        slots = s.scalars(select(Coupon.slot).where(Coupon.batch_id == batch_id)).all()
        owners = s.scalars(select(Coupon.subscriber_id).where(Coupon.batch_id == batch_id)).all()
    assert sorted(slots) == list(range(40))
    assert len(set(owners)) == 40


def test_the_writers_setting_is_read_under_its_former_name_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from perkflow.settings import Settings

    monkeypatch.delenv("PERKFLOW_CLAIM_WRITERS", raising=False)
    monkeypatch.setenv("PERKFLOW_CLAIM_LANES", "3")
    assert Settings().claim_writers == 3
    monkeypatch.setenv("PERKFLOW_CLAIM_WRITERS", "2")
    assert Settings().claim_writers == 2
    assert Settings(claim_writers=4).claim_writers == 4
