"""`canaryguard plan`: the simulation of a manifest, its warnings, and the command's errors."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard.cli.errors import CliError
from canaryguard.cli.main import main
from canaryguard.cli.plan import read_rates
from canaryguard.core.ports import MetricsUnavailable, Sample
from canaryguard.core.spec import parse_spec
from canaryguard.sim.plan import plan

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "fraud-model" / "canaryrollout.yaml"


def body(**error_rate: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    slo = data["spec"]["analysis"]["slos"][0]
    for key in ("margin", "confidence", "limit", "window"):
        slo.pop(key, None)
    slo.update(error_rate)
    return data


PLAIN = {"margin": {"absolute": 0.01, "relative": 0.5}, "window": "2m"}


def test_a_margin_on_a_likely_regression_is_named() -> None:
    result = plan(parse_spec(body(**PLAIN)), rps=50, baseline_error=0.005, rollouts=10)
    # max(0.005 + 0.01, 0.005 * 1.5) = 0.015, three times the baseline.
    share = result.caught[3.0] * 100
    assert (
        "error-rate: the margin (absolute 0.01, relative 50%) breaches only above 0.015, "
        "3.00x the baseline's 0.005: a 3x regression sits on it, so catching one is left to "
        f"noise ({share:.1f}% of the simulated ones were rolled back); consider confidence, "
        "or a tighter margin"
    ) in result.warnings
    confident = body(margin={"relative": 0}, confidence=0.99)
    assert plan(parse_spec(confident), 50, 0.005, rollouts=10).warnings == ()


def test_holds_too_short_for_the_evidence_are_named() -> None:
    data = body(**PLAIN)
    data["spec"]["steps"][0] = {"weight": 5, "hold": "10s"}
    data["spec"]["steps"][1] = {"weight": 25, "hold": "20s"}
    warnings = plan(parse_spec(data), rps=50, baseline_error=0.005, rollouts=10).warnings
    # 50 req/s * 5% = 2.5 req/s: 25 requests per 1m lookback (hold 10 s, shorter), < 50.
    assert warnings[0] == (
        "step 1 (5% for 10s): the canary serves about 25 requests per lookback, fewer than "
        "minRequests 50: error-rate stays inconclusive and the step waits"
    )
    # 12.5 req/s for 20 s at 0.5%: 1.25 errors expected; then 300 s: enough.
    assert not any(w.startswith("step 2") for w in warnings)
    data["spec"]["steps"][1] = {"weight": 25, "hold": "15s"}
    warnings = plan(parse_spec(data), rps=50, baseline_error=0.005, rollouts=10).warnings
    assert warnings[1] == (
        "step 2 (25% for 15s): the canary is expected to fail 0.94 requests in its hold at the "
        "baseline's rate: this step alone cannot tell a regression from noise"
    )


def test_per_step_figures() -> None:
    spec = parse_spec(body(margin={"relative": 0}, confidence=0.99, window="1m"))
    result = plan(spec, rps=50, baseline_error=0.005, rollouts=20)
    assert [(s.weight, s.hold_seconds) for s in result.steps] == [
        (5, 120),
        (25, 300),
        (50, 600),
        (100, 600),
    ]
    assert [s.canary_requests for s in result.steps] == [300, 3750, 15000, 30000]
    assert result.steps[0].canary_errors == pytest.approx(1.5)
    # "caught by the end of a step" counts rollbacks at that step or before: never grows.
    caught = [s.smallest_caught or 100.0 for s in result.steps]
    assert caught == sorted(caught, reverse=True)
    shares = [result.caught[f] for f in sorted(result.caught)]
    assert all(0 <= share <= 1 for share in shares)
    # With no errors at all nothing can be shown worse: nothing is rolled back.
    quiet = plan(spec, rps=50, baseline_error=1e-9, rollouts=10)
    assert quiet.identical_rolled_back == 0.0


def test_the_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "-f", str(EXAMPLE), "--rps", "50", "--baseline-error-rate", "0.005"]
    assert main([*args, "--rollouts", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SLO error-rate at 50 req/s, baseline error rate 0.005; 10 simulated")
    assert "1          5%    120s         300      1.5" in out
    assert "4        100%    600s       30000    150.0" in out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--rps", "0"], "error: --rps must be positive"),
        (["--baseline-error-rate", "5"], "error: the baseline error rate must be between 0 and 1"),
        (["-f", "/nonexistent.yaml"], "error: cannot read /nonexistent.yaml"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"-f": str(EXAMPLE), "--rps": "50", "--baseline-error-rate": "0.005"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["plan", *[x for pair in base.items() for x in pair], "--rollouts", "10"]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith(error)


def test_an_invalid_manifest_names_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy.deepcopy(body(**PLAIN))
    data["spec"]["analysis"]["slos"][0]["confidence"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    argv = ["plan", "-f", str(path), "--rps", "50", "--baseline-error-rate", "0.005"]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"error: {path}: spec.analysis.slos[0].confidence: must be between 0.5 and 0.9999, got 2\n"
    )


def test_the_installed_command_runs_from_stdin() -> None:
    command = [sys.executable, "-m", "canaryguard.cli.main", "plan", "-f", "-"]
    done = subprocess.run(
        [
            *command,
            "--rps",
            "100",
            "--baseline-error-rate",
            "0.01",
            "--rollouts",
            "10",
            "-o",
            "json",
        ],
        input=EXAMPLE.read_text(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"slo": "error-rate"' in done.stdout
    assert '"rps": 100.0' in done.stdout


def answers(requests: list[Sample], errors: list[Sample]) -> Callable[[str], list[Sample]]:
    def query(text: str) -> list[Sample]:
        if text.startswith("sum by (destination_version) (increase("):
            return requests
        return errors

    return query


def v(b: float, c: float | None = None) -> list[Sample]:
    out = [Sample({"destination_version": "v1"}, b)]
    if c is not None:
        out.append(Sample({"destination_version": "v2"}, c))
    return out


def test_rates_read_from_prometheus_with_the_rollouts_own_queries() -> None:
    spec = parse_spec(body(**PLAIN))
    asked: list[str] = []

    def query(text: str) -> list[Sample]:
        asked.append(text)
        return answers(v(180_000, 0), v(0.004, 0.0))(text)

    rps, rate = read_rates(spec, query, 3600)
    assert (rps, rate) == (50.0, 0.004)  # 180,000 requests in an hour
    assert all('destination_service_name="fraud-model"' in q and "[3600s]" in q for q in asked)
    # Before the rollout the canary has no series at all: the baseline's alone.
    assert read_rates(spec, answers(v(90_000), v(0.01)), 1800) == (50.0, 0.01)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (answers([], []), "no baseline traffic found in Prometheus over the last 1h"),
        (answers(v(0.0), v(0.0)), "no baseline traffic found"),
    ],
)
def test_no_traffic_in_prometheus_says_what_to_type(
    query: Callable[[str], list[Sample]], error: str
) -> None:
    with pytest.raises(CliError) as caught:
        read_rates(parse_spec(body(**PLAIN)), query, 3600)
    assert str(caught.value).startswith(error)


def test_prometheus_down_is_one_line() -> None:
    def down(text: str) -> list[Sample]:
        raise MetricsUnavailable("ConnectionError: refused")

    with pytest.raises(CliError) as caught:
        read_rates(parse_spec(body(**PLAIN)), down, 3600)
    assert str(caught.value) == "Prometheus: ConnectionError: refused"


def test_without_rates_or_prometheus_the_command_says_what_it_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", "-f", str(EXAMPLE), "--rps", "50"]) == 1
    assert capsys.readouterr().err == (
        "error: give --rps and --baseline-error-rate, or --prometheus to read them\n"
    )
