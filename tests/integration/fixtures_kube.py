"""Fixtures for the kube part of the local stack: one real etcd + kube-apiserver per session
with the Istio networking CRDs and every CRD of the project installed, and a fresh namespace
per test. A binary that `make bins` has not built fails the fixture (never a skip)."""

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from canaryguard_testbed.bins import MissingBinaryError, gateway_api_crds, istio_crds
from canaryguard_testbed.controlplane import ControlPlane, KubectlError

PROJECT_CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running control plane (admin kubeconfig at `.admin_kubeconfig`), stopped at the end.
    No kube-controller-manager runs: nothing garbage-collects, schedules or finalizes."""
    cp = ControlPlane()
    try:
        cp.start()
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        for crd in [istio_crds(), gateway_api_crds(), *sorted(PROJECT_CRDS_DIR.glob("*.yaml"))]:
            try:
                cp.install_crds(crd)
            except KubectlError as exc:
                pytest.fail(f"{crd} was rejected: {exc.stderr.strip()}", pytrace=False)
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test, deleted afterwards. Without a namespace
    controller the deletion stays Terminating, so names are never reused."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug or 'test'}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
