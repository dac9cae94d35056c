"""Render docs/reference.md, the full CanaryRollout field reference, from the CRD.

    python hack/gen_reference.py           # rewrite docs/reference.md (also: make reference)
    python hack/gen_reference.py --check   # exit 1 when docs/reference.md is out of date

Everything in the reference comes from crds/canaryrollout.yaml: field descriptions, types,
enums, defaults, bounds, patterns, CEL rules and printer columns. The output depends on the
CRD alone (fields in the CRD's order, no dates), so regenerating an unchanged CRD changes
nothing; tests/unit/test_reference.py fails when the committed file falls behind.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "crds" / "canaryrollout.yaml"
REFERENCE_PATH = ROOT / "docs" / "reference.md"

Schema = dict[str, Any]

# Patterns the CRD uses, said in words; any other pattern is shown as the regular expression.
PATTERN_WORDS = {
    r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$": "Go-style duration: `30s`, `5m`, `1h30m`",
    r"^https?://[^\s/]+": "an `http://` or `https://` URL",
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$": (
        "DNS name: lowercase letters, digits, `-` and `.`, "
        "starting and ending with a letter or digit"
    ),
    r"^[-._a-zA-Z0-9]+$": "letters, digits, `-`, `_` and `.`",
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": (
        "DNS label: lowercase letters, digits and `-`, starting and ending with a letter or digit"
    ),
    r"^[a-zA-Z_][a-zA-Z0-9_]*$": "label name: letters, digits and `_`, not starting with a digit",
    r"\{\{\s*version\s*\}\}": "must contain `{{ version }}`",
}
FORMAT_WORDS = {"date-time": "date-time, RFC 3339", "int64": "int64"}
NONE = "—"


@dataclass(frozen=True)
class Section:
    """One object of the schema: a table of its fields and a list of its CEL rules."""

    path: str  # dotted path, `[]` for list items: spec.analysis.slos[]
    schema: Schema  # the object's schema
    owner: Schema | None  # the list holding these objects, for spec.steps[]
    required: bool  # required by its parent (only shown for top-level sections)


def load_crd(path: Path = CRD_PATH) -> Schema:
    crd: Schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    return crd


def words(text: str) -> str:
    """A description on one line."""
    return " ".join(text.split())


def code(value: object) -> str:
    """`value` as a Markdown code span (booleans in YAML spelling)."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """Text safe inside a table cell: one line, `|` escaped (also inside code spans, per GFM)."""
    return words(text).replace("|", "\\|") or NONE


def slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading, with -1, -2 ... for repeats."""
    base = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
    count = seen.get(base, 0)
    seen[base] = count + 1
    return base if count == 0 else f"{base}-{count}"


def has_fields(schema: Schema) -> bool:
    return schema.get("type") == "object" and bool(schema.get("properties"))


def object_items(schema: Schema) -> Schema | None:
    """The item schema of a list of objects with fields, else None."""
    items = schema.get("items")
    if schema.get("type") == "array" and isinstance(items, dict) and has_fields(items):
        return items
    return None


def sections_of(
    schema: Schema, path: str, required: bool, owner: Schema | None = None
) -> list[Section]:
    """The object at path and every object below it, depth first in the CRD's order."""
    out = [Section(path, schema, owner, required)]
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}"
        if has_fields(child):
            out += sections_of(child, child_path, False)
        elif (items := object_items(child)) is not None:
            out += sections_of(items, f"{child_path}[]", False, owner=child)
    return out


def type_text(schema: Schema, anchors: dict[str, str], path: str) -> str:
    kind = schema.get("type", "any")
    if kind == "array":
        items = schema.get("items", {})
        return "list of " + type_text(items, anchors, f"{path}[]")
    if kind == "object":
        if has_fields(schema):
            return f"[object](#{anchors[path]})"
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return "map of string to " + type_text(values, anchors, f"{path}{{}}")
        return "object"
    text = kind
    if "format" in schema:
        text += f" ({FORMAT_WORDS.get(schema['format'], schema['format'])})"
    if "enum" in schema:
        text += ", one of " + ", ".join(code(value) for value in schema["enum"])
    return text


