"""The whole local stack for one service, started and stopped as one: kube-apiserver and etcd
with the CRDs and the shipped RBAC, Prometheus, a PagerDuty receiver, the service's mesh
(router and model servers) with steady load through it, and the operator as a child process
logged in as its ServiceAccount. Used by `make demo`.

    stack = LocalStack(namespace="ml", resources=[virtual_service, secret])
    try:
        stack.start()
        stack.control_plane.kubectl("apply", "-f", "rollout.yaml")
    finally:
        stack.stop()

Every child process carries `STACK_TAG_ENV` in its environment, so `leftover_processes`
can find any that outlived `stop()` (there should be none).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from canaryguard_testbed.bins import gateway_api_crds, istio_crds
from canaryguard_testbed.childproc import (
    ChildProcessError,
    free_port,
    http_ok,
    log_tail,
    python_module_args,
    spawn,
    terminate,
)
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.mesh import Mesh
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.project import crds_dir, rbac_dir
from canaryguard_testbed.prometheus_server import PrometheusServer

OPERATOR_NAMESPACE = "canaryguard-system"
OPERATOR_SERVICE_ACCOUNT = "canaryguard"
STACK_TAG_ENV = "CANARYGUARD_STACK_TAG"

Progress = Callable[[str], None]


class OperatorProcess:
    """`canaryguard run` as a child process watching `namespaces`, logged in from
    `kubeconfig`, with its JSON log in `log_path`; `args` are more flags of `run` (the
    Prometheus and PagerDuty addresses it may send to, `--allow-prometheus=URL`...,
    `--leader-elect`...), and `env` more environment (e.g. POD_NAME and POD_NAMESPACE, as the
    downward API sets them). `module` is what `python -m` runs (`canaryguard`, or the fault
    campaign's `canaryguard_testbed.crashpoints`)."""

    def __init__(
        self,
        kubeconfig: Path,
        namespaces: Sequence[str],
        log_path: Path,
        args: Sequence[str] = (),
        *,
        module: str = "canaryguard",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = tuple(namespaces)
        self.log_path = log_path
        self.args = tuple(args)
        self.module = module
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness_port = 0
        self.metrics_port = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start the operator; return once its liveness endpoint answers. Raises
        `ChildProcessError` with the log's tail if it exits or is not live in time."""
        self.liveness_port, self.metrics_port = free_port(), free_port()
        self.proc = spawn(
            python_module_args(
                self.module,
                "run",
                f"--kubeconfig={self.kubeconfig}",
                *(f"--namespace={ns}" for ns in self.namespaces),
                f"--liveness=127.0.0.1:{self.liveness_port}",
                f"--metrics=127.0.0.1:{self.metrics_port}",
                "--log-format=json",
                *self.args,
            ),
            self.log_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        deadline = time.monotonic() + timeout
        while not http_ok(self.liveness_url):
            if self.proc.poll() is not None:
                raise ChildProcessError(
                    f"the operator exited with code {self.proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise ChildProcessError(
                    f"the operator was not live after {timeout:.0f}s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or before it started), else its exit code."""
        return self.proc.poll() if self.proc is not None else None

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def stop(self) -> None:
        """SIGTERM (kopf shuts down cleanly), SIGKILL after 10 s."""
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status write (a crash, an OOM kill, a lost node)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


def allow_flags(prometheus_url: str, pagerduty_url: str) -> list[str]:
    """`run`'s flags that let rollouts use this stack's Prometheus and PagerDuty receiver
    (and nothing else)."""
    return [f"--allow-prometheus={prometheus_url}", f"--allow-pagerduty={pagerduty_url}"]


class LocalStack:
    """Everything `make demo` runs, on 127.0.0.1, under `workdir` (a new temporary folder by
    default, removed by `stop(keep_workdir=False)`).

    `resources` (manifests as dicts, e.g. the VirtualService and the PagerDuty Secret) are
    applied in `namespace` before any traffic flows. Start and stop from the main thread:
    the kernel stops the children when the thread that started them ends.
    """

    def __init__(
        self,
        *,
        namespace: str,
        resources: Sequence[Mapping[str, Any]] = (),
        service: str = "fraud-model",
        virtual_service: str = "fraud-model",
        rate: float = 90.0,
        load_seconds: float = 3600.0,
        workdir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.namespace = namespace
        self.resources = list(resources)
        self.service = service
        self.virtual_service = virtual_service
        self.rate = rate
        self.load_seconds = load_seconds
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="canaryguard-stack-"))
        self.tag = os.environ.get(STACK_TAG_ENV) or uuid.uuid4().hex
        self._progress = progress or (lambda _message: None)
        self.control_plane = ControlPlane(self.workdir / "kube")
        self.prometheus = PrometheusServer(self.workdir / "prometheus", scrape_interval="1s")
        self.pagerduty = PagerDutyReceiver(port=0)
        self.mesh: Mesh | None = None
        self.operator: OperatorProcess | None = None
        self.load: subprocess.Popen[bytes] | None = None
        self.operator_kubeconfig: Path | None = None
        self._pagerduty_started = False

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every part in order, reporting each through `progress`. On failure whatever
        started is stopped again and the error propagates."""
        # Children inherit the tag, so leftovers can be found by it (see leftover_processes).
        os.environ[STACK_TAG_ENV] = self.tag
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        cp = self.control_plane
        cp.start()
        cp.install_crds(istio_crds(), gateway_api_crds(), *sorted(crds_dir().glob("*.yaml")))
        self._progress(
            f"kube-apiserver and etcd ready at {cp.server}, CRDs installed "
            f"({time.monotonic() - began:.1f}s)"
        )

        cp.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        cp.kubectl("apply", "-f", str(rbac_dir()))
        self.operator_kubeconfig = cp.service_account_kubeconfig(
            OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT
        )
        self._progress(
            f"shipped RBAC applied: ServiceAccount {OPERATOR_NAMESPACE}/"
            f"{OPERATOR_SERVICE_ACCOUNT} bound to ClusterRole canaryguard"
        )

        cp.kubectl("create", "namespace", self.namespace)
        if self.resources:
            cp.kubectl("apply", "-f", "-", input=json.dumps(_as_list(self.resources)))

        began = time.monotonic()
        self.prometheus.start()
        self._progress(
            f"Prometheus ready at {self.prometheus.url} ({time.monotonic() - began:.1f}s)"
        )
        self.pagerduty.start()
        self._pagerduty_started = True
        self._progress(f"PagerDuty Events API v2 receiver at {self.pagerduty.url}")

        began = time.monotonic()
        self.mesh = Mesh(
            kubeconfig=cp.admin_kubeconfig,
            namespace=self.namespace,
            virtual_service=self.virtual_service,
            service=self.service,
            scenario="healthy",
            prometheus=self.prometheus,
            workdir=self.workdir / "mesh",
        )
        self.mesh.start()
        self.load = spawn(
            python_module_args(
                "canaryguard_testbed.loadgen",
                f"--url={self.mesh.predict_url}",
                f"--rate={self.rate:g}",
                f"--max-requests={int(self.rate * self.load_seconds)}",
                f"--max-duration={self.load_seconds:g}",
                "--seed=7",
            ),
            self.workdir / "load.log",
        )
        self.mesh.wait_scraped()
        self._progress(
            f"router and model servers v1, v2 scraped by Prometheus; load {self.rate:g} req/s "
            f"through {self.mesh.router_url} ({time.monotonic() - began:.1f}s)"
        )

        began = time.monotonic()
        self.operator = OperatorProcess(
            self.operator_kubeconfig,
            [self.namespace],
            self.workdir / "operator.log",
            # SLO values on screen at every 1 s tick, not once a minute.
            [*allow_flags(self.prometheus.url, self.pagerduty.url), "--status-heartbeat=1s"],
        )
        self.operator.start()
        self._progress(
            f"operator running as system:serviceaccount:{OPERATOR_NAMESPACE}:"
            f"{OPERATOR_SERVICE_ACCOUNT}, watching namespace {self.namespace} "
            f"(pid {self.operator.pid}, {time.monotonic() - began:.1f}s)"
        )

    def stop(self, keep_workdir: bool = True) -> None:
        """Stop everything that runs, the operator first so it acts on nothing that is going
        away, the control plane last. Safe to call more than once."""
        if self.operator is not None:
            self.operator.stop()
        if self.load is not None:
            terminate(self.load)
            self.load = None
        if self.mesh is not None:
            self.mesh.stop()
            self.mesh = None
        if self._pagerduty_started:
            self.pagerduty.stop()
            self._pagerduty_started = False
        self.prometheus.stop()
        self.control_plane.stop()
        if not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- state ------------------------------------------------------------------------------

    def load_exit_code(self) -> int | None:
        """None while the load generator runs."""
        return self.load.poll() if self.load is not None else None

    def logs(self) -> dict[str, Path]:
        """Where each part logs."""
        return {
            "operator": self.workdir / "operator.log",
            "load": self.workdir / "load.log",
            "router": self.workdir / "mesh" / "router.log",
            "model v1": self.workdir / "mesh" / "model-v1.log",
            "model v2": self.workdir / "mesh" / "model-v2.log",
            "prometheus": self.prometheus.log_path,
            "kube-apiserver": self.control_plane.workdir / "kube-apiserver.log",
            "etcd": self.control_plane.workdir / "etcd.log",
        }


def _as_list(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [dict(r) for r in resources]}


def leftover_processes(tag: str) -> list[int]:
    """Ids of running processes (other than this one) whose environment carries `tag` as
    `STACK_TAG_ENV`: children of a stack that outlived it."""
    wanted = f"{STACK_TAG_ENV}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rpartition(")")[2].split()[0] != "Z":  # a zombie is already gone
                    found.append(int(entry.name))
    return sorted(found)
