"""End to end, the backtest on a recorded scenario: a live rollout on the local stack is rolled
back for an error-rate breach; `canaryguard backtest` then replays the same rollout over the
Prometheus history of that run and reaches the same decision, at the same tick.

The real operator runs under the shipped RBAC; real HTTP goes through the router to v1 and v2;
Prometheus scrapes the router and the model servers every second; ticks are 1 s. Live ticks
fall on a millisecond grid from the first and evaluate their queries at their own time on it;
the backtest evaluates the same grid from the recorded `Started` time, so it sees what each
live tick saw."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from canaryguard.cli.main import main
from canaryguard.core.status import format_time
from tests.integration.fixtures_e2e import INTERVAL, EndToEnd, error_rate_slo
from tests.integration.fixtures_operator import history, ts

OUTCOME = re.compile(r"^outcome: (\w+) at (\S+) \(tick (\d+)\): (.*)$", re.MULTILINE)


def test_the_backtest_of_a_recorded_run_reaches_its_rollback_at_the_same_tick(
    e2e: EndToEnd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    window = 6.0
    r = e2e.rollout(
        steps=[{"weight": 50, "hold": "60s"}, {"weight": 100, "hold": "60s"}],
        slos=[error_rate_slo(window=f"{window:g}s")],
    )
    with e2e.traffic(rate=80):
        e2e.operator()
        r.wait_weights(50, 50)
        e2e.mesh.control("v2", {"error_rate": 0.3})
        live = r.wait_phase("RolledBack")

    started = ts(history(live, "Started")[0]["at"])
    rolled_back = ts(live["rollback"]["at"])
    # Ticks are exact intervals apart: the rollback's tick is a whole number of them in.
    assert (rolled_back - started) % timedelta(seconds=INTERVAL) == timedelta(0), live
    live_tick = round((rolled_back - started).total_seconds() / INTERVAL)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(r.body))
    capsys.readouterr()

    code = main(
        [
            "backtest",
            "-f",
            str(path),
            "--prometheus",
            e2e.prometheus.url,
            "--from",
            format_time(started) or "",
            "--to",
            format_time(rolled_back + timedelta(seconds=10)) or "",
        ]
    )

    out = capsys.readouterr().out
    print(out)
    assert code == 0
    found = OUTCOME.search(out)
    assert found is not None, out
    phase, when, tick, why = found.groups()
    assert phase == "RolledBack"
    assert why.startswith("SLO error-rate breached for"), why
    assert "-> Started:" in out and "-> RolledBack:" in out
    assert "-> StepAdvanced" not in out  # the live run never left its first step either
    backtest_tick = int(tick)
    since = re.search(r"since (\S+): ", why)
    assert since is not None
    assert (backtest_tick, when) == (live_tick, format_time(rolled_back)), out
    assert since.group(1) == live["rollback"]["breachingSince"], out
    # Evaluated at the same instant on the same samples: the same values, to the digit shown.
    assert why == live["rollback"]["message"], (why, live["rollback"]["message"])
    print(
        f"\nlive: rolled back at tick {live_tick} ({format_time(rolled_back)}), breaching "
        f"since {live['rollback']['breachingSince']}; backtest: tick {backtest_tick} ({when}), "
        f"breaching since {since.group(1)}"
    )
