"""docs/reference.md, the CanaryRollout field reference, is generated from the CRD by
hack/gen_reference.py and must stay in step with it: regenerated here in memory, compared with
the committed file, and checked to cover every field, default, CEL rule and printer column."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "hack/gen_reference.py"
REFERENCE = ROOT / "docs/reference.md"
CRD = yaml.safe_load((ROOT / "crds/canaryrollout.yaml").read_text(encoding="utf-8"))
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
STALE = "docs/reference.md is out of date with the CRD: run `python hack/gen_reference.py`"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def committed() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(path, schema, is_leaf) for every field below schema; `[]` marks list items. A leaf is a
    field that is neither an object with fields nor a list of such objects."""
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}"
        items = child.get("items") if child.get("type") == "array" else None
        if child.get("properties"):
            yield child_path, child, False
            yield from fields(child, child_path)
        elif isinstance(items, dict) and items.get("properties"):
            yield child_path, child, False
            yield from fields(items, f"{child_path}[]")
        else:
            yield child_path, child, True


def all_fields() -> list[tuple[str, dict[str, Any], bool]]:
    return [f for part in ("spec", "status") for f in fields(SCHEMA["properties"][part], part)]


def row_of(path: str) -> str:
    rows = [line for line in committed().splitlines() if line.startswith(f"| `{path}` |")]
    assert len(rows) == 1, f"{path}: expected one table row in docs/reference.md, got {len(rows)}"
    return rows[0]


def cells(line: str) -> list[str]:
    """A table row's cells, split on the `|` that are not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_committed_reference_matches_the_crd() -> None:
    generator = load_generator()
    rendered = generator.render(generator.load_crd())
    assert rendered == committed(), STALE
    assert generator.render(generator.load_crd()) == rendered, "output must be deterministic"


def test_every_leaf_field_has_a_row_with_its_default() -> None:
    leaves = [(path, schema) for path, schema, leaf in all_fields() if leaf]
    assert len(leaves) > 80  # the walk reached into slos[], status.slos[], conditions[] ...
    assert "spec.analysis.slos[].margin.relative" in {path for path, _ in leaves}
    for path, schema in leaves:
        row = row_of(path)
        if "default" in schema:
            default = schema["default"]
            text = str(default).lower() if isinstance(default, bool) else str(default)
            assert cells(row)[2] == f"`{text}`", f"{path}: default {default!r} not in {row}"
        for value in schema.get("enum", []):
            assert f"`{value}`" in cells(row)[1], f"{path}: enum value {value!r} missing"


def test_every_object_has_a_row_and_a_section() -> None:
    text = committed()
    for path, schema, leaf in all_fields():
        if leaf:
            continue
        row_of(path)
        section = f"{path}[]" if schema.get("type") == "array" else path
        assert f"\n### {section}\n" in text, f"no section for {section}"


def test_durations_bounds_and_required_fields_are_said_in_words() -> None:
    assert "Go-style duration: `30s`, `5m`, `1h30m`" in cells(row_of("spec.analysis.interval"))[3]
    assert cells(row_of("spec.steps[].weight"))[3] == "**required**; minimum 1; maximum 100"
    assert cells(row_of("spec.analysis.slos[].latency.quantile"))[3] == (
        "**required**; above 0; below 1"
    )
    assert "1\N{EN DASH}20 items; items unique by `name`" in cells(row_of("spec.analysis.slos"))[3]


def test_every_cel_rule_and_printer_column_is_listed() -> None:
    text = committed()
    messages = []

    def collect(schema: dict[str, Any]) -> None:
        messages.extend(rule["message"] for rule in schema.get("x-kubernetes-validations", []))
        for child in schema.get("properties", {}).values():
            collect(child)
        if isinstance(schema.get("items"), dict):
            collect(schema["items"])

    collect(SCHEMA)
    assert len(messages) >= 6
    for message in messages:
        assert f"\n- {message}. Reported at `" in text, f"CEL rule missing: {message}"
    for column in VERSION["additionalPrinterColumns"]:
        assert f"\n| {column['name']} | {column['type']} | `{column['jsonPath']}` |" in text


def test_tables_are_well_formed_and_links_resolve() -> None:
    lines = committed().splitlines()
    width = 0
    for number, line in enumerate(lines, 1):
        if not line.startswith("|"):
            width = 0
            continue
        if width == 0:
            width = len(cells(line))
        assert len(cells(line)) == width, f"docs/reference.md:{number}: unescaped | in {line}"
    headings = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    assert len(anchors) == len(headings), "headings must have distinct anchors"
    for target in re.findall(r"\]\(#([^)]+)\)", "\n".join(lines)):
        assert target in anchors, f"link to #{target} has no heading"
