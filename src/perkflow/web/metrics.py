"""What the SRE reads: /metrics for Prometheus, access lines, and the store checks of /healthz.

The counters live in kit/metrics.py (the services increment them); this module times requests by
route template, computes the queue depths and lags at scrape time, and guards the endpoint.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perkflow.db import UTCDateTime
from perkflow.kit import metrics
from perkflow.kit.ids import token

if TYPE_CHECKING:
    from perkflow.mart import Mart

access_log = logging.getLogger("perkflow.access")
log = logging.getLogger(__name__)

# The flash-sale claim is answered before routing (coupons/claim_lane.py): its template by hand.
_LANE = re.compile(r"/v1/coupon-batches/[^/]+/claims")
_LANE_ROUTE = "/v1/coupon-batches/{batch_id}/claims"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A scrape must stay cheap on a ledger of millions of rows: each count stops at this many.
COUNT_CAP = 1_000_000


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is not None:
        return str(path)
    if _LANE.fullmatch(scope.get("path", "")):
        return _LANE_ROUTE
    # Unmatched paths (404s, probes) share one label: raw paths would grow without bound.
    return "unmatched"


class RequestMetrics:
    """Times every HTTP request by its route template and writes one access line for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before it answers
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else token(12)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            metrics.REQUEST_SECONDS.labels(
                method=scope["method"], route=route, status=str(status)
            ).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    route,
                    status,
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": route,
                        "path": scope.get("path"),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )


class LedgerGauges(Collector):
    """Queue depths and worker lag, read from the ledger when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        outbox = GaugeMetricFamily(
            "perkflow_outbox_messages", "Partner outbox messages by status.", labels=["status"]
        )
        lag = GaugeMetricFamily(
            "perkflow_outbox_lag_seconds",
            "How long the oldest due partner message has waited (0: none due).",
        )
        queue = GaugeMetricFamily(
            "perkflow_dispatch_queue_contacts",
            "Campaign contacts of running waves still to send, by status.",
            labels=["status"],
        )
        now = datetime.now(UTC)
        try:
            with self.engine.connect() as conn:
                for status in ("pending", "dead"):
                    # Counted through the (status, next_attempt_at) index, capped.
                    n = conn.execute(
                        text(
                            "SELECT count(*) FROM (SELECT 1 FROM grant_outbox"
                            " WHERE status = :s LIMIT :cap) AS capped"
                        ),
                        {"s": status, "cap": COUNT_CAP},
                    ).scalar_one()
                    outbox.add_metric([status], float(n))
                oldest = conn.execute(
                    text(
                        "SELECT min(next_attempt_at) AS oldest FROM grant_outbox"
                        " WHERE status = 'pending' AND next_attempt_at <= :now"
                    )
                    .bindparams(bindparam("now", type_=UTCDateTime()))
                    .columns(oldest=UTCDateTime()),
                    {"now": now},
                ).scalar_one()
                lag.add_metric([], _age_s(oldest, now))
                for status in ("queued", "sending"):
                    # Through (wave_id, status, id): only the running waves are looked at.
                    n = conn.execute(
                        text(
                            "SELECT count(*) FROM (SELECT 1 FROM campaign_contacts"
                            " WHERE wave_id IN (SELECT id FROM campaign_waves"
                            " WHERE status = 'running') AND status = :s LIMIT :cap) AS capped"
                        ),
                        {"s": status, "cap": COUNT_CAP},
                    ).scalar_one()
                    queue.add_metric([status], float(n))
        except Exception:
            # A scrape must answer even when the ledger does not; /healthz says what failed.
            log.warning("metrics: the ledger gauges could not be read", exc_info=True)
            return
        yield outbox
        yield lag
        yield queue


def _age_s(oldest: datetime | None, now: datetime) -> float:
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def may_read_metrics(request: Request, *, metrics_token: str | None) -> bool:
    """With a token, whoever presents it; without, only a local scraper reached directly."""
    if metrics_token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), metrics_token.encode())
    # A request relayed by a reverse proxy on this host looks local: it is not the scraper.
    forwarded = "x-forwarded-for" in request.headers or "forwarded" in request.headers
    return not forwarded and _is_loopback(request.client.host if request.client else None)


def install_metrics(app: FastAPI, *, engine: Engine) -> None:
    """Time every request (outermost middleware) and serve /metrics, guarded."""
    app.add_middleware(RequestMetrics)
    gauges = CollectorRegistry(auto_describe=True)
    gauges.register(LedgerGauges(engine))

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint(request: Request) -> Response:
        """Prometheus text exposition: the process's counters and the ledger's gauges."""
        if not may_read_metrics(request, metrics_token=request.app.state.settings.metrics_token):
            return PlainTextResponse(
                "metrics are served to loopback, or with PERKFLOW_METRICS_TOKEN", status_code=403
            )
        body = generate_latest(REGISTRY) + generate_latest(gauges)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def check_stores(*, engine: Engine, mart: Mart) -> dict[str, str]:
    """Each store's state for /healthz: "ok", or the kind of error it answered."""
    state: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        state["ledger"] = "ok"
    except Exception as exc:
        log.warning("healthz: the ledger failed", exc_info=True)
        state["ledger"] = f"failing: {type(exc).__name__}"  # never the URL: it may hold a password
    try:
        mart.check()
        state["mart"] = "ok"
    except Exception as exc:
        log.warning("healthz: the mart failed", exc_info=True)
        state["mart"] = f"failing: {type(exc).__name__}"
    return state
