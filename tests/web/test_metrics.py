"""What the SRE reads: /metrics after real traffic, its guard, JSON logs, /healthz per store."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine
from perkflow.kit.crypto import Vault
from perkflow.kit.logs import JsonFormatter, configure_logging
from perkflow.main import create_app
from perkflow.settings import Settings
from tests.coupons.factories import make_batch
from tests.factories import make_api_key, make_subscribers

LOCAL = ("127.0.0.1", 40001)
REMOTE = ("203.0.113.9", 40002)


def _client(settings: Settings, engine: Engine, *, peer: tuple[str, int] = LOCAL) -> TestClient:
    app = create_app(settings.model_copy(update={"database_url": str(engine.url)}), engine=engine)
    return TestClient(app, base_url="http://127.0.0.1", client=peer)


@pytest.fixture
def local(settings: Settings, web_engine: Engine) -> Iterator[TestClient]:
    with _client(settings, web_engine) as c:
        yield c


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_claim_and_time_requests_by_route_template(
    local: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        (sub,) = make_subscribers(s, vault, [("13200001111", "GD", "GD01")])
        batch = make_batch(s, stock_total=5)
        key = make_api_key(s, scopes=["coupons:claim"])
    before = local.get("/metrics").text
    url = f"/v1/coupon-batches/{batch.id}/claims"
    auth = {"authorization": f"Bearer {key}"}
    claim = {"subscriber_id": sub, "idempotency_key": "metrics-claim-1"}
    assert local.post(url, json=claim, headers=auth).status_code == 201
    assert local.post(url, json=claim, headers=auth).status_code == 200  # replayed
    assert local.get("/healthz").status_code == 200

    after = local.get("/metrics")
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    for outcome, n in (("claimed", 1), ("replayed", 1)):
        grew = _value(text, "perkflow_claims_total", outcome=outcome) - _value(
            before, "perkflow_claims_total", outcome=outcome
        )
        assert grew == n, outcome
    route = "/v1/coupon-batches/{batch_id}/claims"
    count = "perkflow_http_request_duration_seconds_count"
    assert _value(text, count, method="POST", route=route, status="201") >= 1
    assert _value(text, count, method="GET", route="/healthz", status="200") >= 1
    # Raw paths never become labels: the batch id stays out of every series.
    assert f"/v1/coupon-batches/{batch.id}/" not in text
    # The scrape-time gauges read the ledger.
    assert ("perkflow_outbox_messages", (("status", "pending"),)) in _samples(text)
    assert ("perkflow_dispatch_queue_contacts", (("status", "queued"),)) in _samples(text)
    assert ("perkflow_outbox_lag_seconds", ()) in _samples(text)


def test_metrics_are_refused_to_remote_callers_without_the_token(
    settings: Settings, web_engine: Engine
) -> None:
    with _client(settings, web_engine, peer=REMOTE) as remote:
        assert remote.get("/metrics").status_code == 403
    with _client(settings, web_engine) as local:
        # A request relayed by a proxy on this host is not the local scraper.
        assert local.get("/metrics", headers={"x-forwarded-for": "198.51.100.7"}).status_code == 403
        assert local.get("/metrics").status_code == 200


def test_with_a_token_metrics_need_it_from_everyone(settings: Settings, web_engine: Engine) -> None:
    guarded = settings.model_copy(update={"metrics_token": "scrape-secret-0123456789"})
    for peer in (LOCAL, REMOTE):
        with _client(guarded, web_engine, peer=peer) as c:
            assert c.get("/metrics").status_code == 403
            wrong = {"authorization": "Bearer nope"}
            assert c.get("/metrics", headers=wrong).status_code == 403
            right = {"authorization": "Bearer scrape-secret-0123456789"}
            assert c.get("/metrics", headers=right).status_code == 200


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("perkflow.access").level)
    configure_logging(json_lines=True)
    stream = io.StringIO()
    ours = [h for h in root.handlers if getattr(h, "_perkflow", False)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
    ours[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("perkflow.access").setLevel(saved[2])


def test_json_logs_write_one_object_per_access_line(
    local: TestClient, json_log: io.StringIO
) -> None:
    r = local.get("/healthz", headers={"x-request-id": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    access = [e for e in lines if e["logger"] == "perkflow.access"]
    assert len(access) == 1
    line = access[0]
    assert {"time", "level", "logger", "message"} <= line.keys()
    assert line["level"] == "info"
    assert line["request_id"] == "req-42"
    assert line["route"] == "/healthz" and line["method"] == "GET" and line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    # A request without an id gets one, on the response and in the log.
    generated = local.get("/login").headers["x-request-id"]
    assert generated and generated in json_log.getvalue()


def test_healthz_answers_200_when_both_stores_do(local: TestClient) -> None:
    r = local.get("/healthz")
    assert r.status_code == 200
    assert r.json()["ledger"] == "ok" and r.json()["mart"] == "ok"


def test_healthz_answers_503_naming_the_mart_when_its_folder_is_unreadable(
    settings: Settings, web_engine: Engine
) -> None:
    with _client(settings, web_engine) as c:
        mart_dir: Path = c.app.state.mart.root  # type: ignore[attr-defined]
        shutil.rmtree(mart_dir)
        mart_dir.write_text("not a folder")  # root reads any folder: make it not one
        r = c.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "failing" and body["ledger"] == "ok"
    assert body["mart"].startswith("failing")


def test_healthz_answers_503_naming_the_ledger_when_its_url_is_broken(
    settings: Settings, web_engine: Engine, tmp_path: Path
) -> None:
    broken = make_engine(f"sqlite:///{tmp_path}/no-such-dir/ledger.db")
    app = create_app(settings, engine=broken)
    with TestClient(app, base_url="http://127.0.0.1", client=LOCAL) as c:
        r = c.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["ledger"].startswith("failing") and body["mart"] == "ok"
    assert "no-such-dir" not in r.text  # the URL (it may hold a password) is never shown
