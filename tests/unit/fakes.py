"""In-memory fakes of the controller's ports (canaryguard.core.ports), for driving the
controller through its public API.

Each fake keeps what it was asked in plain lists, and can be told to fail. All four can
share one `Journal`, which records the writes that leave the operator (weights, status,
pages, events) in the order they happened, so tests can assert the crash-safe ordering.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from canaryguard.adapters import gateway
from canaryguard.adapters.istio import (
    plan_routes,
    read_weights,
    route_labels,
    weights_match,
    with_weights,
)
from canaryguard.core.access import (
    SECRET_OPT_IN,
    Allowlist,
    parse_address,
    secret_allows,
    secret_not_allowed,
)
from canaryguard.core.observations import Observations
from canaryguard.core.paging import DeliveryOutcome, DeliveryResult, PageEvent
from canaryguard.core.ports import (
    MetricsUnavailable,
    QueryRefused,
    RouteNotFound,
    Sample,
    SecretError,
    SecretNotAllowed,
    WeightChange,
    Weights,
)
from canaryguard.core.queries import plan
from canaryguard.core.spec import Destination, Spec, parse_spec
from canaryguard.runtime.controller import ALLOW_PROMETHEUS_FLAG, Controller, Settings
from tests.unit.scenario import T0, at, spec_dict

Key = tuple[str, str]  # (namespace, name)


class InjectedFault(Exception):
    """A failure a test asked a fake for (an API error, a crash in the middle of a call)."""


class Journal:
    """What left the operator, in order: ("weights", "b/c"), ("status", phase, page state),
    ("page", dedup key), ("event", reason)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, ...]] = []

    def add(self, *entry: str) -> None:
        self.entries.append(entry)

    def of(self, *kinds: str) -> list[tuple[str, ...]]:
        """The entries of these kinds, in order."""
        return [e for e in self.entries if e[0] in kinds]


