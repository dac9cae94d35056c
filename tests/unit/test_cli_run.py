"""`canaryguard run`'s leader-election flags: off unless asked; in a pod, the Lease's
namespace and this replica's identity come from the downward API."""

from __future__ import annotations

from pathlib import Path

import pytest

from canaryguard.cli import run
from canaryguard.cli.main import build_parser
from canaryguard.runtime.leader import Election


def election(argv: list[str]) -> Election | None:
    return run.election_from(build_parser().parse_args(["run", *argv]))


@pytest.fixture(autouse=True)
def no_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(run, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")


def test_leader_election_is_off_unless_asked() -> None:
    assert election([]) is None
    assert election(["--no-leader-elect", "--lease-namespace", "x"]) is None


def test_in_a_pod_the_downward_api_names_the_namespace_and_the_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "canaryguard-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "canaryguard-system")
    assert election(["--leader-elect"]) == Election(
        "canaryguard-system", "canaryguard", "canaryguard-7d9f-abcde", 15
    )


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "pod")
    monkeypatch.setenv("POD_NAMESPACE", "ns")
    argv = ["--leader-elect", "--lease-name", "cg", "--lease-namespace", "ops"]
    argv += ["--leader-identity", "me", "--lease-duration", "3s"]
    assert election(argv) == Election("ops", "cg", "me", 3)


def test_without_a_pod_the_identity_is_the_host_and_a_random_suffix() -> None:
    first = election(["--leader-elect", "--lease-namespace", "ops"])
    second = election(["--leader-elect", "--lease-namespace", "ops"])
    assert first is not None and second is not None
    assert first.identity != second.identity


def test_the_service_accounts_namespace_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "namespace"
    path.write_text("canaryguard-system\n")
    monkeypatch.setattr(run, "SERVICE_ACCOUNT_NAMESPACE", path)
    found = election(["--leader-elect"])
    assert found is not None and found.namespace == "canaryguard-system"


def test_without_any_namespace_it_exits_saying_what_to_set() -> None:
    with pytest.raises(SystemExit, match="--lease-namespace"):
        election(["--leader-elect"])


@pytest.mark.parametrize("value", ["0s", "1500ms", "soon"])
def test_a_lease_duration_is_whole_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--lease-duration", value])
    assert "--lease-duration" in capsys.readouterr().err


def test_each_shard_elects_its_own_leader_on_a_lease_of_its_own() -> None:
    argv = ["--leader-elect", "--lease-namespace", "ops"]
    zero, one = election([*argv, "--shard", "0/2"]), election([*argv, "--shard", "1/2"])
    assert zero is not None and one is not None
    assert (zero.name, one.name) == ("canaryguard-shard-0-of-2", "canaryguard-shard-1-of-2")
    named = election([*argv, "--shard", "1/2", "--lease-name", "mine"])
    assert named is not None and named.name == "mine"
