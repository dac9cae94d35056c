"""A kind cluster for the kind tier: created from canaryguard's own node image (reused when a
healthy one is left from an interrupted run, else deleted and created again), driven with the
locally built kubectl, and deleted with every container it made.

Nothing here is pulled: the node image and every image loaded into the node are built by
`make images kind-images node-image`. Pods in the cluster are reached through the API
server's service proxy, so the tests need no port mapping on the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).resolve().parent / "manifests" / "cluster.yaml"


class KindError(RuntimeError):
    """A command of the kind tier failed; the message holds its output's tail."""


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    cmd: Sequence[str],
    *,
    input: str | None = None,  # same name as subprocess.run's
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; with `check`, a failure raises KindError naming it with its output."""
    try:
        result = subprocess.run(
            list(cmd), input=input, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise KindError(f"{' '.join(cmd)} did not finish within {timeout:g} s") from exc
    if check and result.returncode != 0:
        raise KindError(
            f"{' '.join(cmd)} failed (exit {result.returncode}):\n"
            f"{tail(result.stdout + result.stderr)}"
        )
    return result


@dataclass
class Timings:
    """Where the time went: named phases in the order they ran."""

    phases: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - started))

    def add(self, name: str, seconds: float) -> None:
        self.phases.append((name, seconds))

    def report(self) -> str:
        width = max((len(name) for name, _ in self.phases), default=0)
        lines = [f"  {name:<{width}}  {seconds:7.1f} s" for name, seconds in self.phases]
        total = sum(seconds for _, seconds in self.phases)
        lines.append(f"  {'total':<{width}}  {total:7.1f} s")
        return "\n".join(lines)


TIMINGS = Timings()  # the session's, printed at the end of the run
FIGURES: list[str] = []  # measured by the scenarios, printed at the end of the run


def docker_answers() -> str | None:
    """None when a Docker engine answers, else what is wrong."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    result = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=20)
    if result.returncode != 0:
        return f"no Docker engine answers ({tail(result.stderr, 3)})"
    return None


def image_id(image: str) -> str | None:
    result = run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False)
    return result.stdout.strip() if result.returncode == 0 else None


