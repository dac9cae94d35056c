"""The CanaryRollout spec as typed, immutable values, and its parser.

The CRD schema is the first line of validation; `parse_spec` is the second. It applies the
same defaults as the schema (so raw YAML, backtests and tests see what the API server would
store), re-checks every cross-field rule, and checks what the schema cannot: durations,
regular expressions, query templates (parsed as PromQL, alone and inside the query the
operator builds around them). Every error names the field it is about.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from canaryguard.core.access import AddressError, parse_address
from canaryguard.core.durations import format_duration, parse_duration
from canaryguard.core.manual import InvalidRequest, ManualRequest, parse_request
from canaryguard.core.paging import SEVERITIES, Severity
from canaryguard.core.promql import LABEL_NAME
from canaryguard.core.templates import regex_problem, template_problem, wrapped_problem

Direction = Literal["HigherIsWorse", "LowerIsWorse"]
OutagePolicy = Literal["rollback", "pause"]

DIRECTIONS: tuple[Direction, ...] = ("HigherIsWorse", "LowerIsWorse")
OUTAGE_POLICIES: tuple[OutagePolicy, ...] = ("rollback", "pause")

MAX_STEPS = 20
MAX_SLOS = 20
MAX_ROUTES = 16
MAX_SELECTOR_LABELS = 16

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MS = timedelta(milliseconds=1)
_SECOND = timedelta(seconds=1)


class SpecError(ValueError):
    """An invalid CanaryRollout spec; `path` names the field (`spec.steps[1].weight`)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Destination:
    """A destination of the VirtualService: a host and an optional DestinationRule subset."""

    host: str
    subset: str | None = None

    def __str__(self) -> str:
        return f"{self.host}/{self.subset}" if self.subset else self.host


@dataclass(frozen=True)
class VirtualServiceRef:
    """The VirtualService to drive (same namespace) and the http routes whose weights move.

    Empty `routes` means every http route that sends traffic to the baseline.
    """

    name: str
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class HTTPRouteRef:
    """The Gateway API HTTPRoute to drive (same namespace) and the rules whose weights move:
    each a rule `name` (string) or an index into the route's `spec.rules` (integer).

    Empty `rules` means every rule with a backendRef to the baseline Service. The baseline
    and canary `host` name the Services of the backendRefs; there are no subsets.
    """

    name: str
    rules: tuple[str | int, ...] = ()


@dataclass(frozen=True)
class RouteTarget:
    """The routing object a rollout drives, whichever its kind: what the router needs."""

    kind: str  # "VirtualService" or "HTTPRoute"
    name: str
    selectors: tuple[str | int, ...]
    field: str  # where the spec names it: spec.virtualService or spec.httpRoute
    selector_key: str  # the selectors' key under `field`: routes or rules


@dataclass(frozen=True)
class SecretKeyRef:
    """A key in a Secret in the rollout's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class PrometheusSpec:
    """Where the metrics come from and how long a query may take."""

    address: str
    timeout: timedelta = timedelta(seconds=5)
    headers_secret_ref: SecretKeyRef | None = None


@dataclass(frozen=True)
class MetricsSpec:
    """How the two versions appear in Prometheus."""

    prometheus: PrometheusSpec
    selector: Mapping[str, str]
    baseline_version: str
    canary_version: str
    version_label: str = "destination_version"


@dataclass(frozen=True)
class Step:
    """One step of the schedule: the canary's traffic share and how long it is held."""

    weight: int
    hold: timedelta


@dataclass(frozen=True)
class Margin:
    """How much worse than the baseline the canary may be; a breach exceeds every part set.

    `relative` is a fraction: 0.5 means 50% worse than the baseline.
    """

    absolute: float | None = None
    relative: float | None = None

    def describe(self) -> str:
        """Human form for messages and pages, e.g. `absolute 0.01, relative 50%`."""
        parts = []
        if self.absolute is not None:
            parts.append(f"absolute {self.absolute:g}")
        if self.relative is not None:
            parts.append(f"relative {self.relative * 100:g}%")
        return ", ".join(parts)


