"""`canaryguard status|explain|pause|resume` (and `kubectl canary ...`) against a real API
server. The rollouts are the shipped fraud-model example; their statuses are what the real
engine decides over a few ticks, written through the status subresource as the operator
writes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryguard.cli.main import main
from canaryguard.core import engine
from canaryguard.core.observations import Observations, SloObservation
from canaryguard.core.sequential import Stratum
from canaryguard.core.spec import parse_spec
from canaryguard.core.status import Status
from canaryguard_testbed.bins import find_binaries
from canaryguard_testbed.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/fraud-model/canaryrollout.yaml"
SLOS = ("error-rate", "p99-latency", "fraud-flag-rate")

# The example's error rate has `confidence`: it is judged on the counts since the step.
HEALTHY = {
    "error-rate": SloObservation(0.002, 0.0025, 5000, 400, counts=Stratum(5000, 10, 400, 1)),
    "p99-latency": SloObservation(80.0, 84.0, 5000, 400),
    "fraud-flag-rate": SloObservation(0.031, 0.030, 5000, 600),
    "score-drift": SloObservation(0.0, 0.02, 5000, 2500),
}
BREACH = {
    **HEALTHY,
    "error-rate": SloObservation(0.002, 0.09, 5000, 400, counts=Stratum(5000, 10, 400, 36)),
}


def rollout_body(namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    return body


def engine_status(
    body: dict[str, Any], story: list[tuple[float, dict[str, SloObservation]]]
) -> Status:
    """Run the real engine over (minutes ago, observations) ticks; the status it leaves."""
    spec = parse_spec(body)
    status = Status()
    now = datetime.now(UTC)
    for minutes_ago, observed in story:
        result = engine.tick(
            spec, status, Observations(dict(observed)), now - timedelta(minutes=minutes_ago)
        )
        status = result.status
    return status


def create(cp: ControlPlane, body: dict[str, Any], status: Status | None) -> None:
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    if status is not None:
        meta = body["metadata"]
        cp.kubectl(
            "patch", "canaryrollout", meta["name"], "-n", meta["namespace"],
            "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status.to_dict()}),
        )  # fmt: skip


def rolled_back_status(body: dict[str, Any]) -> Status:
    started = [(20.0, HEALTHY), (17.0, HEALTHY), (14.0, HEALTHY)]
    breaching = [(6.0, BREACH), (5.0, BREACH), (3.0, BREACH)]
    status = engine_status(body, started + breaching)
    assert status.phase == "RolledBack", status.message
    return engine.record_page_result(
        status, True, False, None, datetime.now(UTC) - timedelta(minutes=3)
    )


def progressing_status(body: dict[str, Any]) -> Status:
    story = [(6.0, HEALTHY), (3.0, HEALTHY), (1.5, HEALTHY), (0.5, BREACH)]
    status = engine_status(body, story)
    assert status.phase == "Progressing", status.message
    return status


@pytest.fixture
def rollouts(control_plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    """Three rollouts in the namespace: rolled back, progressing with a breach, never ticked."""
    bodies = {n: rollout_body(namespace, n) for n in ("fraud-model", "scorer", "ranker")}
    create(control_plane, bodies["fraud-model"], rolled_back_status(bodies["fraud-model"]))
    create(control_plane, bodies["scorer"], progressing_status(bodies["scorer"]))
    create(control_plane, bodies["ranker"], None)
    return bodies


class Cli:
    """Runs `canaryguard ...` in this process, as the admin unless told otherwise."""

    def __init__(self, cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
        self.cp = cp
        self.capsys = capsys

    def __call__(self, *args: str, kubeconfig: Path | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        config = str(kubeconfig or self.cp.admin_kubeconfig)
        code = main([*args, "--kubeconfig", config])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(control_plane: ControlPlane, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(control_plane, capsys)


def test_status_lists_every_rollout_of_the_namespace(
    cli: Cli, namespace: str, rollouts: Any
) -> None:
    code, out, err = cli("status", "-n", namespace)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "STEP", "CANARY", "MESSAGE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["fraud-model", "ranker", "scorer"]
    assert rows["fraud-model"].split()[1:4] == ["RolledBack", "2/4", "0%"]
    assert "rolled back" in rows["fraud-model"]
    assert rows["scorer"].split()[1:4] == ["Progressing", "2/4", "25%"]
    assert rows["ranker"].split()[1:4] == ["Pending", "-", "-"]


def test_status_across_namespaces_names_the_namespace(
    cli: Cli, namespace: str, rollouts: Any
) -> None:
    code, out, err = cli("status", "-A")
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    mine = [line.split() for line in out.splitlines() if line.startswith(namespace + " ")]
    assert [row[1] for row in mine] == ["fraud-model", "ranker", "scorer"]


def test_status_of_one_rollout_shows_each_slo_and_the_history(
    cli: Cli, namespace: str, rollouts: Any
) -> None:
    code, out, err = cli("status", "scorer", "-n", namespace)
    assert code == 0, err
    assert "Phase:      Progressing" in out
    assert "Step:       2/4, canary 25%" in out
    slo_rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith("  ") and line.split() and line.split()[0] in SLOS
    }
    assert slo_rows["error-rate"][1:4] == ["breach", "0.002", "0.09"]
    assert slo_rows["error-rate"][4] == "5000/400"
    assert slo_rows["error-rate"][5].endswith("Z")  # breaching since
    assert slo_rows["p99-latency"][1:4] == ["healthy", "80", "84"]
    assert slo_rows["p99-latency"][5] == "-"
    assert "History (oldest first):" in out
    assert "StepAdvanced" in out or "Started" in out


def test_status_as_json_is_the_resource(cli: Cli, namespace: str, rollouts: Any) -> None:
    code, out, _ = cli("status", "fraud-model", "-n", namespace, "-o", "json")
    assert code == 0
    obj = json.loads(out)
    assert obj["kind"] == "CanaryRollout"
    assert obj["status"]["phase"] == "RolledBack"


def test_explain_says_why_it_was_rolled_back_and_that_on_call_was_paged(
    cli: Cli, namespace: str, rollouts: Any
) -> None:
    code, out, err = cli("explain", "fraud-model", "-n", namespace)
    assert code == 0, err
    assert f"{namespace}/fraud-model was rolled back" in out
    assert "because an SLO stayed in breach for its whole window" in out
    assert "SLO error-rate had the canary at 0.09 against the baseline's 0.002" in out
    assert "for its window of 1m" in out
    assert "beyond relative 0% shown at 99% confidence" in out
    assert "On-call was paged: PagerDuty accepted the trigger" in out
    decisions = out.split("Latest decisions, newest first")[1].splitlines()[1:]
    assert all(line.startswith("- ") for line in decisions)
    assert "PageDelivered" in decisions[0]
    assert "RolledBack because an SLO stayed in breach" in decisions[1]
    assert len(decisions) <= 5


def test_explain_a_progressing_rollout_names_the_breach_and_what_follows(
    cli: Cli, namespace: str, rollouts: Any
) -> None:
    code, out, err = cli("explain", "scorer", "-n", namespace, "--last", "2")
    assert code == 0, err
    assert "is Progressing at step 2 of 4: fraud-model/v2 takes 25% of the traffic" in out
    assert "SLO error-rate is in breach since" in out
    assert "If it lasts its 1m window, the rollout is rolled back." in out
    assert "SLO error-rate evidence since the analysis began (events/requests per step)" in out
    assert "Healthy at the last tick: p99-latency, fraud-flag-rate, score-drift." in out
    assert "(2 of " in out


def test_explain_a_rollout_never_ticked(cli: Cli, namespace: str, rollouts: Any) -> None:
    code, out, _ = cli("explain", "ranker", "-n", namespace)
    assert code == 0
    assert "has not started" in out
    assert "No decisions yet" in out


def test_pause_and_resume_set_spec_paused(
    cli: Cli, control_plane: ControlPlane, namespace: str, rollouts: Any
) -> None:
    def paused() -> Any:
        out = control_plane.kubectl(
            "get", "canaryrollout", "scorer", "-n", namespace, "-o", "json"
        ).stdout
        return json.loads(out)["spec"].get("paused")

    assert paused() in (None, False)
    code, out, err = cli("pause", "scorer", "-n", namespace)
    assert code == 0, err
    assert "paused: weights hold" in out
    assert paused() is True
    code, out, _ = cli("pause", "scorer", "-n", namespace)
    assert code == 0 and "already paused" in out
    code, out, _ = cli("explain", "scorer", "-n", namespace)
    assert "It is paused by spec.paused" in out
    code, out, err = cli("resume", "scorer", "-n", namespace)
    assert code == 0, err
    assert "resumed" in out
    assert paused() is False
    code, out, _ = cli("resume", "fraud-model", "-n", namespace)
    assert code == 0 and "it has finished" in out


# --- errors are one clear line, never a traceback --------------------------------------------


def test_a_missing_rollout_is_a_clear_error(cli: Cli, namespace: str, rollouts: Any) -> None:
    for command in ("status", "explain", "pause", "resume"):
        code, out, err = cli(command, "nope", "-n", namespace)
        assert code == 1, command
        assert err.strip() == f'error: CanaryRollout "nope" not found in namespace "{namespace}"'
        assert out == ""


def test_an_empty_namespace_says_so(cli: Cli, namespace: str) -> None:
    code, out, _ = cli("status", "-n", namespace)
    assert code == 0
    assert out.strip() == f'No CanaryRollouts in namespace "{namespace}".'


def test_no_cluster_access_is_a_clear_error(
    cli: Cli, control_plane: ControlPlane, tmp_path: Path
) -> None:
    config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens there
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    code, _, err = cli("status", "-n", "default", kubeconfig=dead)
    assert code == 1
    assert err.startswith("error: cannot reach the API server at https://127.0.0.1:1")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("status", kubeconfig=tmp_path / "missing.kubeconfig")
    assert code == 1
    assert err.strip() == f"error: kubeconfig {tmp_path / 'missing.kubeconfig'} does not exist"


def test_a_forbidden_request_is_a_clear_error(
    cli: Cli, control_plane: ControlPlane, namespace: str
) -> None:
    nobody = control_plane.service_account_kubeconfig(namespace, "nobody")
    code, _, err = cli("status", "-n", namespace, kubeconfig=nobody)
    assert code == 1
    assert err.startswith(
        f'error: cannot list CanaryRollouts in namespace "{namespace}": forbidden (403)'
    )
    assert "Traceback" not in err


# --- the kubectl plugin ------------------------------------------------------------------------


def test_kubectl_finds_the_plugin_and_runs_the_same_commands(
    control_plane: ControlPlane, namespace: str, rollouts: Any
) -> None:
    plugin = Path(sys.executable).with_name("kubectl-canary")
    assert plugin.exists(), "kubectl-canary is not installed (pip install -e .)"
    env = {
        **os.environ,
        "PATH": f"{plugin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(control_plane.admin_kubeconfig),
    }
    kubectl = str(find_binaries().kubectl)
    listed = subprocess.run(
        [kubectl, "plugin", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert str(plugin) in listed.stdout
    result = subprocess.run(
        [kubectl, "canary", "status", "-n", namespace],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "fraud-model" in result.stdout and "RolledBack" in result.stdout
    helped = subprocess.run(
        [kubectl, "canary", "pause", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: kubectl canary pause")
