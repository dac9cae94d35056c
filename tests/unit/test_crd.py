"""The CanaryRollout CRD: structural, documented, bounded, and in step with the parser and the
engine. Example objects and engine statuses are checked against the schema with a small
validator of the OpenAPI subset the CRD uses (CEL rules are exercised against a real API
server in tests/integration/test_canaryrollout_crd.py)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard.core import engine
from canaryguard.core.durations import DURATION_PATTERN, MAX_DURATION, format_duration
from canaryguard.core.observations import SloObservation
from canaryguard.core.spec import parse_spec
from canaryguard.core.status import Status
from tests.unit.scenario import BASE_SPEC, BREACH, DOWN, FEW, Rollout, at, make_spec, obs, spec_dict

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds/canaryrollout.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
STATUS_SCHEMA = SCHEMA["properties"]["status"]
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path: properties, list items and map values."""
    yield path or "<root>", schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def test_names_scope_and_subresources() -> None:
    assert CRD["metadata"]["name"] == "canaryrollouts.canaryguard.io"
    assert CRD["spec"]["group"] == "canaryguard.io"
    assert CRD["spec"]["scope"] == "Namespaced"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "CanaryRollout",
        "canaryrollouts",
        ["cro"],
    )
    assert VERSION["name"] == "v1alpha1"
    assert VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Canary": ".status.canaryWeight",
        "Step": ".status.stepIndex",
        "Message": ".status.message",
        "Age": ".metadata.creationTimestamp",
    }


def test_every_node_has_a_type_and_a_description() -> None:
    for path, node in nodes(SCHEMA):
        assert node.get("type") in TYPES, f"{path} has no type"
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        if path == ".metadata":
            # The API server forbids anything but the type here (it owns metadata's schema).
            assert node == {"type": "object"}
        else:
            assert node.get("description", "").strip(), f"{path} has no description"


def test_every_list_and_string_of_the_spec_is_bounded() -> None:
    # Bounds keep the CEL rules' estimated cost within the API server's budget.
    for path, node in nodes(SPEC_SCHEMA, ".spec"):
        if node["type"] == "array":
            assert "maxItems" in node, f"{path} needs maxItems"
        if node["type"] == "string":
            assert "maxLength" in node or "enum" in node, f"{path} needs maxLength"
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path} needs maxProperties"


def test_duration_fields_use_the_parsers_grammar_and_bounds() -> None:
    durations = {
        path: node for path, node in nodes(SPEC_SCHEMA) if "([0-9]+h)" in node.get("pattern", "")
    }
    assert len(durations) == 6  # timeout, hold, interval, maxMetricsOutage, window, lookback
    assert {node["pattern"] for node in durations.values()} == {DURATION_PATTERN}
    # CEL's duration() reads the same grammar; its bounds are the parser's.
    bounds = {
        path.rsplit(".", 1)[-1]: [r["rule"] for r in node["x-kubernetes-validations"]]
        for path, node in durations.items()
    }
    at_most = f"duration(self) <= duration('{format_duration(MAX_DURATION)}')"
    assert bounds == {
        "timeout": ["duration(self) >= duration('1ms')", at_most],
        "hold": [at_most],
        "interval": ["duration(self) >= duration('1s')", at_most],
        "maxMetricsOutage": [at_most],
        "window": [at_most],
        "lookback": ["duration(self) >= duration('1s')", at_most],
    }


def test_cross_field_rules_are_declared() -> None:
    rules = [
        rule["rule"]
        for _, node in nodes(SPEC_SCHEMA)
        if "([0-9]+h)" not in node.get("pattern", "")
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) == 13  # 10 cross-field, 2 addresses, selector keys
    assert all(
        rule["message"]
        for _, n in nodes(SPEC_SCHEMA)
        for rule in n.get("x-kubernetes-validations", [])
    )