@dataclass
class KindCluster:
    """One kind cluster, `name`, from `node_image`; kubectl runs with `kubeconfig`."""

    name: str
    kind: Path
    kubectl_bin: Path
    node_image: str
    workdir: Path
    timings: Timings = field(default_factory=Timings)
    reused: bool = False
    deleted: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def node(self) -> str:
        """The node's container (one control-plane node)."""
        return f"{self.name}-control-plane"

    # --- commands --------------------------------------------------------------------------

    def kind_cmd(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        return run([str(self.kind), *args], timeout=timeout, check=check).stdout

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # same name as subprocess.run's
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """The built kubectl against this cluster as its admin (never the user's
        kubeconfig or cache)."""
        cmd = [
            str(self.kubectl_bin),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        return run(cmd, input=input, check=check, timeout=timeout, env=self.env())

    def env(self) -> dict[str, str]:
        """The environment for a kubectl plugin: KUBECONFIG is this cluster's."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.workdir / "kubectl-cache")
        return env

    def get_json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o=json").stdout)
        return data

    def proxy_path(self, namespace: str, service: str, port: int, path: str) -> str:
        return (
            f"/api/v1/namespaces/{namespace}/services/http:{service}:{port}/proxy"
            f"/{path.lstrip('/')}"
        )

    def service_get(self, namespace: str, service: str, port: int, path: str) -> str:
        """GET a Service's `path` through the API server's service proxy."""
        return self.kubectl("get", "--raw", self.proxy_path(namespace, service, port, path)).stdout

    def service_post(
        self, namespace: str, service: str, port: int, path: str, body: dict[str, Any]
    ) -> str:
        """POST JSON to a Service's `path` through the API server's service proxy."""
        return self.kubectl(
            "create",
            "--raw",
            self.proxy_path(namespace, service, port, path),
            "-f",
            "-",
            input=json.dumps(body),
        ).stdout

    def prometheus_query(self, query: str) -> list[dict[str, Any]]:
        """An instant query to the cluster's Prometheus (namespace e2e)."""
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": query})
        data = json.loads(self.service_get("e2e", "prometheus", 9090, path))
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    # --- life cycle ------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.name in self.kind_cmd("get", "clusters", timeout=30).split()

    def healthy(self) -> str | None:
        """None when the existing cluster can be reused, else why not."""
        state = run(
            ["docker", "inspect", "--format", "{{.State.Status}} {{.Image}}", self.node],
            check=False,
        )
        if state.returncode != 0:
            return f"its node container {self.node} is missing"
        status, _, image = state.stdout.strip().partition(" ")
        if status != "running":
            return f"its node container is {status}"
        if image != image_id(self.node_image):
            return f"its node runs another image than the current {self.node_image}"
        self.write_kubeconfig()
        ready = self.kubectl("get", "--raw", "/readyz", check=False, timeout=15)
        if ready.returncode != 0 or ready.stdout.strip() != "ok":
            return f"its API server is not ready ({tail(ready.stderr, 3)})"
        return None

    def write_kubeconfig(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = self.kind_cmd("get", "kubeconfig", "--name", self.name, timeout=30)
        self.kubeconfig.write_text(text)
        self.kubeconfig.chmod(0o600)

    def create(self) -> None:
        """Reuse a healthy cluster of this name, else (delete it and) create one."""
        if self.exists():
            why = self.healthy()
            if why is None:
                self.reused = True
                return
            with self.timings.phase(f"delete unhealthy cluster ({why})"):
                self.delete()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.timings.phase("kind create cluster"):
            try:
                self.kind_cmd(
                    "create",
                    "cluster",
                    "--name",
                    self.name,
                    "--image",
                    self.node_image,
                    "--config",
                    str(CONFIG),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--wait",
                    "120s",
                    "--retain",
                    timeout=400,
                )
                self.deleted = False
            except KindError as exc:
                # Retained for its logs, then deleted: nothing is left behind.
                logs = self.workdir / "create-failure-logs"
                self.export_logs(logs)
                self.delete()
                raise KindError(f"{exc}\n(the node's logs: {logs})") from exc

    def load(self, *images: str) -> None:
        """Load local images into the node (kind skips those already there)."""
        self.kind_cmd("load", "docker-image", "--name", self.name, *images, timeout=600)

    def containers(self) -> list[str]:
        """Every container, running or not, that belongs to this cluster."""
        out = run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label=io.x-k8s.kind.cluster={self.name}",
                "--format",
                "{{.Names}}",
            ],
            check=False,
        ).stdout
        return out.split()

    def delete(self) -> None:
        """Delete the cluster and make sure none of its containers is left."""
        self.deleted = True
        self.kind_cmd("delete", "cluster", "--name", self.name, timeout=180, check=False)
        left = self.containers()
        if left:
            run(["docker", "rm", "-f", "-v", *left], check=False, timeout=120)
        left = self.containers()
        if left:
            raise KindError(f"containers of kind cluster {self.name} left behind: {left}")
        # Its kubeconfig and kubectl's cache go too; logs of a failed creation stay.
        self.kubeconfig.unlink(missing_ok=True)
        shutil.rmtree(self.workdir / "kubectl-cache", ignore_errors=True)
        with contextlib.suppress(OSError):
            self.workdir.rmdir()

    def export_logs(self, directory: Path) -> None:
        self.kind_cmd("export", "logs", str(directory), "--name", self.name, check=False)

    # --- diagnostics -----------------------------------------------------------------------

    def diagnostics(self) -> str:
        """The operator's log, Pod states and recent Events, for a failure report."""
        parts = []
        for title, args in (
            ("Pods", ["get", "pods", "-A", "-o", "wide"]),
            ("CanaryRollouts", ["get", "canaryrollouts", "-A", "-o", "wide"]),
            (
                "operator log (current)",
                ["-n", "canaryguard-system", "logs", "deployment/canaryguard", "--tail=150"],
            ),
            (
                "operator log (previous container, if any)",
                [
                    "-n",
                    "canaryguard-system",
                    "logs",
                    "deployment/canaryguard",
                    "--previous",
                    "--tail=50",
                ],
            ),
            ("Events", ["get", "events", "-A", "--sort-by=.lastTimestamp"]),
        ):
            result = self.kubectl(*args, check=False, timeout=30)
            text = result.stdout if result.returncode == 0 else result.stderr
            if title == "Events":
                text = tail(text, 60)
            parts.append(f"--- {title} ---\n{text.rstrip()}")
        return "\n".join(parts)
