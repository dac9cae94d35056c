"""A real Kubernetes control plane on loopback: etcd and kube-apiserver built by `make bins`,
started with the flags envtest uses, RBAC on, and the real kubectl to talk to it.

    with ControlPlane() as cp:
        cp.install_crds(istio_crds())
        cp.kubectl("get", "virtualservices", "-A")

`python -m canaryguard_testbed.controlplane [CRD.yaml ...]` starts one, prints its
kubeconfig and runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import http.client
import ipaddress
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import kubernetes.client
import kubernetes.config
import yaml
from kubernetes.client.exceptions import ApiException

from canaryguard_testbed import certs
from canaryguard_testbed.bins import Binaries, find_binaries, istio_crds
from canaryguard_testbed.childproc import log_tail, terminate

log = logging.getLogger(__name__)

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
READY_TIMEOUT = 60.0  # generous: CI shares two cores with the rest of the stack
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1
_START_ATTEMPTS = 3  # a port picked as free can be taken before the child binds it


class ControlPlaneError(RuntimeError):
    """The control plane failed to start, or a call to it failed."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; the message carries its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"


class _PortInUseError(ControlPlaneError):
    pass


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports that were free a moment ago (all held open while picking)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _die_with_parent() -> None:
    # Between fork and exec: the kernel kills the child when the thread that started it exits,
    # so a killed test runner leaves no etcd or kube-apiserver behind. SIGKILL, because a
    # kube-apiserver whose etcd is gone spends tens of seconds in graceful shutdown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _has_default_route() -> bool:
    """What kube-apiserver checks before choosing its advertise address by itself."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 1 and fields[1] == "00000000":
                return True
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/ipv6_route").read_text().splitlines():
            fields = line.split()
            # ::/0 via a real interface; the kernel's own unreachable ::/0 sits on lo.
            default = len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00"
            if default and fields[9] != "lo":
                return True
    return False


def _advertise_address() -> str | None:
    """None when kube-apiserver can derive its advertise address from the default route.
    Otherwise a non-loopback IPv4 address of this machine; with none at all, an address of
    TEST-NET-1 (RFC 5737). It is only published in the `kubernetes` Service's endpoints, which
    nothing here dials; kube-apiserver rejects a loopback one."""
    if _has_default_route():
        return None
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for prev, line in itertools.pairwise(lines):
            if "/32 host LOCAL" in line:
                candidate = prev.strip().removeprefix("|-- ")
                with contextlib.suppress(ValueError):
                    if not ipaddress.ip_address(candidate).is_loopback:
                        return candidate
    return "192.0.2.1"


class ControlPlane:
    """etcd plus kube-apiserver on free loopback ports, with a throwaway PKI in `workdir`.

    `workdir` defaults to a new temporary folder that `stop` removes; a folder you pass is kept
    (for its logs), but each start begins with empty etcd data (`stop_apiserver` and
    `start_apiserver` restart kube-apiserver alone, keeping the data). Child processes are
    tied to the thread that calls `start` (the kernel kills them when it ends), so start the
    control plane from a thread that outlives it, normally the main thread.
    """

    server: str
    admin_kubeconfig: Path

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path()
        self.server = ""
        self.admin_kubeconfig = Path()
        self._bins: Binaries | None = None
        self._certs: certs.ControlPlaneCerts | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._apiserver_args: list[str] = []
        self._started = False
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start etcd, then kube-apiserver; return once /readyz answers ok and the admin
        kubeconfig is written. Raises `MissingBinaryError` (naming `make bins`) when a binary
        is not built, `ControlPlaneError` with the log's tail when a process fails."""
        with self._lock:
            if self._started:
                raise ControlPlaneError("control plane already started")
            self._started = True
        began = time.monotonic()
        try:
            self._bins = find_binaries()
            if self._own_workdir:
                self.workdir = Path(tempfile.mkdtemp(prefix="canaryguard-kube-"))
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._certs = certs.generate(self.workdir / "pki")
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._start_processes()
                    break
                except _PortInUseError:
                    self._stop_processes()
                    if attempt == _START_ATTEMPTS:
                        raise
                    log.info("port taken before bind, retrying with new ports")
            self.admin_kubeconfig = self._write_kubeconfig(
                self.workdir / "admin.kubeconfig",
                {
                    "client-certificate-data": _b64(self._certs.admin_cert.read_bytes()),
                    "client-key-data": _b64(self._certs.admin_key.read_bytes()),
                },
                user="admin",
            )
        except BaseException:
            self.stop()
            raise
        log.info(
            "control plane ready: server=%s kubeconfig=%s startup_s=%.2f",
            self.server,
            self.admin_kubeconfig,
            time.monotonic() - began,
        )

    def stop(self) -> None:
        """Terminate kube-apiserver then etcd (SIGTERM, SIGKILL after 10 s), wait for both and
        remove the temporary workdir. Safe to call more than once."""
        self._stop_processes()
        if self._own_workdir and self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop_apiserver(self, *, kill: bool = False) -> None:
        """Stop kube-apiserver alone: SIGKILL with `kill` (a crash), else SIGTERM (SIGKILL
        after 10 s). etcd keeps running with its data, so `start_apiserver` brings back the
        same cluster at the same address, for clients holding a kubeconfig or a token."""
        proc = self._apiserver
        if proc is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(STOP_TIMEOUT)
        else:
            terminate(proc, STOP_TIMEOUT)
        self._apiserver = None

    def start_apiserver(self) -> None:
        """Start kube-apiserver again after `stop_apiserver`: same flags, port, certificates
        and service-account signing key, on the same etcd; returns once /readyz answers.
        Call it from the thread that started the control plane (see the class docstring)."""
        if self._etcd is None or not self._apiserver_args:
            raise ControlPlaneError("control plane is not running (call start() first)")
        if self._apiserver is not None and self._apiserver.poll() is None:
            raise ControlPlaneError("kube-apiserver is already running")
        self._start_apiserver()

    @property
    def apiserver_running(self) -> bool:
        """Whether the kube-apiserver process runs (it may not be ready yet)."""
        return self._apiserver is not None and self._apiserver.poll() is None

    def pids(self) -> list[int]:
        """Process ids of the running etcd and kube-apiserver (for checks and debugging)."""
        return [p.pid for p in (self._etcd, self._apiserver) if p is not None and p.poll() is None]

    def _stop_processes(self) -> None:
        # kube-apiserver first, so it does not spin on a vanished etcd.
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                terminate(proc, STOP_TIMEOUT)
        self._apiserver = None
        self._etcd = None

    def _spawn(self, args: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        log_path = self.workdir / log_name
        with log_path.open("ab") as out:
            return subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
                preexec_fn=_die_with_parent,
            )

    def _start_processes(self) -> None:
        assert self._bins is not None and self._certs is not None
        etcd_port, peer_port, secure_port = _free_ports(3)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        data_dir = self.workdir / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        self._etcd = self._spawn(
            [
                str(self._bins.etcd),
                "--name=canaryguard",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=canaryguard={peer_url}",
                "--unsafe-no-fsync=true",  # throwaway data: durability buys nothing here
                "--log-level=warn",
            ],
            "etcd.log",
        )
        self._wait_ready(self._etcd, "etcd.log", lambda: _etcd_healthy(etcd_url))

        c = self._certs
        server = f"https://127.0.0.1:{secure_port}"
        args = [
            str(self._bins.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={secure_port}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={c.serving_cert.parent}",
            f"--tls-cert-file={c.serving_cert}",
            f"--tls-private-key-file={c.serving_key}",
            f"--client-ca-file={c.client_ca}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={server}/",
            f"--service-account-key-file={c.service_account_pub}",
            f"--service-account-signing-key-file={c.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        advertise = _advertise_address()
        if advertise is not None:
            args.append(f"--advertise-address={advertise}")
        self._apiserver_args = args
        self._start_apiserver()
        self.server = server

    def _start_apiserver(self) -> None:
        secure_port = next(
            int(a.split("=", 1)[1]) for a in self._apiserver_args if a.startswith("--secure-port=")
        )
        self._apiserver = self._spawn(self._apiserver_args, "kube-apiserver.log")
        ctx = self._ssl_context()
        self._wait_ready(
            self._apiserver,
            "kube-apiserver.log",
            lambda: _https_ok(secure_port, "/readyz", ctx),
        )

    def _wait_ready(
        self,
        proc: subprocess.Popen[bytes],
        log_name: str,
        ready: Callable[[], bool],
        timeout: float = READY_TIMEOUT,
    ) -> None:
        log_path = self.workdir / log_name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_tail(log_path, 40)
                if "address already in use" in tail:
                    raise _PortInUseError(tail)
                raise ControlPlaneError(
                    f"{log_name.removesuffix('.log')} exited with code {proc.returncode} before "
                    f"it was ready; last lines of {log_path}:\n{tail}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{log_name.removesuffix('.log')} not ready after {timeout:.0f} s; "
            f"last lines of {log_path}:\n{log_tail(log_path, 40)}"
        )

    def _ssl_context(self) -> ssl.SSLContext:
        assert self._certs is not None
        ctx = ssl.create_default_context(cafile=str(self._certs.serving_ca))
        ctx.load_cert_chain(str(self._certs.admin_cert), str(self._certs.admin_key))
        return ctx

    def _write_kubeconfig(self, path: Path, credentials: dict[str, str], user: str) -> Path:
        assert self._certs is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "canaryguard-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self._certs.serving_ca.read_bytes()),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": {"cluster": "canaryguard-local", "user": user}}],
            "current-context": user,
        }
        # Holds a private key or a token: owner-only from creation.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        return path

    def _require_running(self) -> Binaries:
        if self._bins is None or self._apiserver is None or self._apiserver.poll() is not None:
            raise ControlPlaneError("control plane is not running (call start() first)")
        return self._bins

    # -- clients -----------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # same name as subprocess.run's
        kubeconfig: Path | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane (admin unless `kubeconfig` is
        given). With `check`, a non-zero exit raises `KubectlError` carrying stderr."""
        bins = self._require_running()
        cmd = [
            str(bins.kubectl),
            f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def api_client(self, kubeconfig: Path | None = None) -> kubernetes.client.ApiClient:
        """A Python client for this control plane (admin unless `kubeconfig` is given)."""
        self._require_running()
        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig or self.admin_kubeconfig)
        )
        return client

    def service_account_kubeconfig(
        self, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig that acts as ServiceAccount `namespace/name` (created if missing; the
        namespace must exist), with a bearer token from the TokenRequest API. The API server
        refuses expirations under 600 s."""
        self._require_running()
        with self.api_client() as client:
            core = kubernetes.client.CoreV1Api(client)
            try:
                core.create_namespaced_service_account(
                    namespace,
                    kubernetes.client.V1ServiceAccount(
                        metadata=kubernetes.client.V1ObjectMeta(name=name)
                    ),
                )
            except ApiException as exc:
                if exc.status != 409:  # already there is fine
                    raise
            request = kubernetes.client.AuthenticationV1TokenRequest(
                spec=kubernetes.client.V1TokenRequestSpec(
                    audiences=[], expiration_seconds=expiration_seconds
                )
            )
            issued = core.create_namespaced_service_account_token(name, namespace, request)
        token = issued.status.token if issued.status is not None else None
        if not token:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        return self._write_kubeconfig(
            self.workdir / f"sa-{namespace}-{name}.kubeconfig",
            {"token": token},
            user=f"system:serviceaccount:{namespace}:{name}",
        )

    def install_crds(self, *paths: Path) -> None:
        """Apply CustomResourceDefinition files (server-side) and wait until each is
        Established, so the new resources can be used at once."""
        if not paths:
            return
        files = [arg for p in paths for arg in ("-f", str(p))]
        applied = self.kubectl(
            "apply", "--server-side", "--force-conflicts", "-o", "name", *files
        ).stdout.split()
        names = [n.split("/", 1)[1] for n in applied if n.startswith("customresourcedefinition")]
        self._wait_established(names)

    def _wait_established(self, names: Sequence[str], timeout: float = 60) -> None:
        # Polled here: `kubectl wait` fails outright on a CRD that has no conditions yet.
        pending = set(names)
        deadline = time.monotonic() + timeout
        with self.api_client() as client:
            api = kubernetes.client.ApiextensionsV1Api(client)
            while pending:
                for name in sorted(pending):
                    status = api.read_custom_resource_definition(name).status
                    conditions = {c.type: c for c in (status.conditions or [])} if status else {}
                    names_accepted = conditions.get("NamesAccepted")
                    if names_accepted is not None and names_accepted.status == "False":
                        raise ControlPlaneError(f"CRD {name}: {names_accepted.message}")
                    established = conditions.get("Established")
                    if established is not None and established.status == "True":
                        pending.discard(name)
                if pending and time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"CRDs not Established after {timeout:.0f} s: {pending}"
                    )
                if pending:
                    time.sleep(0.05)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _etcd_healthy(url: str) -> bool:
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=1)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = resp.read()
        return resp.status == 200 and json.loads(body).get("health") == "true"
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _https_ok(port: int, path: str, ctx: ssl.SSLContext) -> bool:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a control plane until Ctrl-C or SIGTERM, with the Istio CRDs and any given CRDs."""
    parser = argparse.ArgumentParser(
        prog="python -m canaryguard_testbed.controlplane",
        description="Start a local etcd + kube-apiserver and wait until interrupted.",
    )
    parser.add_argument("crds", nargs="*", type=Path, help="more CRD files to install")
    parser.add_argument("--workdir", type=Path, help="keep state here instead of a temp dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    began = time.monotonic()
    with ControlPlane(args.workdir) as cp:
        cp.install_crds(istio_crds(), *args.crds)
        print(f"server:     {cp.server}")
        print(f"kubeconfig: {cp.admin_kubeconfig}")
        print(f"ready in {time.monotonic() - began:.1f} s; try:")
        print(f"  export KUBECONFIG={cp.admin_kubeconfig}")
        print("Ctrl-C to stop", flush=True)
        while not stopping.wait(1.0):
            if len(cp.pids()) < 2:
                for name in ("etcd.log", "kube-apiserver.log"):
                    print(f"--- {name}\n{log_tail(cp.workdir / name, 40)}", file=sys.stderr)
                print("a control plane process exited", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