def apply_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch: null removes a key."""
    out = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = apply_merge_patch(out[key], value)
        elif isinstance(value, Mapping):
            out[key] = apply_merge_patch({}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- Kubernetes -------------------------------------------------------------------------------


class Event(NamedTuple):
    type: str
    reason: str
    message: str


class FakeKube:
    """Rollouts, Secrets and Events in memory. Status patches are merge patches applied to
    the stored object, each bumping its resourceVersion, as the API server does."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal or Journal()
        self.objects: dict[Key, dict[str, Any]] = {}
        self.secrets: dict[Key, dict[str, str]] = {}
        self.secret_annotations: dict[Key, dict[str, str]] = {}
        self.secret_reads: list[tuple[str, str, str]] = []  # (namespace, name, rollout)
        self.events: list[Event] = []
        self.patches: list[dict[str, Any]] = []
        self._version = 0
        self._skip = 0
        self._failures = 0
        self._error: Exception | None = None
        self.list_error: Exception | None = None
        self.while_listing: Callable[[], None] | None = None  # runs after the list was taken

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a rollout (replacing one of the same name); returns it as stored."""
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("generation", 1)
        self.objects[(meta["namespace"], meta["name"])] = obj
        self._bump(obj)
        return copy.deepcopy(obj)

    def get(self, namespace: str = "ml", name: str = "scorer") -> dict[str, Any]:
        """The rollout as the API server would serve it now."""
        return copy.deepcopy(self.objects[(namespace, name)])

    def annotate(
        self, key: str, value: str, namespace: str = "ml", name: str = "scorer"
    ) -> dict[str, Any]:
        """Set an annotation (no new generation, as for real); returns the object."""
        obj = self.objects[(namespace, name)]
        obj["metadata"].setdefault("annotations", {})[key] = value
        self._bump(obj)
        return copy.deepcopy(obj)

    def add_secret(
        self, namespace: str, name: str, data: Mapping[str, str], allowed: str | None = "*"
    ) -> None:
        """A Secret made available to the rollouts `allowed` names (None: not opted in)."""
        self.secrets[(namespace, name)] = dict(data)
        self.secret_annotations[(namespace, name)] = (
            {} if allowed is None else {SECRET_OPT_IN: allowed}
        )

    def fail_patches(self, count: int = 1, skip: int = 0, error: Exception | None = None) -> None:
        """Let the next `skip` status patches through, then fail `count` of them."""
        self._skip, self._failures = skip, count
        self._error = error or InjectedFault("status patch failed (injected)")

    def status(self, namespace: str = "ml", name: str = "scorer") -> dict[str, Any]:
        return copy.deepcopy(self.objects[(namespace, name)].get("status") or {})

    def reasons(self) -> list[tuple[str, str]]:
        """The Events posted, as (type, reason)."""
        return [(e.type, e.reason) for e in self.events]

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        if self._skip:
            self._skip -= 1
        elif self._failures:
            self._failures -= 1
            assert self._error is not None
            raise self._error
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise InjectedFault(f"canaryrollouts {namespace}/{name} not found")
        self.patches.append(copy.deepcopy(dict(patch)))
        obj["status"] = apply_merge_patch(obj.get("status") or {}, patch)
        self._bump(obj)
        page = obj["status"].get("page") or {}
        self.journal.add("status", str(obj["status"].get("phase")), str(page.get("state")))
        return copy.deepcopy(obj)

    async def read_secret(self, namespace: str, name: str, key: str, rollout: str) -> str:
        """As the Kubernetes adapter reads: the opt-in first, then the key."""
        self.secret_reads.append((namespace, name, rollout))
        data = self.secrets.get((namespace, name))
        if data is None:
            raise SecretError(f"Secret {namespace}/{name} not found")
        if not secret_allows(self.secret_annotations.get((namespace, name)), rollout):
            raise SecretNotAllowed(secret_not_allowed(namespace, name, rollout))
        if key not in data:
            raise SecretError(f"Secret {namespace}/{name} has no key {key!r}")
        return data[key]

    async def post_event(
        self, rollout: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        self.events.append(Event(type_, reason, message))
        self.journal.add("event", reason)

    async def list_rollouts(self, namespaces: Sequence[str]) -> list[dict[str, Any]]:
        if self.list_error is not None:
            raise self.list_error
        taken = [
            copy.deepcopy(obj)
            for (namespace, _), obj in self.objects.items()
            if not namespaces or namespace in namespaces
        ]
        await asyncio.sleep(0)  # the answer is on its way
        if self.while_listing is not None:
            self.while_listing()
        return taken

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)


# --- routing ----------------------------------------------------------------------------------


V1 = Destination("scorer", "v1")
V2 = Destination("scorer", "v2")


def virtual_service(
    baseline: int = 100, canary: int = 0, namespace: str = "ml", name: str = "scorer"
) -> dict[str, Any]:
    """The scenario's VirtualService: one http route to scorer v1 and v2."""
    dests = [
        {"destination": {"host": "scorer", "subset": "v1"}, "weight": baseline},
        {"destination": {"host": "scorer", "subset": "v2"}, "weight": canary},
    ]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": {"hosts": ["scorer"], "http": [{"name": "primary", "route": dests}]},
    }


