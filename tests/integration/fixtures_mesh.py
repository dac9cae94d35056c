"""Fixtures for the mesh part of the local stack: the real Prometheus (one per session,
scraping every second) and a factory of meshes (model servers per version and a router that
follows a VirtualService), each registered as Prometheus targets and stopped after the test.
A missing prometheus binary fails the fixture (never a skip)."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.mesh import Mesh
from canaryguard_testbed.prometheus_server import (
    PrometheusNotInstalledError,
    PrometheusServer,
)

__all__ = ["MeshFactory", "mesh", "prometheus"]

MeshFactory = Callable[..., Mesh]


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A running Prometheus (scrape interval 1 s, TSDB in a temporary folder). Tests that
    stop it must start it again (`restart()` keeps port and data)."""
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), scrape_interval="1s")
    try:
        server.start()
    except PrometheusNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mesh(
    control_plane: ControlPlane, prometheus: PrometheusServer, tmp_path: Path
) -> Iterator[MeshFactory]:
    """`mesh(namespace, virtual_service="fraud-model", scenario="healthy", service=...,
    route=None, seed=1, wait_scraped=True)` starts a Mesh, registered with `prometheus`,
    and (by default) waits until Prometheus scrapes it. Everything stops after the test."""
    started: list[Mesh] = []

    def start(
        namespace: str,
        virtual_service: str = "fraud-model",
        *,
        scenario: str | Path = "healthy",
        service: str = "fraud-model",
        route: str | None = None,
        seed: int = 1,
        wait_scraped: bool = True,
        http_route: str | None = None,
    ) -> Mesh:
        if not prometheus.running:
            prometheus.start()  # a test that stopped it and failed before starting it again
        started_mesh = Mesh(
            kubeconfig=control_plane.admin_kubeconfig,
            namespace=namespace,
            virtual_service=virtual_service,
            service=service,
            scenario=scenario,
            route=route,
            seed=seed,
            http_route=http_route,
            prometheus=prometheus,
            workdir=tmp_path / f"mesh-{len(started)}",
        )
        started.append(started_mesh)
        started_mesh.start()
        if wait_scraped:
            started_mesh.wait_scraped()
        return started_mesh

    try:
        yield start
    finally:
        for started_mesh in reversed(started):
            started_mesh.stop()
