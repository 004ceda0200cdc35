"""Webhook push against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from perkflow.channels.rules import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature_problem
from perkflow.channels.smtp_sink import free_port
from perkflow.channels.webhook import WebhookChannel
from tests.channels.helpers import msg

SECRET = "webhook-test-secret"


@dataclass
class Gateway:
    """What the push gateway received, and how it answers."""

    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            gw.received.append(
                {
                    "body": json.loads(body),
                    "key": self.headers[IDEMPOTENCY_HEADER],
                    "problem": signature_problem(
                        SECRET, body, self.headers[SIGNATURE_HEADER], now_ts=int(time.time())
                    ),
                }
            )
            self.send_response(gw.status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    gw.url = f"http://127.0.0.1:{server.server_address[1]}/push"
    yield gw
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def webhook(gateway: Gateway) -> Iterator[WebhookChannel]:
    channel = WebhookChannel(url=gateway.url, secret=SECRET, timeout_s=2)
    yield channel
    channel.close()


def test_the_gateway_receives_signed_json_once_per_message(
    gateway: Gateway, webhook: WebhookChannel
) -> None:
    results = webhook.send(None, [msg(1, "1001", "领取您的红包"), msg(2, "1002", "hello")])
    assert [(r.ok, r.delivered, r.message_ref) for r in results] == [
        (True, True, "pf-7-1"),
        (True, True, "pf-7-2"),
    ]
    assert [g["problem"] for g in gateway.received] == [None, None]
    assert [g["key"] for g in gateway.received] == ["pf-7-1", "pf-7-2"]
    first = gateway.received[0]["body"]
    assert first == {
        "key": "pf-7-1",
        "contact_id": 1,
        "campaign_id": 7,
        "subscriber_id": 1001,
        "address": "1001",
        "subject": "Hi",
        "body": "领取您的红包",
    }


def test_a_wrong_secret_does_not_verify(gateway: Gateway) -> None:
    channel = WebhookChannel(url=gateway.url, secret="not-the-secret")
    channel.send(None, [msg(1, "1001")])
    channel.close()
    assert gateway.received[0]["problem"] == "signature does not match"


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (400, False)])
def test_refusals(gateway: Gateway, webhook: WebhookChannel, status: int, retryable: bool) -> None:
    gateway.status = status
    [result] = webhook.send(None, [msg(1, "1001")])
    assert not result.ok and result.retryable is retryable
    assert f"HTTP {status}" in (result.error or "")


def test_a_refused_connection_is_retryable_for_the_whole_batch() -> None:
    channel = WebhookChannel(url=f"http://127.0.0.1:{free_port()}/push", secret=SECRET)
    results = channel.send(None, [msg(1, "1001"), msg(2, "1002")])
    channel.close()
    assert [(r.ok, r.retryable) for r in results] == [(False, True), (False, True)]
    assert "ConnectError" in (results[0].error or "")