class FakeRouter:
    """VirtualServices in memory, driven by the real adapter's pure planning functions, so
    what it writes (and refuses) is what the Istio adapter would."""

    kind = "VirtualService"

    def plan(
        self,
        obj: Mapping[str, Any],
        selectors: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
    ) -> list[int]:
        return plan_routes(obj, [str(s) for s in selectors], baseline, canary)

    def read(
        self,
        obj: Mapping[str, Any],
        routes: Sequence[int],
        baseline: Destination,
        canary: Destination,
    ) -> list[Weights]:
        return read_weights(obj, routes, baseline, canary)

    def labels(self, obj: Mapping[str, Any], routes: Sequence[int]) -> str:
        return route_labels(obj, routes)

    with_weights = staticmethod(with_weights)

    def __init__(self, *services: Mapping[str, Any], journal: Journal | None = None) -> None:
        self.journal = journal or Journal()
        self.services: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[int, int]] = []
        self.mirrors: list[int] = []  # the mirror percent of each write
        self._failures = 0
        self._error: Exception | None = None
        self._lost_answers = 0
        for vs in services:
            meta = vs["metadata"]
            self.services[(meta["namespace"], meta["name"])] = copy.deepcopy(dict(vs))

    def fail_writes(self, count: int = 1, error: Exception | None = None) -> None:
        """Fail the next `count` weight writes that would change something."""
        self._failures = count
        self._error = error or InjectedFault("VirtualService write failed (injected)")

    def lose_answers(self, count: int = 1) -> None:
        """Carry out the next `count` weight writes that change something, then fail them
        as if the answer were lost (the API server died after committing, a cut
        connection)."""
        self._lost_answers = count

    def weights(
        self,
        namespace: str = "ml",
        name: str = "scorer",
        baseline: Destination = V1,
        canary: Destination = V2,
    ) -> list[tuple[int | None, int | None]]:
        """The split each driven route carries now, as (baseline, canary)."""
        vs = self.services[(namespace, name)]
        routes = self.plan(vs, (), baseline, canary)
        return [(w.baseline, w.canary) for w in self.read(vs, routes, baseline, canary)]

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        vs = self.services.get((namespace, name))
        if vs is None:
            raise RouteNotFound(f"{self.kind} {namespace}/{name} not found")
        return copy.deepcopy(vs)

    async def set_weights(
        self,
        namespace: str,
        name: str,
        route_names: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
        baseline_weight: int,
        canary_weight: int,
        mirror: int = 0,
    ) -> WeightChange:
        vs = await self.get(namespace, name)
        routes = self.plan(vs, route_names, baseline, canary)
        before: list[Weights] = self.read(vs, routes, baseline, canary)
        if weights_match(before, baseline_weight, canary_weight, mirror):
            return WeightChange(before, changed=False)
        if self._failures:
            self._failures -= 1
            assert self._error is not None
            raise self._error
        updated = self.with_weights(
            vs, routes, baseline, canary, baseline_weight, canary_weight, mirror
        )
        updated["metadata"]["resourceVersion"] = str(int(vs["metadata"]["resourceVersion"]) + 1)
        self.services[(namespace, name)] = updated
        self.writes.append((baseline_weight, canary_weight))
        self.mirrors.append(mirror)
        self.journal.add(
            "weights",
            f"{baseline_weight}/{canary_weight}" + (f" mirror {mirror}%" if mirror else ""),
        )
        if self._lost_answers:
            self._lost_answers -= 1
            raise InjectedFault("VirtualService written, answer lost (injected)")
        return WeightChange(before, changed=True)


class FakeHTTPRouter(FakeRouter):
    """HTTPRoutes in memory, driven by the Gateway API adapter's pure planning functions."""

    kind = "HTTPRoute"

    def plan(
        self,
        obj: Mapping[str, Any],
        selectors: Sequence[str | int],
        baseline: Destination,
        canary: Destination,
    ) -> list[int]:
        return gateway.plan_routes(obj, selectors, baseline, canary)

    def read(
        self,
        obj: Mapping[str, Any],
        routes: Sequence[int],
        baseline: Destination,
        canary: Destination,
    ) -> list[Weights]:
        return gateway.read_weights(obj, routes, baseline, canary)

    def labels(self, obj: Mapping[str, Any], routes: Sequence[int]) -> str:
        return gateway.rule_labels(obj, routes)

    with_weights = staticmethod(gateway.with_weights)


# --- metrics ----------------------------------------------------------------------------------

Answer = Callable[[str], list[Sample]]


def no_data(promql: str) -> list[Sample]:
    """Prometheus up, with no series for anything."""
    return []


