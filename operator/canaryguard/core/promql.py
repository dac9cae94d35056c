"""PromQL builders for the builtin SLOs and the rendering of user query templates.

Every value that comes from a resource is escaped before it enters a query, so a label value
can never change the query's shape. Each builder returns one query that answers for both
versions: the builtins group by the version label, templates are rendered once per version
and tagged with `SIDE_LABEL`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REQUESTS_TOTAL = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
SIDE_LABEL = "canaryguard_side"
BASELINE = "baseline"
CANARY = "canary"

# The spec parser validates with these same patterns, so what validates there renders here.
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
PLACEHOLDERS = frozenset({"version", "lookback"})
_REGEX_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def escape_string(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def escape_regex(value: str) -> str:
    """Escape a literal value so an RE2 matcher matches exactly it (before string escaping)."""
    return _REGEX_META.sub(r"\\\1", value)


def label_name(name: str) -> str:
    """Return `name` if it is a valid Prometheus label name, else raise ValueError."""
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(f"invalid Prometheus label name {name!r}")
    return name


def duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as `90s`, anything finer in milliseconds."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"lookback must be positive, got {seconds}s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def matchers(exact: Mapping[str, str], *extra: str) -> str:
    """A label selector body `{a="x",b=~"y"}` from exact matchers plus prepared ones."""
    parts = [f'{label_name(k)}="{escape_string(v)}"' for k, v in sorted(exact.items())]
    parts.extend(extra)
    return "{" + ",".join(parts) + "}"


def versions_matcher(version_label: str, baseline: str, canary: str) -> str:
    """`label=~"v1|v2"` matching exactly the two version values."""
    alternatives = "|".join(escape_regex(v) for v in (baseline, canary))
    return f'{label_name(version_label)}=~"{escape_string(alternatives)}"'


def _istio_selector(
    selector: Mapping[str, str], version_label: str, baseline: str, canary: str, *extra: str
) -> str:
    return matchers(
        {"reporter": "destination", **selector},
        versions_matcher(version_label, baseline, canary),
        *extra,
    )


def request_count(
    selector: Mapping[str, str], version_label: str, baseline: str, canary: str, lookback: float
) -> str:
    """Requests each version served over the lookback (the evidence behind every SLO)."""
    sel = _istio_selector(selector, version_label, baseline, canary)
    label = label_name(version_label)
    return f"sum by ({label}) (increase({REQUESTS_TOTAL}{sel}[{duration(lookback)}]))"


def error_rate(
    selector: Mapping[str, str],
    version_label: str,
    baseline: str,
    canary: str,
    lookback: float,
    codes: str = "5..",
) -> str:
    """Share of responses whose code matches `codes` (an RE2 regex), per version.

    A version that served requests but no error has no error series at all; the `or` gives
    it an explicit 0 so "no errors" is healthy data, not missing data.
    """
    label = label_name(version_label)
    window = duration(lookback)
    all_sel = _istio_selector(selector, version_label, baseline, canary)
    err_sel = _istio_selector(
        selector, version_label, baseline, canary, f'response_code=~"{escape_string(codes)}"'
    )
    total = f"sum by ({label}) (rate({REQUESTS_TOTAL}{all_sel}[{window}]))"
    errors = f"sum by ({label}) (rate({REQUESTS_TOTAL}{err_sel}[{window}]))"
    return f"({errors} or ({total} * 0)) / {total}"


def latency_quantile(
    selector: Mapping[str, str],
    version_label: str,
    baseline: str,
    canary: str,
    lookback: float,
    quantile: float,
) -> str:
    """The request duration quantile in milliseconds, per version, from Istio's histogram."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    label = label_name(version_label)
    sel = _istio_selector(selector, version_label, baseline, canary)
    return (
        f"histogram_quantile({quantile:g}, sum by ({label}, le) "
        f"(rate({DURATION_BUCKET}{sel}[{duration(lookback)}])))"
    )


def bucket_increase(
    histogram: str,
    selector: Mapping[str, str],
    version_label: str,
    baseline: str,
    canary: str,
    lookback: float,
) -> str:
    """Each version's increase of every cumulative bucket of the classic histogram
    `histogram` over the lookback: one series per (version, le)."""
    if not METRIC_NAME.fullmatch(histogram):
        raise ValueError(f"invalid Prometheus metric name {histogram!r}")
    label = label_name(version_label)
    sel = matchers(selector, versions_matcher(version_label, baseline, canary))
    return f"sum by ({label}, le) (increase({histogram}_bucket{sel}[{duration(lookback)}]))"


def template_placeholders(template: str) -> list[str]:
    """The placeholder names a template uses, in order (for validation)."""
    return [m.group(1) for m in PLACEHOLDER.finditer(template)]


def render_template(template: str, version: str, lookback: float) -> str:
    """Fill `{{ version }}` (string-escaped: write it inside double quotes) and `{{ lookback }}`."""
    values = {"version": escape_string(version), "lookback": duration(lookback)}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"unknown placeholder {{{{ {name} }}}}")
        return values[name]

    return PLACEHOLDER.sub(fill, template)


def template_pair(template: str, baseline: str, canary: str, lookback: float) -> str:
    """One query answering a user template for both versions, tagged by `SIDE_LABEL`.

    Each side must come back as a single series; the caller treats anything else as no data.
    """

    def side(name: str, version: str) -> str:
        query = render_template(template, version, lookback)
        return f'label_replace(({query}), "{SIDE_LABEL}", "{name}", "", "")'

    return f"{side(BASELINE, baseline)} or {side(CANARY, canary)}"