def bounds(schema: Schema, low_key: str, high_key: str, one: str, many: str) -> list[str]:
    """A size range in words: 1-16 entries, at most 63 characters, at least one field set."""
    low, high = schema.get(low_key), schema.get(high_key)
    if low is not None and high is not None:
        return [f"{low}\N{EN DASH}{high} {many}"]
    if high is not None:
        return [f"at most {high} {one if high == 1 else many}"]
    if low is not None:
        return [f"at least one {one}" if low == 1 else f"at least {low} {many}"]
    return []


def limits(schema: Schema) -> list[str]:
    """Bounds, pattern and list semantics of one schema node, in words."""
    out: list[str] = []
    if "minimum" in schema:
        out.append(
            ("above " if schema.get("exclusiveMinimum") else "minimum ") + str(schema["minimum"])
        )
    if "maximum" in schema:
        out.append(
            ("below " if schema.get("exclusiveMaximum") else "maximum ") + str(schema["maximum"])
        )
    out += bounds(schema, "minLength", "maxLength", "character", "characters")
    if "pattern" in schema:
        pattern = schema["pattern"]
        out.append(PATTERN_WORDS.get(pattern) or f"matches {code(pattern)}")
    out += bounds(schema, "minItems", "maxItems", "item", "items")
    if has_fields(schema):
        out += bounds(schema, "minProperties", "maxProperties", "field set", "fields set")
    else:
        out += bounds(schema, "minProperties", "maxProperties", "entry", "entries")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        out.append("items unique")
    elif list_type == "map":
        keys = ", ".join(code(key) for key in schema.get("x-kubernetes-list-map-keys", []))
        out.append(f"items unique by {keys}")
    return out


def constraints(schema: Schema, required: bool) -> str:
    out = ["**required**"] if required else []
    out += limits(schema)
    items = schema.get("items")
    if isinstance(items, dict) and not has_fields(items):
        out += [f"each item: {text}" for text in limits(items)]
    values = schema.get("additionalProperties")
    if isinstance(values, dict):
        out += [f"each value: {text}" for text in limits(values)]
    return "; ".join(out)


def description(schema: Schema) -> str:
    text = words(schema.get("description", ""))
    items = schema.get("items")
    if isinstance(items, dict) and not has_fields(items) and items.get("description"):
        text += f" Each item: {words(items['description'])}"
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and values.get("description"):
        text += f" Each value: {words(values['description'])}"
    return text.strip()


