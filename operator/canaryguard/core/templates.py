"""Query templates, checked with a real PromQL parser before any query is built from them.

A template is the user's PromQL with two placeholders, `{{ version }}` and `{{ lookback }}`.
The operator renders it once per version and wraps each rendering as
`label_replace((<rendered>), "canaryguard_side", "<side>", "", "")`, the two joined by `or`
(`promql.template_pair`). A template is refused, with the parser's own message, when:
- it has more operators and brackets than the parser may safely recurse into;
- its placeholders are unknown or malformed, or `{{ version }}` is missing;
- filled with sample values, it does not parse as PromQL;
- a `{{ version }}` is not inside a double-quoted string, the one place where the rendered
  value is escaped (anywhere else a version could change the query's shape, and in a comment
  it would not select anything);
- the wrapped query does not parse, or parses into anything but the two wrapped copies of
  the template's own expression, whole: `x) or vector(1) or (y` parses once wrapped, into a
  query the operator never meant to send.
The errorRate codes, the other PromQL users write, are checked by the same parser
(`regex_problem`): Prometheus takes RE2, which Python's `re` is not.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import promql_parser

from canaryguard.core import promql

# A version no PromQL outside a double-quoted string survives: its `"` is escaped to `\"`,
# which is invalid bare, ends a single-quoted string early and is not unescaped in backticks.
_PROBE_VERSION = "v'\"1"
_SAMPLE_VERSIONS = ("v1", "v2")
_SAMPLE_LOOKBACK = 60.0
# The parser recurses once per level of the expression's tree, on the calling thread's stack
# (about 2 KiB a level): a 2,048-character template of nothing but `-` or `(` needs 4 MiB, and
# a thread with less crashes the whole process. Every level takes at least one operator or
# opening bracket, so counting those bounds the depth; real templates use a few dozen.
MAX_STRUCTURE = 200
_STRUCTURE = re.compile(
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|#[^\n]*'  # strings and comments: skipped
    r"|[-+*/%^=!<>(\[]|\b(?:and|or|unless|atan2)\b",
    re.IGNORECASE,
)
# The spec is parsed at every tick; a template is checked once per distinct text (and versions).
_CACHE_SIZE = 8192


@functools.lru_cache(maxsize=_CACHE_SIZE)
def template_problem(template: str) -> str | None:
    """Why a query template is invalid (a phrase for `SpecError`), or None.

    Checks the template on its own, with sample values for the placeholders; the query a
    rollout sends, with its own versions and lookback, is checked by `wrapped_problem`.
    """
    names = promql.template_placeholders(template)
    for name in names:
        if name not in promql.PLACEHOLDERS:
            return f"unknown placeholder {{{{ {name} }}}}"
    rest = promql.PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest:
        return "stray {{ or }}: placeholders are {{ version }} and {{ lookback }}"
    if "version" not in names:
        return "missing placeholder {{ version }}"
    if (structure := _structure(template)) > MAX_STRUCTURE:
        return f"too complex: {structure} operators and brackets, at most {MAX_STRUCTURE}"
    sample = promql.render_template(template, _SAMPLE_VERSIONS[0], _SAMPLE_LOOKBACK)
    try:
        promql_parser.parse(sample)
    except ValueError as exc:
        return f"not valid PromQL: {exc}"
    if not _version_only_in_strings(template, names.count("version")):
        return (
            "{{ version }} must be written inside a double-quoted string, "
            'e.g. {version="{{ version }}"}'
        )
    return wrapped_problem(template, *_SAMPLE_VERSIONS, _SAMPLE_LOOKBACK)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def wrapped_problem(template: str, baseline: str, canary: str, lookback: float) -> str | None:
    """Why the query built from `template` for these versions is not what the operator
    means to send (see the module docstring), or None."""
    sides = (
        (promql.BASELINE, promql.render_template(template, baseline, lookback)),
        (promql.CANARY, promql.render_template(template, canary, lookback)),
    )
    try:
        alone = {side: repr(promql_parser.parse(text)) for side, text in sides}
    except ValueError as exc:
        return f"not valid PromQL: {exc}"
    try:
        wrapped = promql_parser.parse(promql.template_pair(template, baseline, canary, lookback))
    except ValueError as exc:
        return (
            "does not parse in the query canaryguard builds around it "
            f"(label_replace((template), ...) per version): {exc}"
        )
    if not (
        isinstance(wrapped, promql_parser.BinaryExpr)
        and str(wrapped.op) == "or"
        and _plain(wrapped.modifier)
        and _is_side(wrapped.lhs, promql.BASELINE, alone[promql.BASELINE])
        and _is_side(wrapped.rhs, promql.CANARY, alone[promql.CANARY])
    ):
        return (
            "breaks out of the query canaryguard builds around it "
            "(label_replace((template), ...) per version): it must be one complete expression"
        )
    return None


def regex_problem(regex: str) -> str | None:
    """Why `regex` is not a regular expression Prometheus takes in a matcher (RE2 syntax:
    no lookaround, no backreferences), in the parser's words; or None."""
    try:
        promql_parser.parse(f'x{{l=~"{promql.escape_string(regex)}"}}')
    except ValueError as exc:
        return str(exc)
    return None


def _plain(modifier: Any) -> bool:
    """An `or` with no `on`/`ignoring` and no `bool`, as `template_pair` writes it."""
    return modifier is None or (modifier.matching is None and not modifier.return_bool)


def _is_side(expr: Any, side: str, template_ast: str) -> bool:
    """`expr` is `label_replace((<the template's expression>), SIDE_LABEL, side, "", "")`."""
    if not (
        isinstance(expr, promql_parser.Call)
        and expr.func.name == "label_replace"
        and len(expr.args) == 5
        and isinstance(expr.args[0], promql_parser.ParenExpr)
    ):
        return False
    strings = [a.val if isinstance(a, promql_parser.StringLiteral) else None for a in expr.args[1:]]
    return strings == [promql.SIDE_LABEL, side, "", ""] and repr(expr.args[0].expr) == template_ast


def _version_only_in_strings(template: str, uses: int) -> bool:
    """Every `{{ version }}` lands whole in a double-quoted string (a label matcher's value or
    a string argument) of the parsed template."""
    probe = promql.render_template(template, _PROBE_VERSION, _SAMPLE_LOOKBACK)
    try:
        expr = promql_parser.parse(probe)
    except ValueError:
        return False
    found = 0

    def count(node: Any) -> None:
        nonlocal found
        if isinstance(node, promql_parser.StringLiteral):
            found += node.val.count(_PROBE_VERSION)
        if isinstance(node, promql_parser.VectorSelector):  # also a matrix selector's inner one
            matchers = node.matchers
            for matcher in [*matchers.matchers, *(m for g in matchers.or_matchers for m in g)]:
                found += matcher.value.count(_PROBE_VERSION)

    promql_parser.walk(expr, count)
    return found == uses


def _structure(template: str) -> int:
    """Operators and opening brackets outside strings and comments (a bound on the depth)."""
    return sum(1 for m in _STRUCTURE.finditer(template) if m.group()[0] not in "\"'`#")
