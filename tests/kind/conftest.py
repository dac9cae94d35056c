"""The kind tier's session: one kind cluster from canaryguard's own node image, the operator
installed from its image and manifests, the test bed deployed in namespace e2e.

    make e2e-kind                              # builds what is missing, then runs this tier
    .venv/bin/python -m pytest -m kind tests/kind
    KEEP_CLUSTER=1 make e2e-kind               # leave the cluster up afterwards

The cluster (CANARYGUARD_KIND_CLUSTER, default canaryguard-e2e-<hash of this checkout's path>,
so checkouts sharing a Docker engine never touch each other's) is reused when a healthy one
is left from an interrupted run (its namespaces e2e and canaryguard-system are deleted
first), else deleted and created again; it is deleted at the end with every container it
made. A failing test's report carries the operator's log, Pod states and Events; the end of
the run prints where the time went.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from canaryguard_testbed import bins
from tests.integration.fixtures_operator import wait_for
from tests.kind import stack
from tests.kind.cluster import (
    FIGURES,
    ROOT,
    TIMINGS,
    KindCluster,
    KindError,
    docker_answers,
    image_id,
)

_CLUSTER: list[KindCluster] = []  # the session's, once created (for failure reports)


def pins() -> dict[str, str]:
    values = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def default_cluster_name() -> str:
    """`canaryguard-e2e-<6 hex digits of this checkout's path>`: stable for this checkout (an
    interrupted run's cluster is found again), distinct from other checkouts' clusters on the
    same Docker engine (which this tier must never reuse or delete)."""
    return f"canaryguard-e2e-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:6]}"


def need(what: str, fix: str) -> None:
    """Stop the session: the kind tier cannot run without `what`."""
    pytest.exit(f"kind tier: {what}; {fix}", returncode=1)


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[KindCluster]:
    """The session's cluster with Istio's CRDs, the operator and the test bed, all ready."""
    problem = docker_answers()
    if problem:
        need(problem, "start one with `make docker-engine` (hack/docker-engine.sh start)")
    versions = pins()
    kind = bins.bin_dir() / f"kind-{versions['KIND_VERSION']}" / "kind"
    if not kind.is_file():
        need(f"kind {versions['KIND_VERSION']} is not built ({kind})", "run `make kind`")
    try:
        kubectl = bins.find_binary("kubectl", versions["KUBE_VERSION"])
        crds = bins.istio_crds()
    except bins.MissingBinaryError as exc:
        need(str(exc), "run `make bins`")
    node_image = os.environ.get(
        "CANARYGUARD_KIND_NODE_IMAGE", f"canaryguard/kind-node:{versions['KUBE_VERSION']}"
    )
    if image_id(node_image) is None:
        need(f"the node image {node_image} is missing", "run `make node-image`")
    images = [stack.operator_image(), stack.testbed_image(), stack.PROMETHEUS_IMAGE]
    missing = [image for image in images if image_id(image) is None]
    if missing:
        need(f"images {', '.join(missing)} are missing", "run `make images`")

    name = os.environ.get("CANARYGUARD_KIND_CLUSTER") or default_cluster_name()
    workdir = Path(tempfile.gettempdir()) / f"canaryguard-kind-{name}"
    cluster = KindCluster(name, kind, kubectl, node_image, workdir, TIMINGS)
    try:
        cluster.create()
    except KindError as exc:
        pytest.exit(f"kind tier: could not create the cluster:\n{exc}", returncode=1)
    _CLUSTER.append(cluster)
    ready = False
    try:
        if cluster.reused:
            with TIMINGS.phase("reuse cluster: delete what the last run left"):
                stack.reset(cluster)
        with TIMINGS.phase("kind load docker-image (operator, test bed, Prometheus)"):
            cluster.load(*images)
        with TIMINGS.phase("Istio CRDs"):
            stack.install_istio_crds(cluster, crds)
        with TIMINGS.phase("kubectl apply -k tests/kind/manifests/install, operator ready"):
            stack.install_operator(cluster)
        with TIMINGS.phase("test bed ready (Prometheus, receiver, 3 meshes with load)"):
            stack.install_stack(cluster)
        with TIMINGS.phase("Prometheus scrapes every target"):
            wait_for("every scrape target up", lambda: every_target_up(cluster), timeout=90)
        ready = True
        yield cluster
    except BaseException:
        if not ready:  # the cluster is deleted below: its state goes to the output now
            sys.stderr.write(
                f"\n--- kind cluster state at the failed set-up ---\n{cluster.diagnostics()}\n"
            )
        raise
    finally:
        if os.environ.get("KEEP_CLUSTER") == "1":
            sys.stderr.write(
                f"\nkind tier: keeping cluster {name} (KEEP_CLUSTER=1); kubeconfig "
                f"{cluster.kubeconfig}; delete it with: {kind} delete cluster --name {name}\n"
            )
        else:
            with TIMINGS.phase("kind delete cluster"):
                cluster.delete()


def every_target_up(cluster: KindCluster) -> bool:
    """Every target of the cluster's Prometheus (routers, model servers, the operator) is up."""
    up = cluster.prometheus_query("up")
    expected = 3 * len(stack.SERVICES) + 1
    return len(up) == expected and all(sample["value"][1] == "1" for sample in up)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """A failed test (or failed set-up) gets the cluster's state in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _CLUSTER and not _CLUSTER[0].deleted:
        try:
            text = _CLUSTER[0].diagnostics()
        except Exception as exc:  # a report must not fail on its diagnostics
            text = f"(diagnostics failed: {exc})"
        report.sections.append(("kind cluster state", text))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        TIMINGS.add(f"test {report.nodeid.split('::')[-1]} ({report.outcome})", report.duration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS.phases:
        terminalreporter.write_sep("-", "kind tier: where the time went")
        terminalreporter.write_line(TIMINGS.report())
    if FIGURES:
        terminalreporter.write_sep("-", "kind tier: figures")
        for line in FIGURES:
            terminalreporter.write_line(f"  {line}")