def unavailable(message: str = "connection refused") -> Answer:
    """Every query fails for lack of Prometheus (an outage)."""

    def answer(promql: str) -> list[Sample]:
        raise MetricsUnavailable(message)

    return answer


def refused(message: str = "400 bad_data: parse error") -> Answer:
    """Prometheus refuses every query (a spec problem)."""

    def answer(promql: str) -> list[Sample]:
        raise QueryRefused(message)

    return answer


def answers_for(spec: Spec, observations: Observations) -> Answer:
    """What Prometheus answers when each SLO of `spec` observes what `observations` say:
    the value and request-count queries of `canaryguard.core.queries.plan`, with the series
    labelled as the real queries label them. An SLO observed as unavailable fails its
    queries; a query the plan does not make is a test bug."""
    table: dict[str, list[Sample] | Exception] = {}
    for name, queries in plan(spec).items():
        seen = observations.slos.get(name)
        if seen is None:
            continue
        if seen.unavailable:
            failure = MetricsUnavailable(seen.error or "unavailable")
            table[queries.value] = table[queries.samples] = failure
            continue
        table[queries.value] = _series(queries.value_key, seen.baseline, seen.canary)
        table[queries.samples] = _series(
            queries.samples_key, seen.baseline_samples, seen.canary_samples
        )

    def answer(promql: str) -> list[Sample]:
        if promql not in table:
            raise AssertionError(f"unexpected query: {promql}")
        found = table[promql]
        if isinstance(found, Exception):
            raise found
        return list(found)

    return answer


def _series(
    key: tuple[str, str, str], baseline: float | None, canary: float | None
) -> list[Sample]:
    label, baseline_value, canary_value = key
    return [
        Sample({label: side}, value)
        for side, value in ((baseline_value, baseline), (canary_value, canary))
        if value is not None
    ]


class Connection(NamedTuple):
    address: str
    timeout: float
    headers: dict[str, str]
    retry_budget: float


class FakeSource:
    """One connection's source: every query is recorded and answered by the connector's
    current `answer`."""

    def __init__(self, connector: FakeMetrics) -> None:
        self._connector = connector

    async def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        self._connector.queries.append(promql)
        self._connector.times.append(at)
        return self._connector.answer(promql)


class FakeMetrics:
    """A MetricsConnector whose sources answer with `answer(promql)` (replace it between
    ticks to change what Prometheus says); records connections and queries."""

    def __init__(self, answer: Answer = no_data) -> None:
        self.answer = answer
        self.connections: list[Connection] = []
        self.queries: list[str] = []
        self.times: list[datetime | None] = []  # each query's evaluation time, in order

    def connect(
        self, address: str, timeout: float, headers: Mapping[str, str], retry_budget: float
    ) -> FakeSource:
        self.connections.append(Connection(address, timeout, dict(headers), retry_budget))
        return FakeSource(self)


# --- paging -----------------------------------------------------------------------------------


class Trigger(NamedTuple):
    url: str
    routing_key: str
    event: PageEvent


_HTTP_STATUS = {
    DeliveryOutcome.DELIVERED: 202,
    DeliveryOutcome.REJECTED: 400,
    DeliveryOutcome.EXHAUSTED: 503,
}


