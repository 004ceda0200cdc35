"""The claim hot path's shortcuts keep their guarantees: key cache, rate count, terms cache."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from perkflow.cli.main import app
from perkflow.coupons import service as coupons
from perkflow.coupons import tasks
from perkflow.coupons.models import RateBucket
from perkflow.coupons.rules import RATE_PER_SUBSCRIBER, BatchStatus
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import ApiKey
from perkflow.org.rules import SYSTEM
from perkflow.web.auth import API_KEY_CACHE_S
from tests.coupons.factories import make_batch
from tests.factories import make_api_key, make_subscribers

PHONES = [("13812345678", "GD", "GD01"), ("13912345678", "GD", "GD02")]


@pytest.fixture
def frozen() -> Iterator[clock.FrozenClock]:
    # Mid-window, so no 10 s rate window boundary falls inside a test.
    fake = clock.FrozenClock(datetime(2026, 11, 23, 2, 0, 1, tzinfo=UTC))
    clock.set_clock(fake)
    yield fake
    clock.set_clock(None)


def _claim(client: TestClient, key: str, batch_id: int, sid: int, idem: str) -> tuple[int, str]:
    r = client.post(
        f"/v1/coupon-batches/{batch_id}/claims",
        json={"subscriber_id": sid, "idempotency_key": idem},
        headers={"authorization": f"Bearer {key}"},
    )
    return r.status_code, r.json().get("error", {}).get("code", "")


def test_a_revoked_api_key_stops_working_within_the_cache_ttl(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    vault: Vault,
    frozen: clock.FrozenClock,
) -> None:
    with web_sessions() as s:
        batch = make_batch(s, stock_total=10)
        key = make_api_key(s, scopes=["coupons:read"])
    url = f"/v1/coupon-batches/{batch.id}/stock"
    auth = {"authorization": f"Bearer {key}"}
    assert client.get(url, headers=auth).status_code == 200
    with web_sessions() as s:
        key_id = s.query(ApiKey.id).order_by(ApiKey.id.desc()).limit(1).scalar()
        org.revoke_api_key(s, actor=SYSTEM, key_id=int(key_id))
        s.commit()
    # Within the TTL this process may still accept it (the documented revocation latency) …
    frozen.advance(seconds=API_KEY_CACHE_S / 2)
    assert client.get(url, headers=auth).status_code == 200
    # … and never after it.
    frozen.advance(seconds=API_KEY_CACHE_S)
    r = client.get(url, headers=auth)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    # An unknown key is never cached as valid.
    bad = client.get(url, headers={"authorization": "Bearer pk_ch_nonsense"})
    assert bad.status_code == 401


def test_refused_claims_still_count_against_the_rate_limit(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    vault: Vault,
    frozen: clock.FrozenClock,
) -> None:
    with web_sessions() as s:
        ids = make_subscribers(s, vault, PHONES)
        paused = make_batch(s, stock_total=10)
        coupons.set_batch_status(s, actor=SYSTEM, batch_id=paused.id, status=BatchStatus.PAUSED)
        s.commit()
        key = make_api_key(s, scopes=["coupons:claim"])
    # Every attempt on a paused batch is refused (409) and rolled back — but counted.
    codes = [
        _claim(client, key, paused.id, ids[0], f"refused-{i:03d}")
        for i in range(RATE_PER_SUBSCRIBER)
    ]
    assert codes == [(409, "not_claimable")] * RATE_PER_SUBSCRIBER
    assert _claim(client, key, paused.id, ids[0], "refused-999") == (429, "too_many_requests")
    # The other subscriber is not affected, and a success counts in its own transaction.
    with web_sessions() as s:
        batch = make_batch(s, stock_total=10)
    assert _claim(client, key, batch.id, ids[1], "success-001")[0] == 201
    frozen.advance(seconds=10)  # the next window
    assert _claim(client, key, batch.id, ids[0], "success-002")[0] == 201


def test_a_paused_batch_refuses_claims_even_with_its_terms_cached(
    client: TestClient,
    web_sessions: sessionmaker[Session],
    vault: Vault,
    frozen: clock.FrozenClock,
) -> None:
    with web_sessions() as s:
        ids = make_subscribers(s, vault, PHONES)
        batch = make_batch(s, stock_total=10, limit_total=5)
        key = make_api_key(s, scopes=["coupons:claim", "coupons:read"])
    assert _claim(client, key, batch.id, ids[0], "cached-001")[0] == 201  # terms now cached
    with web_sessions() as s:
        coupons.set_batch_status(s, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.PAUSED)
        s.commit()
    assert _claim(client, key, batch.id, ids[1], "cached-002") == (409, "not_claimable")
    with web_sessions() as s:
        assert coupons.stock_levels(s, batch_ids=[batch.id])[batch.id] == (9, 10)
        coupons.set_batch_status(s, actor=SYSTEM, batch_id=batch.id, status=BatchStatus.ACTIVE)
        s.commit()
    assert _claim(client, key, batch.id, ids[1], "cached-003")[0] == 201


def test_finished_rate_windows_are_pruned_by_the_task_and_the_cli(
    sessions: sessionmaker[Session],
    frozen: clock.FrozenClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with sessions() as s:
        for sid in (1, 2, 3):
            coupons.admit_claim_attempt(s, subscriber_id=sid, device_id=f"dev-{sid}", batch_id=1)
        s.commit()
    frozen.advance(seconds=30)
    with sessions() as s:
        coupons.admit_claim_attempt(s, subscriber_id=1, device_id=None, batch_id=1)
        s.commit()
    assert tasks.prune_rate_limits(sessions) == 6  # 3 subscribers + 3 devices, two windows ago
    assert tasks.prune_rate_limits(sessions) == 0
    with sessions() as s:
        assert s.query(RateBucket).count() == 1  # the current window stays
    monkeypatch.setenv("PERKFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PERKFLOW_DATABASE_URL", raising=False)
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(app, ["coupons", "prune-rate-limits"])
    assert result.exit_code == 0 and "dropped 0" in result.output, result.output
