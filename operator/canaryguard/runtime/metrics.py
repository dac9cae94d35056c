"""The operator's own Prometheus metrics, served on /metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from canaryguard.core.status import Status

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
PROMETHEUS_QUERIES = Counter(
    "canaryguard_prometheus_queries_total",
    "Queries sent to Prometheus (retries not counted), by whether they answer a batch of "
    "rollouts' builtin queries (batched) or one rollout's (false).",
    ["batched"],
)
QUERY_BATCH_MEMBERS = Histogram(
    "canaryguard_query_batch_members",
    "Distinct rollout queries answered by one batched Prometheus query.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
API_REQUESTS = Counter(
    "canaryguard_api_requests_total",
    "Kubernetes API calls made by ticks (kopf's watch aside), by resource and verb.",
    ["resource", "verb"],
)
TICK_LAG = Histogram(
    "canaryguard_tick_lag_seconds",
    "How late a tick starts after it was due (waiting for a slot included).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PAGES = Counter(
    "canaryguard_pages_total",
    "PagerDuty deliveries, by result (delivered, rejected, exhausted, secret_error).",
    ["result"],
)
RESOLVES = Counter(
    "canaryguard_resolves_total",
    "PagerDuty resolves of an earlier revision's incident, by result (delivered, rejected, "
    "exhausted, secret_error).",
    ["result"],
)
TICK_ERRORS = Counter(
    "canaryguard_tick_errors_total",
    "Ticks that failed before a decision, by reason (api_<status>, network, timeout, bug).",
    ["reason"],
)
STATUS_WRITES = Counter(
    "canaryguard_status_writes_total",
    "Ticks whose status changed, by result: written, or deferred (only heartbeat values "
    "changed, held back until --status-heartbeat has passed).",
    ["result"],
)
LEADER = Gauge(
    "canaryguard_leader",
    "1 while this replica ticks the rollouts (it holds the leader Lease, or runs without "
    "leader election), 0 while it stands by.",
)
WEIGHT_REASSERTS = Counter(
    "canaryguard_weight_reasserts_total",
    "VirtualService weights found changed by someone else and set back.",
)
# Every result and kind starts at 0: a series born at 1 hides its first increase from
# rate()/increase(), so the first failed page would never alert.
for _result in ("delivered", "rejected", "exhausted", "secret_error"):
    PAGES.labels(result=_result)
for _kind in ("unavailable", "rejected"):
    QUERY_ERRORS.labels(kind=_kind)
for _reason in ("bug", "network", "timeout"):
    TICK_ERRORS.labels(reason=_reason)
for _result in ("written", "deferred"):
    STATUS_WRITES.labels(result=_result)
for _batched in ("true", "false"):
    PROMETHEUS_QUERIES.labels(batched=_batched)

CANARY_WEIGHT = Gauge(
    "canaryguard_canary_weight",
    "Percent of the driven routes' traffic the operator last set for the canary.",
    ["namespace", "rollout"],
)
SLO_VALUE = Gauge(
    "canaryguard_slo_value",
    "Latest value of each SLO, as judged, for the baseline and the canary (side).",
    ["namespace", "rollout", "slo", "side"],
)

# The SLO series set per rollout, so forgetting a rollout drops exactly its series.
_slo_series: dict[tuple[str, str], set[tuple[str, str]]] = {}


def record_rollout(namespace: str, rollout: str, status: Status) -> None:
    """Publish a rollout's canary weight and SLO values from its status.

    A value the status does not hold (never observed, NaN, no data) drops its series, so a
    graph shows a gap rather than a stale number.
    """
    if status.canary_weight is None or status.dry_run:  # a dry run sets no weight
        _remove(CANARY_WEIGHT, namespace, rollout)
    else:
        CANARY_WEIGHT.labels(namespace=namespace, rollout=rollout).set(status.canary_weight)
    wanted: set[tuple[str, str]] = set()
    for slo in status.slos:
        for side, value in (("baseline", slo.baseline), ("canary", slo.canary)):
            if value is None:
                continue
            wanted.add((slo.name, side))
            SLO_VALUE.labels(namespace=namespace, rollout=rollout, slo=slo.name, side=side).set(
                value
            )
    for slo_name, side in _slo_series.get((namespace, rollout), set()) - wanted:
        _remove(SLO_VALUE, namespace, rollout, slo_name, side)
    _slo_series[(namespace, rollout)] = wanted


def forget_rollout(namespace: str, rollout: str) -> None:
    """Drop every per-rollout series of a deleted rollout."""
    _remove(CANARY_WEIGHT, namespace, rollout)
    for slo_name, side in _slo_series.pop((namespace, rollout), set()):
        _remove(SLO_VALUE, namespace, rollout, slo_name, side)


def _remove(metric: Gauge, *labels: str) -> None:
    # Older prometheus_client versions raise KeyError for a series that is not there.
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
