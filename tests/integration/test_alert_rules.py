"""The alerting rules and the dashboard's queries, read by Prometheus's own tools: promtool
parses every expression and template, and `promtool test rules` runs each alert against
synthetic series to show it fires when it should and stays quiet when it should not."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard_testbed.prometheus_server import find_prometheus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "manifests/components/prometheusrule/prometheusrule.yaml"
DASHBOARD = ROOT / "manifests/grafana/canaryguard-dashboard.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool from the same install as the Prometheus server the stack runs."""
    beside = Path(find_prometheus()).with_name("promtool")
    found = str(beside) if beside.exists() else shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found (it ships with Debian's prometheus package)")
    return found


def _run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    return groups


def test_promtool_accepts_every_rule_and_template(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": _groups()}))
    result = _run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for value in node.values():
            yield from _dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_exprs(item)


def _as_promql(expr: str) -> str:
    """What Grafana sends: its range variables are durations, the others label values."""
    expr = re.sub(r"\$(?:__rate_interval|__interval|__range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    exprs = list(_dashboard_exprs(json.loads(DASHBOARD.read_text())))
    assert exprs
    rules = [{"record": f"dashboard:query_{i}", "expr": _as_promql(e)} for i, e in enumerate(exprs)]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    result = _run(promtool, "check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# Each case: input series (1-minute samples), when to look, and what must be firing then.
# Annotations are left out of the comparison (they hold rendered values); their templates are
# parsed by the check above.
CASES: list[dict[str, Any]] = [
    {
        "name": "operator scraped but down",
        "series": {'up{job="canaryguard-metrics"}': "1 1 0x15"},
        "at": "10m",
        "firing": {"CanaryguardOperatorDown": [{"severity": "critical"}]},
    },
    {
        "name": "operator never scraped",
        "series": {'up{job="something-else"}': "1x15"},
        "at": "10m",
        "firing": {"CanaryguardOperatorDown": [{"severity": "critical"}]},
    },
    {
        "name": "operator up",
        "series": {'up{job="canaryguard-metrics"}': "1x15"},
        "at": "10m",
        "firing": {"CanaryguardOperatorDown": []},
    },
    {
        "name": "prometheus unavailable for 20 minutes",
        "series": {
            'canaryguard_prometheus_query_errors_total{kind="unavailable"}': "0+6x30",
            'canaryguard_prometheus_query_errors_total{kind="rejected"}': "0x30",
        },
        "at": "25m",
        "firing": {
            "CanaryguardPrometheusQueryErrors": [{"severity": "warning", "kind": "unavailable"}]
        },
    },
    {
        "name": "a short blip of query errors",
        "series": {'canaryguard_prometheus_query_errors_total{kind="unavailable"}': "0 3 3x30"},
        "at": "25m",
        "firing": {"CanaryguardPrometheusQueryErrors": []},
    },
    {
        "name": "ticks failing on a refused VirtualService write",
        "series": {'canaryguard_tick_errors_total{reason="api_403"}': "0+2x30"},
        "at": "20m",
        "firing": {"CanaryguardTickErrors": [{"severity": "warning", "reason": "api_403"}]},
    },
    {
        "name": "one failed tick",
        "series": {'canaryguard_tick_errors_total{reason="network"}': "0 1 1x30"},
        "at": "20m",
        "firing": {"CanaryguardTickErrors": []},
    },
    {
        "name": "a page that could not be delivered",
        "series": {
            'canaryguard_pages_total{result="exhausted"}': "0 0 0 1 1 1",
            'canaryguard_pages_total{result="delivered"}': "0 0 0 0 0 0",
        },
        "at": "5m",
        "firing": {"CanaryguardPagesFailing": [{"severity": "critical", "result": "exhausted"}]},
    },
    {
        "name": "pages delivered",
        "series": {
            'canaryguard_pages_total{result="delivered"}': "0 1 2 2 2 2",
            'canaryguard_pages_total{result="rejected"}': "0x5",
        },
        "at": "5m",
        "firing": {"CanaryguardPagesFailing": []},
    },
    {
        "name": "the first rollback of the operator's life (a series born at 1)",
        "series": {
            'canaryguard_decisions_total{action="Warning",reason="RolledBack"}': "_ _ _ 1 1 1",
            'canaryguard_decisions_total{action="Normal",reason="StepAdvanced"}': "1 2 3 3 3 3",
        },
        "at": "5m",
        "firing": {"CanaryguardRollbacks": [{"severity": "info", "reason": "RolledBack"}]},
    },
    {
        "name": "a later rollback",
        "series": {
            'canaryguard_decisions_total{action="Warning",reason="RolledBack"}': "1x30 2x10",
        },
        "at": "35m",
        "firing": {"CanaryguardRollbacks": [{"severity": "info", "reason": "RolledBack"}]},
    },
    {
        "name": "two replicas, one leading, then a handover",
        "series": {
            'canaryguard_leader{job="canaryguard-metrics",pod="a"}': "1x8 _x10",
            'canaryguard_leader{job="canaryguard-metrics",pod="b"}': "0x8 1x10",
        },
        "at": "15m",
        "firing": {"CanaryguardNoLeader": [], "CanaryguardSeveralLeaders": []},
    },
    {
        "name": "two replicas standing by",
        "series": {
            'canaryguard_leader{job="canaryguard-metrics",pod="a"}': "1 0x15",
            'canaryguard_leader{job="canaryguard-metrics",pod="b"}': "0x15",
        },
        "at": "10m",
        "firing": {"CanaryguardNoLeader": [{"severity": "critical"}]},
    },
    {
        "name": "two replicas both ticking (no leader election)",
        "series": {
            'canaryguard_leader{job="canaryguard-metrics",pod="a"}': "1x15",
            'canaryguard_leader{job="canaryguard-metrics",pod="b"}': "1x15",
        },
        "at": "10m",
        "firing": {"CanaryguardSeveralLeaders": [{"severity": "critical"}]},
    },
    {
        "name": "an old rollback only",
        "series": {'canaryguard_decisions_total{action="Warning",reason="RolledBack"}': "1x40"},
        "at": "35m",
        "firing": {"CanaryguardRollbacks": []},
    },
]


def test_each_alert_fires_exactly_when_it_should(promtool: str, tmp_path: Path) -> None:
    groups = _groups()
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tests = []
    for case in CASES:
        tests.append(
            {
                "name": case["name"],
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case["series"].items()],
                "alert_rule_test": [
                    {
                        "eval_time": case["at"],
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": labels} for labels in expected],
                    }
                    for alert, expected in case["firing"].items()
                ],
            }
        )
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    result = _run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
