"""Scenarios: how each model version behaves over time, read from seeded YAML files.

A scenario file::

    name: error-spike
    description: the canary starts failing 4% of requests at t=30s
    seed: 42
    defaults:                 # every version starts from these (fields below)
      error_rate: 0.001
      latency: {median_ms: 12, sigma: 0.35}
    versions:
      v2:
        phases:               # cumulative changes at scenario time `at`
          - at: 30s
            error_rate: 0.04

Behaviour fields: `error_rate` (probability of an HTTP 500), `latency` (`median_ms`, `sigma`
of a lognormal, plus `spike_probability` and `spike_ms` for a slow tail), `score_shift`
(added to the fraud model's logit: drift), `score_polarize` (the probability that a
prediction's score is replaced by a hard 0 or 1, drawn as 1 with the score's probability: the
mean stays, the distribution moves to its ends: drift that a mean-score SLO cannot see),
`conversion_rate` (probability that an approved
transaction converts: the business proxy) and `flag_threshold` (score above which a
transaction is flagged as fraud). A version may also set any of them directly next to
`phases`. Durations are seconds or strings such as `500ms`, `30s`, `2m`.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScenarioError(ValueError):
    """A scenario file or a behaviour change is invalid; the message names the field."""


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number of seconds or a string like '30s', '500ms', '2m'."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: expected a duration such as 30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ScenarioError(f"{where}: expected a duration such as 30s, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ScenarioError(f"{where}: must be a finite duration >= 0, got {value!r}")
    return seconds


def _number(value: object, where: str, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: expected a number, got {value!r}")
    number = float(value)
    too_low = number <= low if open_low else number < low
    if not math.isfinite(number) or too_low or number > high:
        bracket = "(" if open_low else "["
        raise ScenarioError(f"{where}: must be in {bracket}{low:g}, {high:g}], got {value!r}")
    return number


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ScenarioError(f"{where}: keys must be strings, got {key!r}")
    return value


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class Latency:
    """Response time in milliseconds: lognormal(median_ms, sigma), plus `spike_ms` added with
    probability `spike_probability` (a slow tail that moves p99 but hardly the median)."""

    median_ms: float = 10.0
    sigma: float = 0.35
    spike_probability: float = 0.0
    spike_ms: float = 0.0

    def updated(self, changes: Mapping[str, Any], where: str) -> Latency:
        _reject_unknown(changes, _LATENCY_FIELDS, where)
        values: dict[str, float] = {}
        if "median_ms" in changes:
            values["median_ms"] = _number(
                changes["median_ms"], f"{where}.median_ms", 0, 600_000, open_low=True
            )
        if "sigma" in changes:
            values["sigma"] = _number(changes["sigma"], f"{where}.sigma", 0, 5)
        if "spike_probability" in changes:
            values["spike_probability"] = _number(
                changes["spike_probability"], f"{where}.spike_probability", 0, 1
            )
        if "spike_ms" in changes:
            values["spike_ms"] = _number(changes["spike_ms"], f"{where}.spike_ms", 0, 600_000)
        return replace(self, **values)


_LATENCY_FIELDS = {"median_ms", "sigma", "spike_probability", "spike_ms"}


@dataclass(frozen=True)
class Behaviour:
    """How one model version answers at one moment."""

    error_rate: float = 0.001
    latency: Latency = field(default_factory=Latency)
    score_shift: float = 0.0
    conversion_rate: float = 0.3
    score_polarize: float = 0.0
    flag_threshold: float = 0.5

    def updated(self, changes: Mapping[str, Any], where: str = "behaviour") -> Behaviour:
        """A copy with `changes` (a partial behaviour, validated) applied."""
        changes = _mapping(changes, where)
        _reject_unknown(changes, BEHAVIOUR_FIELDS, where)
        values: dict[str, Any] = {}
        if "error_rate" in changes:
            values["error_rate"] = _number(changes["error_rate"], f"{where}.error_rate", 0, 1)
        if "latency" in changes:
            latency = _mapping(changes["latency"], f"{where}.latency")
            values["latency"] = self.latency.updated(latency, f"{where}.latency")
        if "score_shift" in changes:
            values["score_shift"] = _number(changes["score_shift"], f"{where}.score_shift", -20, 20)
        if "score_polarize" in changes:
            values["score_polarize"] = _number(
                changes["score_polarize"], f"{where}.score_polarize", 0, 1
            )
        if "conversion_rate" in changes:
            values["conversion_rate"] = _number(
                changes["conversion_rate"], f"{where}.conversion_rate", 0, 1
            )
        if "flag_threshold" in changes:
            values["flag_threshold"] = _number(
                changes["flag_threshold"], f"{where}.flag_threshold", 0, 1, open_low=True
            )
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BEHAVIOUR_FIELDS = {
    "error_rate",
    "latency",
    "score_shift",
    "score_polarize",
    "conversion_rate",
    "flag_threshold",
}


@dataclass(frozen=True)
class Phase:
    """Changes applied to a version's behaviour from scenario time `at_s` on."""

    at_s: float
    changes: Mapping[str, Any]


