"""Istio's standard request metrics, as the destination sidecar reports them.

`istio_requests_total` and `istio_request_duration_milliseconds` (Envoy's default buckets),
with Istio's label names, written by the router (one request at a time) and by the synthetic
mode (many at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from canaryguard_testbed.exposition import CounterFamily, HistogramFamily, render

# Envoy's default histogram buckets in milliseconds (Istio sets none of its own).
DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip

LABEL_NAMES: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)

# The labels canary analysis reads, for meshes that drop the rest to save series size (the
# synthetic mode's default: the full set makes a 500-service scrape ~24 MB).
MINIMAL_LABEL_NAMES: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "response_flags",
)

CLUSTER = "Kubernetes"


def service_fqdn(host: str, namespace: str) -> str:
    """Istio's reading of a host: a short name is relative to `namespace`."""
    if "." in host:
        return host
    return f"{host}.{namespace}.svc.cluster.local"


@dataclass(frozen=True)
class Workload:
    """A destination workload: the pods of one version of a service."""

    service: str  # short service name, e.g. fraud-model
    namespace: str
    version: str  # the pods' `version` label, e.g. v2
    workload: str = ""  # deployment name; default <service>-<version>
    app: str = ""  # the pods' `app` label; default the service name
    service_account: str = ""  # default the service name

    @property
    def workload_name(self) -> str:
        return self.workload or f"{self.service}-{self.version}"

    @property
    def app_name(self) -> str:
        return self.app or self.service

    def labels(self) -> tuple[str, ...]:
        """Values of the destination_* labels, in LABEL_NAMES order."""
        sa = self.service_account or self.service
        return (
            self.workload_name,
            self.namespace,
            f"spiffe://cluster.local/ns/{self.namespace}/sa/{sa}",
            self.app_name,
            self.version,
            service_fqdn(self.service, self.namespace),
            self.service,
            self.namespace,
            self.app_name,
            self.version,  # canonical revision falls back to the `version` label
            CLUSTER,
        )


@dataclass(frozen=True)
class Source:
    """The client workload that sends the requests (the load generator)."""

    workload: str = "loadgen"
    namespace: str = "default"
    app: str = "loadgen"
    version: str = "unknown"

    def labels(self) -> tuple[str, ...]:
        """Values of the source_* labels, in LABEL_NAMES order."""
        return (
            self.workload,
            self.namespace,
            f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.workload}",
            self.app,
            self.version,
            self.app,
            "latest",
            CLUSTER,
        )


class IstioTelemetry:
    """The two Istio request metrics, reporter="destination", with all of Istio's labels or
    the subset `label_names` (in LABEL_NAMES order)."""

    def __init__(self, label_names: tuple[str, ...] = LABEL_NAMES) -> None:
        unknown = set(label_names) - set(LABEL_NAMES)
        if unknown:
            raise ValueError(f"not Istio labels: {sorted(unknown)}")
        self._pick = tuple(i for i, name in enumerate(LABEL_NAMES) if name in label_names)
        names = tuple(LABEL_NAMES[i] for i in self._pick)
        self.requests = CounterFamily("istio_requests_total", "Total requests.", names)
        self.duration = HistogramFamily(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds.",
            names,
            DURATION_BUCKETS_MS,
        )
        self._keys: dict[tuple[Source, Workload, int, str], tuple[str, ...]] = {}

    def _key(self, source: Source, dest: Workload, code: int, flags: str) -> tuple[str, ...]:
        cache_key = (source, dest, code, flags)
        key = self._keys.get(cache_key)
        if key is None:
            full = (
                "destination",
                *source.labels(),
                *dest.labels(),
                "http",
                str(code),
                "",  # grpc_response_status: empty for plain HTTP, as Istio writes it
                flags,
                "mutual_tls",
            )
            key = tuple(full[i] for i in self._pick)
            self._keys[cache_key] = key
        return key

    def record(
        self, source: Source, dest: Workload, code: int, duration_ms: float, flags: str = "-"
    ) -> None:
        """One request answered by `dest` with HTTP `code` after `duration_ms`."""
        key = self._key(source, dest, code, flags)
        self.requests.inc(key)
        self.duration.observe(key, duration_ms)

    def record_many(
        self,
        source: Source,
        dest: Workload,
        code: int,
        bucket_counts: Iterable[float],
        duration_sum_ms: float,
        flags: str = "-",
    ) -> None:
        """Many requests at once: their count per duration bucket (+Inf last) and total time."""
        key = self._key(source, dest, code, flags)
        counts = list(bucket_counts)
        self.requests.inc(key, sum(counts))
        self.duration.add_counts(key, counts, duration_sum_ms)

    def render(self) -> bytes:
        return render((self.requests, self.duration))