# --- a validator for the OpenAPI subset the CRD uses -------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in defaults as the API server does: for absent properties of present objects."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def problems(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """What the API server's schema validation (and pruning) would object to."""
    kind = schema["type"]
    ok = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[kind]
    if not ok:
        return [f"{path}: expected {kind}, got {value!r}"]
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if kind in ("integer", "number"):
        if "minimum" in schema and (
            value < schema["minimum"]
            or (schema.get("exclusiveMinimum") and value == schema["minimum"])
        ):
            found.append(f"{path}: below minimum")
        if "maximum" in schema and (
            value > schema["maximum"]
            or (schema.get("exclusiveMaximum") and value == schema["maximum"])
        ):
            found.append(f"{path}: above maximum")
    if kind == "string":
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            found.append(f"{path}: length out of bounds")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{path}: does not match {schema['pattern']}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10**9):
            found.append(f"{path}: item count out of bounds")
        for index, item in enumerate(value):
            found += problems(schema["items"], item, f"{path}[{index}]")
    if kind == "object":
        if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties", 10**9):
            found.append(f"{path}: property count out of bounds")
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{path}.{name}: required")
        for name, item in value.items():
            if name in schema.get("properties", {}):
                found += problems(schema["properties"][name], item, f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += problems(schema["additionalProperties"], item, f"{path}.{name}")
            elif "properties" in schema:
                found.append(f"{path}.{name}: unknown field (would be pruned)")
    return found


def pruned(value: Any) -> Any:
    """Drop nulls, as the API server does for fields that are not nullable."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


def test_the_validator_catches_what_it_should() -> None:
    bad = copy.deepcopy(BASE_SPEC)
    bad["steps"][0]["weight"] = 0
    bad["analysis"]["slos"][0]["window"] = "1.5m"
    bad["analysis"]["slos"][0]["marginn"] = {}
    bad["metrics"]["selector"] = {}
    found = problems(SPEC_SCHEMA, apply_defaults(SPEC_SCHEMA, bad), ".spec")
    assert len(found) == 4, found


@pytest.mark.parametrize("path", sorted((ROOT / "examples").rglob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_against_the_schema(path: Path) -> None:
    for body in yaml.safe_load_all(path.read_text()):
        if isinstance(body, dict) and body.get("kind") == "CanaryRollout":
            assert body["apiVersion"] == "canaryguard.io/v1alpha1"
            defaulted = apply_defaults(SCHEMA, copy.deepcopy(body))
            assert problems(SCHEMA, defaulted) == []


def test_the_crd_defaults_are_the_parsers_defaults() -> None:
    defaulted = apply_defaults(SPEC_SCHEMA, copy.deepcopy(BASE_SPEC))
    assert defaulted != BASE_SPEC  # there were defaults to fill in
    assert parse_spec(defaulted) == parse_spec(BASE_SPEC)


def engine_statuses() -> Iterator[Status]:
    """Statuses the engine writes in every phase."""
    r = Rollout()
    for t, observation in ((0, FEW), (30, FEW), (60, DOWN), (90, BREACH)):
        r.tick(t, obs(observation))
        yield r.status
    r.tick(150, obs(BREACH))
    yield r.status
    yield engine.record_page_result(r.status, False, False, "HTTP 503", at(151))
    yield engine.record_page_result(r.status, True, False, None, at(152))
    yield engine.record_page_result(r.status, False, True, "HTTP 400", at(153))
    yield engine.invalid(Rollout().started().status, "spec.x: bad", at(1)).status
    paused = Rollout(make_spec({**spec_dict(onMetricsOutage="pause"), "paused": True}))
    paused.started()
    yield paused.status
    outage = Rollout(make_spec(spec_dict(onMetricsOutage="pause")))
    outage.started()
    outage.tick(30, obs(DOWN))
    outage.tick(120, obs(DOWN))
    yield outage.status
    done = Rollout()
    for t in (0, 60, 180, 300):
        done.tick(t)
    yield done.status
    at_100 = Rollout()  # a regression at 100%, judged against the baseline reference
    for t in (0, 60, 180):
        at_100.tick(t)
    idle_breach = SloObservation(None, 0.05, 0, 100)
    at_100.tick(210, obs(idle_breach))
    at_100.tick(270, obs(idle_breach))
    assert at_100.status.rollback is not None
    assert at_100.status.rollback.baseline_reference_at is not None
    yield at_100.status


def test_engine_statuses_validate_against_the_status_schema() -> None:
    phases = set()
    for status in engine_statuses():
        phases.add(status.phase)
        stored = pruned(json.loads(json.dumps(status.to_dict())))
        assert problems(STATUS_SCHEMA, stored, ".status") == []
    assert phases == {"Progressing", "Paused", "Promoted", "RolledBack", "Invalid"}