@dataclass(frozen=True)
class VersionPlan:
    """A version's behaviour over time: `initial`, then each phase applied cumulatively."""

    initial: Behaviour
    phases: tuple[Phase, ...] = ()
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _timeline: tuple[Behaviour, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        timeline = [self.initial]
        for i, phase in enumerate(self.phases):
            timeline.append(timeline[-1].updated(phase.changes, f"phases[{i}]"))
        object.__setattr__(self, "_starts", tuple(p.at_s for p in self.phases))
        object.__setattr__(self, "_timeline", tuple(timeline))

    def at(self, t: float) -> Behaviour:
        """The behaviour at scenario time `t` seconds."""
        return self._timeline[bisect.bisect_right(self._starts, t)]


@dataclass(frozen=True)
class Scenario:
    """A named, seeded set of version plans."""

    name: str
    seed: int
    defaults: Behaviour
    versions: Mapping[str, VersionPlan]
    description: str = ""
    duration_s: float | None = None

    def plan(self, version: str) -> VersionPlan:
        """The plan of `version`; a version the file does not name follows `defaults`."""
        return self.versions.get(version) or VersionPlan(self.defaults)

    def behaviour(self, version: str, t: float) -> Behaviour:
        """How `version` behaves at scenario time `t`."""
        return self.plan(version).at(t)


_SCENARIO_FIELDS = {"name", "description", "seed", "duration", "defaults", "versions"}


def parse_scenario(data: object, origin: str = "scenario") -> Scenario:
    """Build a Scenario from parsed YAML; errors name `origin` and the field."""
    top = _mapping(data, origin)
    _reject_unknown(top, _SCENARIO_FIELDS, origin)
    name = top.get("name", Path(origin).stem)
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{origin}: name: expected a non-empty string, got {name!r}")
    seed = top.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError(f"{origin}: seed: required, an integer (got {seed!r})")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{origin}: description: expected a string")
    duration = top.get("duration")
    duration_s = None if duration is None else parse_duration(duration, f"{origin}: duration")
    defaults = Behaviour().updated(
        _mapping(top.get("defaults", {}), f"{origin}: defaults"), f"{origin}: defaults"
    )
    versions: dict[str, VersionPlan] = {}
    for version, spec in _mapping(top.get("versions", {}), f"{origin}: versions").items():
        versions[version] = _parse_version(spec, defaults, f"{origin}: versions.{version}")
    return Scenario(
        name=name,
        seed=seed,
        defaults=defaults,
        versions=versions,
        description=description,
        duration_s=duration_s,
    )


def _parse_version(spec: object, defaults: Behaviour, where: str) -> VersionPlan:
    data = _mapping(spec if spec is not None else {}, where)
    _reject_unknown(data, BEHAVIOUR_FIELDS | {"phases"}, where)
    initial = defaults.updated({k: v for k, v in data.items() if k != "phases"}, where)
    raw_phases = data.get("phases", [])
    if not isinstance(raw_phases, list):
        raise ScenarioError(f"{where}.phases: expected a list")
    phases: list[Phase] = []
    state = initial
    for i, raw in enumerate(raw_phases):
        phase_where = f"{where}.phases[{i}]"
        item = _mapping(raw, phase_where)
        if "at" not in item:
            raise ScenarioError(f"{phase_where}: at: required (scenario time, e.g. 30s)")
        at_s = parse_duration(item["at"], f"{phase_where}.at")
        if phases and at_s <= phases[-1].at_s:
            raise ScenarioError(
                f"{phase_where}.at: phases must be in increasing time order "
                f"({at_s:g}s after {phases[-1].at_s:g}s)"
            )
        changes = {k: v for k, v in item.items() if k != "at"}
        state = state.updated(changes, phase_where)  # validates with the field path
        phases.append(Phase(at_s, changes))
    return VersionPlan(initial, tuple(phases))


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    folder = resources.files("canaryguard_testbed") / "scenarios"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(source: str | Path) -> Scenario:
    """Load a scenario from a YAML file path, or a shipped one by name (e.g. 'error-spike')."""
    path = Path(source)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        try:
            text = path.read_text()
        except OSError as err:
            raise ScenarioError(f"{path}: cannot read scenario: {err}") from err
        origin = str(path)
    else:
        name = str(source)
        if name not in builtin_scenarios():
            raise ScenarioError(
                f"no scenario file {name!r} and no shipped scenario of that name; "
                f"shipped: {builtin_scenarios()}"
            )
        resource = resources.files("canaryguard_testbed") / "scenarios" / f"{name}.yaml"
        text = resource.read_text()
        origin = f"{name}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(f"{origin}: invalid YAML: {err}") from err
    return parse_scenario(data, origin)