@dataclass(frozen=True)
class ErrorRate:
    """Builtin: share of responses whose `response_code` matches the regex `codes`."""

    codes: str = "5.."


@dataclass(frozen=True)
class Latency:
    """Builtin: a latency quantile (in milliseconds) from Istio's duration histogram."""

    quantile: float


@dataclass(frozen=True)
class Query:
    """A PromQL template (with `{{ version }}`, optionally `{{ lookback }}`) per version.

    `samples_template` counts each version's evidence; None means the service's Istio
    request count.
    """

    template: str
    samples_template: str | None = None


SloKind = ErrorRate | Latency | Query


@dataclass(frozen=True)
class Slo:
    """One service level objective, judged canary against baseline at every tick.

    `min_requests` is already resolved: the SLO's own value or the analysis default.
    """

    name: str
    kind: SloKind
    min_requests: int
    direction: Direction = "HigherIsWorse"
    margin: Margin | None = None
    limit: float | None = None
    window: timedelta = timedelta(minutes=1)
    lookback: timedelta = timedelta(minutes=1)

    def describe_tolerance(self) -> str:
        """The margin and limit in words, e.g. `absolute 0.01, relative 50%; limit 0.05`."""
        parts = [self.margin.describe()] if self.margin is not None else []
        if self.limit is not None:
            parts.append(f"limit {self.limit:g}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Analysis:
    """When and how the canary is judged."""

    slos: tuple[Slo, ...]
    interval: timedelta = timedelta(seconds=30)
    min_requests: int = 50
    max_metrics_outage: timedelta = timedelta(minutes=5)
    on_metrics_outage: OutagePolicy = "rollback"


@dataclass(frozen=True)
class PagerDuty:
    """PagerDuty Events API v2 settings; the routing key is only ever read from a Secret."""

    routing_key_secret_ref: SecretKeyRef
    severity: Severity = "critical"
    url: str | None = None


@dataclass(frozen=True)
class Paging:
    """Who is paged on a rollback."""

    pager_duty: PagerDuty


@dataclass(frozen=True)
class Spec:
    """A parsed CanaryRollout.

    `namespace`, `name` and `generation` come from the resource's metadata (when the parser
    was given the whole resource, or passed explicitly); the engine uses them for the page's
    dedup key, for messages and for `observedGeneration`. So do `uid` and the manual request
    (annotation `canaryguard.io/request`): `request` when it parses, else `invalid_request`,
    which the engine reports without making the rollout Invalid.
    """

    virtual_service: VirtualServiceRef | None
    baseline: Destination
    canary: Destination
    metrics: MetricsSpec
    steps: tuple[Step, ...]
    analysis: Analysis
    paging: Paging | None = None
    paused: bool = False
    revision: str | None = None
    namespace: str = ""
    name: str = ""
    generation: int | None = None
    uid: str | None = None
    request: ManualRequest | None = None
    invalid_request: InvalidRequest | None = None
    http_route: HTTPRouteRef | None = None

    @property
    def target(self) -> RouteTarget:
        """The routing object: `spec.virtualService` or `spec.httpRoute` (exactly one)."""
        if self.http_route is not None:
            return RouteTarget(
                "HTTPRoute", self.http_route.name, self.http_route.rules, "spec.httpRoute", "rules"
            )
        assert self.virtual_service is not None
        return RouteTarget(
            "VirtualService",
            self.virtual_service.name,
            self.virtual_service.routes,
            "spec.virtualService",
            "routes",
        )

    def effective_revision(self) -> str:
        """`spec.revision` if set, else derived from the canary destination and version.

        A new value restarts the schedule, so a new model shipped under the same subset and
        version label needs an explicit `spec.revision`.
        """
        if self.revision:
            return self.revision
        return f"{self.canary}@{self.metrics.canary_version}"


def parse_spec(
    obj: Mapping[str, Any], *, namespace: str | None = None, name: str | None = None
) -> Spec:
    """Parse a whole CanaryRollout (with `metadata` and `spec`) or just its `spec` mapping.

    Defaults are those of the CRD. `namespace`/`name` override the metadata's. Raises
    SpecError naming the first invalid field, e.g.
    `spec.analysis.slos[2].query.template: unknown placeholder {{ foo }}`; a malformed
    request annotation is not a SpecError (see `Spec.invalid_request`).
    """
    generation: int | None = None
    uid: str | None = None
    request: ManualRequest | InvalidRequest | None = None
    raw_spec: Any = obj
    if "spec" in obj:
        metadata = obj.get("metadata") or {}
        if isinstance(metadata, Mapping):
            namespace = namespace if namespace is not None else metadata.get("namespace")
            name = name if name is not None else metadata.get("name")
            gen = metadata.get("generation")
            generation = gen if isinstance(gen, int) and not isinstance(gen, bool) else None
            uid = metadata.get("uid") if isinstance(metadata.get("uid"), str) else None
            request = parse_request(metadata.get("annotations"))
        raw_spec = obj["spec"]
    spec = _Reader(raw_spec, "spec")
    parsed = Spec(
        virtual_service=spec.optional_nested("virtualService", _virtual_service),
        http_route=spec.optional_nested("httpRoute", _http_route),
        baseline=spec.nested("baseline", _destination),
        canary=spec.nested("canary", _destination),
        revision=spec.string("revision", required=False, max_length=128),
        metrics=spec.nested("metrics", _metrics),
        steps=spec.items("steps", _step, min_items=1, max_items=MAX_STEPS),
        analysis=spec.nested("analysis", _analysis),
        paging=spec.optional_nested("paging", _paging),
        paused=spec.boolean("paused", default=False),
        namespace=str(namespace or ""),
        name=str(name or ""),
        generation=generation,
        uid=uid,
        request=request if isinstance(request, ManualRequest) else None,
        invalid_request=request if isinstance(request, InvalidRequest) else None,
    )
    spec.finish()
    _check_cross_fields(parsed)
    return parsed


# --- the parser ---------------------------------------------------------------------------

T = TypeVar("T")


class _Reader:
    """Reads one object of the spec, tracking its path and which keys were consumed."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise SpecError(path, f"must be an object, got {_kind(data)}")
        self.data: Mapping[str, Any] = data
        self.path = path
        self._seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def _get(self, key: str, required: bool) -> Any:
        self._seen.add(key)
        value = self.data.get(key)
        if value is None and required:
            raise SpecError(self.at(key), "required")
        return value

    def entries(self) -> list[tuple[Any, Any]]:
        """Every key and value, for objects that are maps rather than records."""
        self._seen.update(self.data)
        return list(self.data.items())

    def finish(self) -> None:
        """Reject keys nobody read: a typo must not silently become a default."""
        for key in self.data:
            if key not in self._seen:
                raise SpecError(self.at(str(key)), "unknown field")

    def string(
        self,
        key: str,
        *,
        required: bool = True,
        default: str | None = None,
        max_length: int = 253,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> Any:
        value = self._get(key, required and default is None)
        if value is None:
            return default
        if not isinstance(value, str):
            raise SpecError(self.at(key), f"must be a string, got {_kind(value)}")
        if not value:
            raise SpecError(self.at(key), "must not be empty")
        if len(value) > max_length:
            raise SpecError(self.at(key), f"must be at most {max_length} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise SpecError(self.at(key), f"invalid value {value!r}{': ' + hint if hint else ''}")
        return value

    def address(self, key: str, *, required: bool, credentials: str) -> Any:
        """An http(s) URL (`canaryguard.core.access.parse_address`), kept as written. An
        error never repeats the value, which may hold a password; `credentials` says where
        credentials belong instead."""
        value = self.string(key, required=required, max_length=1024)
        if value is None:
            return None
        try:
            parse_address(value)
        except AddressError as exc:
            problem = f"{exc}: {credentials}" if exc.credentials else str(exc)
            raise SpecError(self.at(key), problem) from None
        return value

    def integer(
        self, key: str, *, default: int | None = None, minimum: int = 0, maximum: int | None = None
    ) -> Any:
        value = self._get(key, default is None)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.at(key), f"must be an integer, got {_kind(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise SpecError(self.at(key), f"must be {bound}, got {value}")
        return value

    def number(self, key: str, *, minimum: float | None = None) -> float | None:
        value = self._get(key, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(self.at(key), f"must be a number, got {_kind(value)}")
        result = float(value)
        if result != result or result in (float("inf"), float("-inf")):
            raise SpecError(self.at(key), "must be a finite number")
        if minimum is not None and result < minimum:
            raise SpecError(self.at(key), f"must be >= {minimum:g}, got {result:g}")
        return result

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(self.at(key), f"must be true or false, got {_kind(value)}")
        return value

    def duration(
        self, key: str, *, default: timedelta, minimum: timedelta = timedelta(0)
    ) -> timedelta:
        text = self.string(key, default=format_duration(default), max_length=32)
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise SpecError(self.at(key), str(exc)) from None
        if value < minimum:
            raise SpecError(self.at(key), f"must be at least {format_duration(minimum)}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> Any:
        value = self.string(key, default=default, max_length=32)
        if value not in options:
            raise SpecError(self.at(key), f"must be one of {', '.join(options)}; got {value!r}")
        return value

    def nested(self, key: str, parse: Callable[[_Reader], T]) -> T:
        value = self._get(key, True)
        reader = _Reader(value, self.at(key))
        result = parse(reader)
        reader.finish()
        return result

    def optional_nested(self, key: str, parse: Callable[[_Reader], T]) -> T | None:
        if self.data.get(key) is None:
            self._seen.add(key)
            return None
        return self.nested(key, parse)

    def items(
        self,
        key: str,
        parse: Callable[[_Reader], T],
        *,
        min_items: int,
        max_items: int,
    ) -> tuple[T, ...]:
        value = self._get(key, min_items > 0)
        value = [] if value is None else value
        if not isinstance(value, list):
            raise SpecError(self.at(key), f"must be a list, got {_kind(value)}")
        if not min_items <= len(value) <= max_items:
            raise SpecError(
                self.at(key), f"must have {min_items} to {max_items} items, got {len(value)}"
            )
        results = []
        for index, item in enumerate(value):
            reader = _Reader(item, f"{self.at(key)}[{index}]")
            results.append(parse(reader))
            reader.finish()
        return tuple(results)

    def strings(self, key: str, *, max_items: int) -> tuple[str, ...]:
        value = self._get(key, False)
        value = [] if value is None else value
        if not isinstance(value, list) or len(value) > max_items:
            raise SpecError(self.at(key), f"must be a list of at most {max_items} strings")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item or len(item) > 253:
                raise SpecError(f"{self.at(key)}[{index}]", "must be a non-empty string")
        if len(set(value)) != len(value):
            raise SpecError(self.at(key), "must not repeat a name")
        return tuple(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _virtual_service(r: _Reader) -> VirtualServiceRef:
    return VirtualServiceRef(
        name=r.string("name", pattern=_OBJECT_NAME, hint="a Kubernetes object name"),
        routes=r.strings("routes", max_items=MAX_ROUTES),
    )


def _http_route(r: _Reader) -> HTTPRouteRef:
    name = r.string("name", pattern=_OBJECT_NAME, hint="a Kubernetes object name")
    rules = r.items("rules", _rule_selector, min_items=0, max_items=MAX_ROUTES)
    if len(set(rules)) != len(rules):
        raise SpecError(r.at("rules"), "must not repeat a rule")
    return HTTPRouteRef(name=name, rules=rules)


def _rule_selector(r: _Reader) -> str | int:
    name = r.string("name", required=False, max_length=253)
    index = r.integer("index", minimum=0, maximum=63) if r.data.get("index") is not None else None
    if (name is None) == (index is None):
        raise SpecError(r.path, "set exactly one of name and index")
    return str(name) if name is not None else int(index or 0)


def _destination(r: _Reader) -> Destination:
    return Destination(
        host=r.string("host", pattern=_OBJECT_NAME, hint="a DNS name"),
        subset=r.string(
            "subset", required=False, max_length=63, pattern=_DNS_LABEL, hint="a DNS label"
        ),
    )


def _secret_ref(r: _Reader) -> SecretKeyRef:
    return SecretKeyRef(
        name=r.string("name", pattern=_OBJECT_NAME, hint="a Secret name"),
        key=r.string("key", pattern=_SECRET_KEY, hint="a Secret data key"),
    )


def _prometheus(r: _Reader) -> PrometheusSpec:
    return PrometheusSpec(
        address=r.address(
            "address",
            required=True,
            credentials="put the Authorization header in a Secret named by headersSecretRef",
        ),
        timeout=r.duration("timeout", default=timedelta(seconds=5), minimum=_MS),
        headers_secret_ref=r.optional_nested("headersSecretRef", _secret_ref),
    )


def _selector(r: _Reader) -> dict[str, str]:
    entries = r.entries()
    if not 1 <= len(entries) <= MAX_SELECTOR_LABELS:
        raise SpecError(r.path, f"must have 1 to {MAX_SELECTOR_LABELS} label matchers")
    result = {}
    for label, value in entries:
        path = r.at(str(label))
        if not isinstance(label, str) or not LABEL_NAME.fullmatch(label):
            raise SpecError(path, "not a Prometheus label name")
        # An empty value would also match every series without the label.
        if not isinstance(value, str) or not 1 <= len(value) <= 253:
            raise SpecError(path, "must be a string of 1 to 253 characters")
        result[label] = value
    return result


def _metrics(r: _Reader) -> MetricsSpec:
    return MetricsSpec(
        prometheus=r.nested("prometheus", _prometheus),
        selector=r.nested("selector", _selector),
        version_label=r.string(
            "versionLabel",
            default="destination_version",
            max_length=63,
            pattern=LABEL_NAME,
            hint="a Prometheus label name",
        ),
        baseline_version=r.string("baselineVersion", max_length=63),
        canary_version=r.string("canaryVersion", max_length=63),
    )


def _step(r: _Reader) -> Step:
    return Step(
        weight=r.integer("weight", minimum=1, maximum=100),
        hold=r.duration("hold", default=timedelta(0)),
    )


def _margin(r: _Reader) -> Margin:
    margin = Margin(
        absolute=r.number("absolute", minimum=0),
        relative=r.number("relative", minimum=0),
    )
    if margin.absolute is None and margin.relative is None:
        raise SpecError(r.path, "set absolute, relative or both")
    return margin


def _error_rate(r: _Reader) -> ErrorRate:
    codes = r.string("codes", default="5..", max_length=64)
    if (problem := regex_problem(codes)) is not None:
        raise SpecError(r.at("codes"), f"invalid regular expression: {problem}")
    return ErrorRate(codes=codes)


def _latency(r: _Reader) -> Latency:
    quantile = r.number("quantile")
    if quantile is None:
        raise SpecError(r.at("quantile"), "required")
    if not 0 < quantile < 1:
        raise SpecError(r.at("quantile"), f"must be between 0 and 1 (exclusive), got {quantile:g}")
    return Latency(quantile=quantile)


def _template(r: _Reader, key: str, required: bool) -> Any:
    text = r.string(key, required=required, max_length=2048)
    if text is not None and (problem := template_problem(text)) is not None:
        raise SpecError(r.at(key), problem)
    return text


def _query(r: _Reader) -> Query:
    return Query(
        template=_template(r, "template", True),
        samples_template=_template(r, "samplesTemplate", False),
    )


def _slo(default_min_requests: int) -> Callable[[_Reader], Slo]:
    def parse(r: _Reader) -> Slo:
        name = r.string("name", max_length=63, pattern=_DNS_LABEL, hint="a DNS label")
        kinds: list[SloKind] = []
        if (error_rate := r.optional_nested("errorRate", _error_rate)) is not None:
            kinds.append(error_rate)
        if (latency := r.optional_nested("latency", _latency)) is not None:
            kinds.append(latency)
        if (query := r.optional_nested("query", _query)) is not None:
            kinds.append(query)
        if len(kinds) != 1:
            raise SpecError(r.path, "set exactly one of errorRate, latency, query")
        margin = r.optional_nested("margin", _margin)
        limit = r.number("limit")
        if margin is None and limit is None:
            raise SpecError(r.path, "set a margin, a limit or both")
        return Slo(
            name=name,
            kind=kinds[0],
            direction=r.choice("direction", DIRECTIONS, "HigherIsWorse"),
            margin=margin,
            limit=limit,
            window=r.duration("window", default=timedelta(minutes=1)),
            lookback=r.duration("lookback", default=timedelta(minutes=1), minimum=_SECOND),
            min_requests=r.integer("minRequests", default=default_min_requests),
        )

    return parse


def _analysis(r: _Reader) -> Analysis:
    min_requests = r.integer("minRequests", default=50)
    slos = r.items("slos", _slo(min_requests), min_items=1, max_items=MAX_SLOS)
    seen: set[str] = set()
    for index, slo in enumerate(slos):
        if slo.name in seen:
            raise SpecError(f"{r.at('slos')}[{index}].name", f"duplicate SLO name {slo.name!r}")
        seen.add(slo.name)
    return Analysis(
        interval=r.duration("interval", default=timedelta(seconds=30), minimum=_SECOND),
        min_requests=min_requests,
        max_metrics_outage=r.duration("maxMetricsOutage", default=timedelta(minutes=5)),
        on_metrics_outage=r.choice("onMetricsOutage", OUTAGE_POLICIES, "rollback"),
        slos=slos,
    )


def _pager_duty(r: _Reader) -> PagerDuty:
    return PagerDuty(
        routing_key_secret_ref=r.nested("routingKeySecretRef", _secret_ref),
        severity=r.choice("severity", SEVERITIES, "critical"),
        url=r.address(
            "url",
            required=False,
            credentials="the routing key comes from the Secret named by routingKeySecretRef",
        ),
    )


def _paging(r: _Reader) -> Paging:
    return Paging(pager_duty=r.nested("pagerDuty", _pager_duty))


def _check_cross_fields(spec: Spec) -> None:
    """The rules the CRD states in CEL, again, for specs that never met an API server."""
    if spec.virtual_service is None and spec.http_route is None:
        raise SpecError("spec.virtualService", "required (or spec.httpRoute; exactly one)")
    if spec.virtual_service is not None and spec.http_route is not None:
        raise SpecError(
            "spec.httpRoute", "must not be set with spec.virtualService (exactly one of them)"
        )
    if spec.http_route is not None:
        for key, dest in (("baseline", spec.baseline), ("canary", spec.canary)):
            if dest.subset:
                raise SpecError(
                    f"spec.{key}.subset",
                    "must not be set with httpRoute: a backendRef names a Service (host)",
                )
    weights = [step.weight for step in spec.steps]
    for index in range(1, len(weights)):
        if weights[index] <= weights[index - 1]:
            raise SpecError(
                f"spec.steps[{index}].weight",
                f"weights must be strictly increasing ({weights[index - 1]} then {weights[index]})",
            )
    if weights[-1] != 100:
        raise SpecError(f"spec.steps[{len(weights) - 1}].weight", "the last step must be 100")
    if spec.baseline == spec.canary:
        raise SpecError("spec.canary", "must differ from spec.baseline (host or subset)")
    metrics = spec.metrics
    if metrics.baseline_version == metrics.canary_version:
        raise SpecError("spec.metrics.canaryVersion", "must differ from baselineVersion")
    if metrics.version_label in metrics.selector:
        raise SpecError(
            f"spec.metrics.selector.{metrics.version_label}",
            "must not match on the version label; the queries add it for each version",
        )
    for index, slo in enumerate(spec.analysis.slos):
        if not isinstance(slo.kind, Query):
            continue
        lookback = slo.lookback.total_seconds()
        for key, text in (
            ("template", slo.kind.template),
            ("samplesTemplate", slo.kind.samples_template),
        ):
            problem = text and wrapped_problem(
                text, metrics.baseline_version, metrics.canary_version, lookback
            )
            if problem:
                raise SpecError(f"spec.analysis.slos[{index}].query.{key}", problem)