def field_rows(section: Section, anchors: dict[str, str]) -> list[str]:
    rows = [
        "| Field | Type | Default | Constraints | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    required = set(section.schema.get("required", []))
    for name, child in section.schema.get("properties", {}).items():
        path = f"{section.path}.{name}"
        default = code(child["default"]) if "default" in child else NONE
        columns = [
            code(path),
            type_text(child, anchors, path),
            default,
            constraints(child, name in required),
            description(child),
        ]
        rows.append("| " + " | ".join(cell(column) for column in columns) + " |")
    return rows


def rules(section: Section) -> list[str]:
    """The CEL rules of this object, of its list (for list items) and of its non-object fields."""
    scoped: list[tuple[str, Schema]] = []
    if section.owner is not None:
        scoped.append((section.path.removesuffix("[]"), section.owner))
    scoped.append((section.path, section.schema))
    for name, child in section.schema.get("properties", {}).items():
        if not has_fields(child) and object_items(child) is None:
            scoped.append((f"{section.path}.{name}", child))
    out = []
    for scope, schema in scoped:
        for rule in schema.get("x-kubernetes-validations", []):
            message = words(rule.get("message") or rule.get("messageExpression") or "")
            at = code(scope + rule.get("fieldPath", ""))
            cel = code(words(rule["rule"]))
            out.append(f"- {message}. Reported at {at}. CEL, with `self` = {code(scope)}: {cel}")
    if out:
        out = ["Rules (CEL) the API server checks:", "", *out]
    return out


def render_section(section: Section, level: int, anchors: dict[str, str]) -> list[str]:
    lines = ["#" * level + " " + section.path, ""]
    text = description(section.schema)
    if section.required:
        text += " Required."
    if text:
        lines += [text.strip(), ""]
    lines += field_rows(section, anchors)
    if rule_lines := rules(section):
        lines += ["", *rule_lines]
    return [*lines, ""]


def printer_columns(version: Schema, plural: str) -> list[str]:
    lines = [
        "## Printer columns",
        "",
        f"`kubectl get {plural}` shows:",
        "",
        "| Column | Type | Value | Description |",
        "| --- | --- | --- | --- |",
    ]
    for column in version.get("additionalPrinterColumns", []):
        name = column["name"] + (" (with `-o wide`)" if column.get("priority", 0) > 0 else "")
        cells = [name, column["type"], code(column["jsonPath"]), column.get("description", "")]
        lines.append("| " + " | ".join(cell(text) for text in cells) + " |")
    return [*lines, ""]


def render(crd: Schema) -> str:
    """The reference as Markdown, from the parsed CRD."""
    spec = crd["spec"]
    names = spec["names"]
    version = spec["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    required = set(root.get("required", []))
    parts = {
        part: sections_of(root["properties"][part], part, part in required)
        for part in ("spec", "status")
    }

    seen: dict[str, int] = {}
    slug("CanaryRollout reference", seen)
    slug("Printer columns", seen)
    anchors = {s.path: slug(s.path, seen) for part in parts.values() for s in part}

    short = ", ".join(code(name) for name in names.get("shortNames", []))
    categories = ", ".join(code(name) for name in names.get("categories", []))
    scope = spec["scope"].lower()
    subresources = ", ".join(code(name) for name in version.get("subresources", {}))
    lines = [
        "# CanaryRollout reference",
        "",
        "Generated from [crds/canaryrollout.yaml](../crds/canaryrollout.yaml) by "
        "`hack/gen_reference.py` (`make reference`): edit the CRD, then regenerate.",
        "",
        f"`{names['kind']}` (`{spec['group']}/{version['name']}`, {scope}; "
        f"short name {short}; category {categories}; subresources {subresources}). "
        + words(root.get("description", "")),
        "",
        "How to read the tables:",
        "",
        "- **Field** is the full path; `[]` marks the items of a list, as in "
        "`spec.analysis.slos[].margin.relative`.",
        "- **Default** is filled in by the API server when the field is omitted from an object "
        "that is present; `—` means no default.",
        "- **Constraints** are enforced by the API server on create and update; CEL rules follow "
        "the table of the object they apply to.",
        "- Units are in the descriptions: weights are percent of traffic, latency values are "
        "milliseconds. Durations are Go-style, whole numbers with the units `h`, `m`, `s`, "
        "`ms` in that order: `500ms`, `30s`, `5m`, `1h30m`.",
        "",
        "Contents:",
        "",
        "- [Printer columns](#printer-columns)",
    ]
    for part in parts.values():
        for section in part:
            depth = section.path.count(".")
            lines.append("  " * depth + f"- [{section.path}](#{anchors[section.path]})")
    lines += ["", *printer_columns(version, names["plural"])]
    for part in parts.values():
        for index, section in enumerate(part):
            lines += render_section(section, 2 if index == 0 else 3, anchors)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render(load_crd())
    if args.check:
        current = REFERENCE_PATH.read_text(encoding="utf-8") if REFERENCE_PATH.exists() else ""
        if current != text:
            name = REFERENCE_PATH.relative_to(ROOT)
            print(f"{name} is out of date: run python hack/gen_reference.py", file=sys.stderr)
            return 1
        return 0
    REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
