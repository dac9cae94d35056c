"""The operator's own Prometheus metrics, served on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROLLOUTS = Gauge(
    "canaryguard_rollouts",
    "CanaryRollouts this operator tracks, by phase.",
    ["phase"],
)
DECISIONS = Counter(
    "canaryguard_decisions_total",
    "Decisions taken by the engine, by action and reason.",
    ["action", "reason"],
)
TICK_SECONDS = Histogram(
    "canaryguard_tick_duration_seconds",
    "Wall time of one analysis tick of one rollout (queries, engine and writes).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUERY_ERRORS = Counter(
    "canaryguard_prometheus_query_errors_total",
    "Prometheus queries that failed, by kind (unavailable or rejected).",
    ["kind"],
)
PAGES = Counter(
    "canaryguard_pages_total",
    "PagerDuty deliveries, by result (delivered, rejected, exhausted, secret_error).",
    ["result"],
)
WEIGHT_REASSERTS = Counter(
    "canaryguard_weight_reasserts_total",
    "VirtualService weights found changed by someone else and set back.",
)
