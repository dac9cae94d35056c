"""Query templates parsed as PromQL: alone (with sample values), with `{{ version }}` only
inside double-quoted strings, and inside the query the operator wraps around them. Each
refusal carries the parser's own message; `parse_spec` names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canaryguard.core import promql
from canaryguard.core.spec import SpecError, parse_spec
from canaryguard.core.templates import MAX_STRUCTURE, template_problem, wrapped_problem
from tests.unit.scenario import BASE_SPEC

V = '{version="{{ version }}"}'
NOT_IN_STRING = (
    '{{ version }} must be written inside a double-quoted string, e.g. {version="{{ version }}"}'
)
WRAPPER = "(label_replace((template), ...) per version)"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (f"sum(rate(x{V}[{{{{ lookback }}}}]))", None),
        ('x{version="{{version}}"}', None),
        ('x{code=~"5.{2}",version="{{ version }}"}', None),  # braces inside a regex string
        (f"sum(rate(a{V}[5m])) / sum(rate(b{V}[5m]))", None),
        (f"x{V} or y{{a=`}}`}}", None),
        ('x{v="{{ version }}" or v="w"}', None),
        ('label_replace(x, "v", "{{ version }}-b", "", "")', None),
        (f"max_over_time(x{V}[{{{{ lookback }}}}:10s] offset 1m)", None),
        (f"x{V}\n# a comment on its own line\n", None),
        # placeholders
        ("x{{ Version }}", "unknown placeholder {{ Version }}"),
        ("x{{ version | upper }}", "unknown placeholder {{ version | upper }}"),
        ("x{{ version }} }}", "stray {{ or }}: placeholders are {{ version }} and {{ lookback }}"),
        (
            'x{v="{{ version }"}',
            "stray {{ or }}: placeholders are {{ version }} and {{ lookback }}",
        ),
        ("x[{{ lookback }}]", "missing placeholder {{ version }}"),
        # not PromQL, with the parser's message
        ("x{version='{{ version }}'", "not valid PromQL: unexpected end of input inside braces"),
        ("x}{version='{{ version }}'}", "not valid PromQL: unexpected right brace '}'"),
        (f"sum(x{V}) by (a", "not valid PromQL: unclosed left parenthesis"),
        (f"sum(rate(x{V}[5m])) +* 2", "not valid PromQL: invalid promql query"),
        (
            f"rate(x{V})",
            "not valid PromQL: expected type matrix in call to function 'rate', got vector",
        ),
        (
            f"rate(x{V}[{{{{ lookback }}}}m])",
            "not valid PromQL: bad number or duration syntax: 60sm",
        ),
        (f"nosuchfn(x{V})", "not valid PromQL: unknown function with name 'nosuchfn'"),
        # closing the wrapper: not one complete expression
        (f"x{V}) or vector(1) or (y", "not valid PromQL: unexpected right parenthesis ')'"),
        (f'x{V}), "a", "b", "", "") or (y', "not valid PromQL: unexpected right parenthesis ')'"),
        # {{ version }} where its escaping does not protect the query
        ("x{version='{{ version }}'}", NOT_IN_STRING),
        ("x{version=`{{ version }}`}", NOT_IN_STRING),
        ("x * {{ version }}", NOT_IN_STRING),
        (f"x{V} # {{{{ version }}}}", NOT_IN_STRING),
        # a comment that swallows the wrapper's closing parenthesis; values that are not one
        # instant vector per version
        (
            f"x{V} # note",
            f"does not parse in the query canaryguard builds around it {WRAPPER}: "
            "unclosed left parenthesis",
        ),
        (
            f"scalar(x{V})",
            f"does not parse in the query canaryguard builds around it {WRAPPER}: "
            "expected type vector in call to function 'label_replace', got scalar",
        ),
        (
            f"x{V}[5m]",
            f"does not parse in the query canaryguard builds around it {WRAPPER}: "
            "expected type vector in call to function 'label_replace', got matrix",
        ),
    ],
)
def test_template_problems(template: str, problem: str | None) -> None:
    assert template_problem(template) == problem


def test_a_template_too_deep_for_the_parser_is_refused_before_parsing() -> None:
    """Nested deeper than the parser's recursion can take on a small thread stack, it would
    crash the process: counted, not parsed."""
    deep = "-" * MAX_STRUCTURE + f"x{V}"
    assert (
        template_problem(deep)
        == f"too complex: {MAX_STRUCTURE + 1} operators and brackets, at most 200"
    )
    # Brackets and operators inside strings and comments do not count.
    assert template_problem('x{version="{{ version }}", a="' + "((" * 200 + '"}') is None
    assert template_problem(f"x{V} or x" * 100) is None  # 200 `=` and `or`


def test_the_wrapped_query_is_checked_with_the_rollout_s_own_versions() -> None:
    template = f"sum(rate(x{V}[{{{{ lookback }}}}]))"
    assert wrapped_problem(template, "v1", 'v2") or vector(1) or ("', 90) is None
    assert wrapped_problem(template, "v1", "v2\\", 0.5) is None


def test_a_wrapper_that_lets_the_template_out_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shape check, on its own: were the wrapper to lose its parentheses, a template with
    a top-level `or` would no longer be label_replace's first argument alone."""

    def unparenthesized(template: str, baseline: str, canary: str, lookback: float) -> str:
        side = 'label_replace({}, "canaryguard_side", "{}", "", "")'
        return " or ".join(
            side.format(promql.render_template(template, version, lookback), name)
            for name, version in (("baseline", baseline), ("canary", canary))
        )

    monkeypatch.setattr(promql, "template_pair", unparenthesized)
    wrapped_problem.cache_clear()
    try:
        assert wrapped_problem(f"x{V} or vector(1)", "v1", "v2", 60) == (
            f"breaks out of the query canaryguard builds around it {WRAPPER}: "
            "it must be one complete expression"
        )
    finally:
        wrapped_problem.cache_clear()  # nothing checked under the patch outlives it


def query_slo_spec(query: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec["analysis"]["slos"].append({"name": "q", "query": query, "margin": {"absolute": 1}})
    return spec


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"template": f"x{V}) or vector(1) or (y"},
            "spec.analysis.slos[1].query.template: not valid PromQL: "
            "unexpected right parenthesis ')'",
        ),
        (
            {"template": f"x{V}", "samplesTemplate": "count(x{version='{{ version }}'})"},
            f"spec.analysis.slos[1].query.samplesTemplate: {NOT_IN_STRING}",
        ),
        (
            {"template": f"x{V} # trailing"},
            "spec.analysis.slos[1].query.template: does not parse in the query canaryguard "
            f"builds around it {WRAPPER}: unclosed left parenthesis",
        ),
    ],
)
def test_parse_spec_names_the_template_field(query: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(query_slo_spec(query))
    assert str(raised.value) == message


def test_a_valid_template_parses_with_the_spec_s_versions_and_lookback() -> None:
    spec = query_slo_spec({"template": f"sum(rate(x{V}[{{{{ lookback }}}}]))"})
    spec["metrics"]["canaryVersion"] = 'v2"x'
    spec["analysis"]["slos"][1]["lookback"] = "1500ms"
    assert parse_spec(spec).analysis.slos[1].name == "q"