class FakePager:
    """Records every trigger and answers with the given results in turn (the last one
    repeats; none given: delivered). A result may be a DeliveryOutcome, a full
    DeliveryResult, or an exception to raise (a crash in the middle of the send)."""

    def __init__(
        self,
        *results: DeliveryOutcome | DeliveryResult | Exception,
        journal: Journal | None = None,
    ) -> None:
        self.journal = journal or Journal()
        self.triggers: list[Trigger] = []
        self.resolves: list[tuple[str, str, str]] = []  # (url, routing key, dedup key)
        self._results = list(results) or [DeliveryOutcome.DELIVERED]

    @property
    def dedup_keys(self) -> list[str]:
        return [t.event.dedup_key for t in self.triggers]

    async def trigger(self, url: str, routing_key: str, event: PageEvent) -> DeliveryResult:
        result = self._results.pop(0) if len(self._results) > 1 else self._results[0]
        if isinstance(result, Exception):
            raise result
        self.triggers.append(Trigger(url, routing_key, event))
        self.journal.add("page", event.dedup_key)
        return self._answer(result, event.dedup_key)

    async def resolve(self, url: str, routing_key: str, dedup_key: str) -> DeliveryResult:
        result = self._results.pop(0) if len(self._results) > 1 else self._results[0]
        if isinstance(result, Exception):
            raise result
        self.resolves.append((url, routing_key, dedup_key))
        self.journal.add("resolve", dedup_key)
        return self._answer(result, dedup_key)

    @staticmethod
    def _answer(result: DeliveryOutcome | DeliveryResult, dedup_key: str) -> DeliveryResult:
        if isinstance(result, DeliveryResult):
            return result
        delivered = result is DeliveryOutcome.DELIVERED
        return DeliveryResult(
            outcome=result,
            attempts=1,
            status=_HTTP_STATUS[result],
            message="accepted" if delivered else f"HTTP {_HTTP_STATUS[result]} (fake)",
            dedup_key=dedup_key if delivered else None,
        )


# --- all of them together -----------------------------------------------------------------------

# The scenario's Prometheus allowed; PagerDuty's default.
SETTINGS = Settings(
    allow_prometheus=Allowlist((parse_address("http://prometheus:9090"),), ALLOW_PROMETHEUS_FLAG)
)


def rollout_body(
    spec: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    """The CanaryRollout `ml/scorer` as created (the scenario's spec by default)."""
    body: dict[str, Any] = {
        "apiVersion": "canaryguard.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {
            "name": "scorer",
            "namespace": "ml",
            "uid": "0d6f3c1e-0000-4000-8000-000000000001",
            "generation": generation,
        },
        "spec": copy.deepcopy(dict(spec if spec is not None else spec_dict())),
    }
    if annotations:
        body["metadata"]["annotations"] = dict(annotations)
    if status is not None:
        body["status"] = copy.deepcopy(dict(status))
    return body


@dataclass
class World:
    """The fakes of one cluster holding the rollout `ml/scorer` (the scenario's spec unless
    given), sharing a journal and a clock that tests move by hand.

    `controller()` builds a Controller on them; call it again for a fresh one, as after an
    operator restart (everything it knew is gone, the world stays)."""

    spec_data: dict[str, Any] = field(default_factory=spec_dict)
    now: datetime = T0
    journal: Journal = field(default_factory=Journal)
    kube: FakeKube = field(init=False)
    router: FakeRouter = field(init=False)
    metrics: FakeMetrics = field(init=False)
    pager: FakePager = field(init=False)

    def __post_init__(self) -> None:
        self.kube = FakeKube(self.journal)
        self.kube.create(rollout_body(self.spec_data))
        self.kube.add_secret("ml", "pd", {"key": "routing-key-0123"})
        self.router = FakeRouter(virtual_service(), journal=self.journal)
        self.metrics = FakeMetrics()
        self.pager = FakePager(journal=self.journal)

    @property
    def spec(self) -> Spec:
        return parse_spec(self.kube.get())

    def controller(self) -> Controller:
        """A Controller on these fakes that has seen the rollout (as from the watch)."""
        controller = Controller(
            self.kube, self.router, self.metrics, self.pager, SETTINGS, clock=lambda: self.now
        )
        controller.seen("ADDED", self.kube.get())
        return controller

    def tick(
        self, controller: Controller, seconds: float, observations: Observations | None = None
    ) -> None:
        """At T0 + `seconds`, with Prometheus answering `observations` (if given), run one
        tick of the rollout as stored now; raises what the tick raises."""
        self.now = at(seconds)
        if observations is not None:
            self.metrics.answer = answers_for(self.spec, observations)
        asyncio.run(controller.tick(self.kube.get()))
