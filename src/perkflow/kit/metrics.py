"""The Prometheus counters the code increments, in one place (served by web/metrics.py at /metrics).

A counter counts work as it happens, inside a transaction that may still roll back: read them as
rates of attempts, and the ledger as the truth. Depths and lags are gauges computed at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Buckets from a cached claim (a few ms) to a slow console report (tens of seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram(
    "perkflow_http_request_duration_seconds",
    "HTTP request latency by route template (not raw path), method and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
CLAIMS = Counter(
    "perkflow_claims_total",
    "Coupon claims through the claim gate: claimed, replayed, or the error code refused with.",
    ["outcome"],
)
GRANTS_ISSUED = Counter(
    "perkflow_grants_issued_total",
    "Grants created (replays of an idempotency key not counted).",
    ["path"],
)
DISPATCHED = Counter(
    "perkflow_dispatched_total",
    "Campaign messages handed to a channel, by channel and outcome (sent or failed).",
    ["channel", "outcome"],
)
PARTNER_ERRORS = Counter(
    "perkflow_partner_errors_total",
    "Partner deliveries that failed: retried later, or dead after the last attempt.",
    ["partner", "outcome"],
)
