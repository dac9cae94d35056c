"""Helpers for tick-by-tick engine scenarios: a fixed clock, specs, observations, a driver."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryguard.core import engine
from canaryguard.core.actions import Action, EmitEvent, Page, SetWeights
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.spec import Spec, parse_spec
from canaryguard.core.status import Condition, Status, status_from_dict

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

BASE_SPEC: dict[str, Any] = {
    "virtualService": {"name": "scorer"},
    "baseline": {"host": "scorer", "subset": "v1"},
    "canary": {"host": "scorer", "subset": "v2"},
    "metrics": {
        "prometheus": {"address": "http://prometheus:9090"},
        "selector": {"destination_service_name": "scorer"},
        "baselineVersion": "v1",
        "canaryVersion": "v2",
    },
    "steps": [
        {"weight": 10, "hold": "60s"},
        {"weight": 50, "hold": "120s"},
        {"weight": 100, "hold": "120s"},
    ],
    "analysis": {
        "interval": "30s",
        "minRequests": 50,
        "maxMetricsOutage": "90s",
        "slos": [
            {"name": "errors", "errorRate": {}, "margin": {"absolute": 0.01}, "window": "60s"}
        ],
    },
    "paging": {"pagerDuty": {"routingKeySecretRef": {"name": "pd", "key": "key"}}},
}

HEALTHY = SloObservation(baseline=0.01, canary=0.012, baseline_samples=900, canary_samples=100)
BREACH = SloObservation(baseline=0.01, canary=0.05, baseline_samples=900, canary_samples=100)
FEW = SloObservation(baseline=0.01, canary=0.01, baseline_samples=900, canary_samples=12)
DOWN = SloObservation.failed("connection refused")


def at(seconds: float) -> datetime:
    """The fixed clock: T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def spec_dict(**analysis: Any) -> dict[str, Any]:
    """A fresh copy of the base spec, with `analysis` keys replaced."""
    data = copy.deepcopy(BASE_SPEC)
    data["analysis"].update(analysis)
    return data


def make_spec(data: dict[str, Any] | None = None) -> Spec:
    """Parse a spec dict as the rollout `ml/scorer`."""
    return parse_spec(data if data is not None else spec_dict(), namespace="ml", name="scorer")


def obs(observation: SloObservation = HEALTHY, **others: SloObservation) -> Observations:
    """The observation for SLO `errors`, and any other SLO by keyword (dashes as _)."""
    return Observations(
        {"errors": observation, **{k.replace("_", "-"): v for k, v in others.items()}}
    )


class Rollout:
    """Drives one rollout tick by tick, storing and re-reading the status as JSON each time,
    as the operator would across restarts."""

    def __init__(self, spec: Spec | None = None) -> None:
        self.spec = spec if spec is not None else make_spec()
        self.status = Status()

    def tick(self, seconds: float, observations: Observations | None = None) -> engine.TickResult:
        result = engine.tick(self.spec, self.status, observations or obs(), at(seconds))
        stored = json.loads(json.dumps(result.status.to_dict()))
        self.status = status_from_dict(stored)
        assert self.status.to_dict() == result.status.to_dict()
        return result

    def started(self) -> engine.TickResult:
        """The first tick, at T0, with every SLO's query answered (a rollout whose metrics
        cannot be read does not start)."""
        return self.tick(0, Observations({slo.name: HEALTHY for slo in self.spec.analysis.slos}))


def weights(actions: tuple[Action, ...]) -> list[tuple[int, int]]:
    return [(a.baseline, a.canary) for a in actions if isinstance(a, SetWeights)]


def pages(actions: tuple[Action, ...]) -> list[Page]:
    return [a for a in actions if isinstance(a, Page)]


def events(actions: tuple[Action, ...]) -> list[tuple[str, str]]:
    return [(a.type, a.reason) for a in actions if isinstance(a, EmitEvent)]


def cond(status: Status, type_: str) -> Condition:
    """The condition of that type, which the test expects to be set."""
    condition = status.condition(type_)
    assert condition is not None, f"no {type_} condition in {status.conditions}"
    return condition
