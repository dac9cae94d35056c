"""End to end, the operator is nobody's deputy. A tenant who may create CanaryRollouts but not
read Secrets (a ServiceAccount with exactly that Role) names a Secret of the namespace and a
listener of their own on loopback as the Prometheus address or the PagerDuty URL: the rollout
is refused (phase Invalid, condition and Event AddressNotAllowed), no traffic moves, and the
listener receives nothing. A Secret its owner did not make available is not read, whatever
the address; once made available, it works. Prometheus redirects are not followed. The
namespace-scoped install carries a whole rollout with a Role alone. And nothing captured
(operator log, Events, the rollout, the pages) holds a Secret's value or a `user:pass`.

The operator runs as in the other end-to-end tests (under the shipped RBAC, allowed the
session's Prometheus and PagerDuty receiver), with 1 s ticks."""

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from canaryguard.cli.main import main
from canaryguard.core.access import SECRET_OPT_IN
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.prometheus_server import PrometheusServer
from canaryguard_testbed.stack import allow_flags
from tests.integration.fixtures_e2e import ROUTING_KEY, EndToEnd, pagerduty_secret
from tests.integration.fixtures_operator import Operator, Rollout, condition, wait_for
from tests.integration.kustomize import one, render

ROOT = Path(__file__).resolve().parents[2]
PROM_TOKEN = "Bearer pr0m-T0KEN-4f1c9a7e2b8d"  # the Authorization header a Secret holds
LONG_STEPS = [{"weight": 20, "hold": "300s"}, {"weight": 100, "hold": "300s"}]


# --- the attacker's listener ------------------------------------------------------------------


class Listener:
    """An HTTP server on loopback that records every request (method, path, headers, body)
    and answers as a Prometheus with no data would, or with a redirect to `redirect_to`."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.redirect_to = redirect_to
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                listener.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                if listener.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", listener.redirect_to + self.path)
                    self.end_headers()
                    return
                answer = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "Listener":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as it:
        yield it


# --- who is who -------------------------------------------------------------------------------


@pytest.fixture
def tenant(control_plane: ControlPlane, namespace: str) -> Path:
    """A kubeconfig of a tenant who may create and edit CanaryRollouts in the namespace, and
    do nothing with its Secrets."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "rollout-author", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["canaryguard.io"],
                "resources": ["canaryrollouts"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rollout-author", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "rollout-author",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
    }
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "tenant")
    create(control_plane, role, binding)
    return kubeconfig


def prometheus_secret(namespace: str, allowed: str | None) -> dict[str, Any]:
    """The Secret holding Prometheus's Authorization header, made available to the rollouts
    `allowed` names (None: not made available)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "prometheus-auth",
            "namespace": namespace,
            "annotations": {} if allowed is None else {SECRET_OPT_IN: allowed},
        },
        "stringData": {"authorization": PROM_TOKEN},
    }


def create(cp: ControlPlane, *objs: dict[str, Any], kubeconfig: Path | None = None) -> None:
    for obj in objs:
        cp.kubectl("apply", "-f", "-", input=json.dumps(obj), kubeconfig=kubeconfig)


def opt_in(cp: ControlPlane, namespace: str, secret: str, rollouts: str) -> None:
    """What the Secret's owner does (here the admin): make it available to `rollouts`."""
    cp.kubectl(
        "annotate", "--overwrite", "secret", secret, "-n", namespace, f"{SECRET_OPT_IN}={rollouts}"
    )


def with_headers_secret(r: Rollout, address: str | None = None) -> None:
    prometheus = r.body["spec"]["metrics"]["prometheus"]
    prometheus["headersSecretRef"] = {"name": "prometheus-auth", "key": "authorization"}
    if address is not None:
        prometheus["address"] = address


def ticks(op: Operator) -> float:
    with urllib.request.urlopen(op.metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("canaryguard_tick_duration_seconds_count "):
            return float(line.split()[-1])
    return 0.0


def wait_ticks(op: Operator, count: int) -> None:
    before = ticks(op)
    wait_for(f"{count} more ticks", lambda: ticks(op) >= before + count, timeout=count + 15)


def abort_with_page(cp: ControlPlane, r: Rollout, capsys: pytest.CaptureFixture[str]) -> None:
    """`canaryguard abort --page`, as the admin."""
    code = main(
        ["abort", r.name, "-n", r.namespace, "--page", "--reason", "security test",
         "--kubeconfig", str(cp.admin_kubeconfig)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, out + err


# --- nothing leaks ----------------------------------------------------------------------------


def captured(
    r: Rollout, ops: list[Operator], pagerduty: PagerDutyReceiver, *listeners: Listener
) -> dict[str, str]:
    """Everything the operator's work left where people look: its log, the Events and the
    rollout (status included), the pages' content (all but the routing key, which is the
    page's envelope), and what any listener received."""
    cp, ns = r.cp, r.namespace
    pages = [
        {k: v for k, v in e["event"].items() if k != "routing_key"} for e in pagerduty.events()
    ]
    return {
        "operator log": "\n".join(op.log_path.read_text(errors="replace") for op in ops),
        "events": cp.kubectl("get", "events", "-n", ns, "-o", "json").stdout,
        "rollouts": cp.kubectl("get", "canaryrollouts", "-n", ns, "-o", "json").stdout,
        "pages": json.dumps(pages),
        "listeners": json.dumps([rq for it in listeners for rq in it.requests]),
    }


def assert_no_credentials(texts: dict[str, str]) -> None:
    for where, text in texts.items():
        for secret in (ROUTING_KEY, PROM_TOKEN, PROM_TOKEN.split()[-1], "user:pass"):
            assert secret not in text, f"{secret!r} found in the {where}"


# --- the two exfiltration paths ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["prometheus", "pagerduty"])
def test_a_tenant_cannot_make_the_operator_send_a_secret_to_their_listener(
    path: str,
    control_plane: ControlPlane,
    namespace: str,
    tenant: Path,
    listener: Listener,
    e2e: EndToEnd,
    operator: Callable[..., Operator],
    pagerduty: PagerDutyReceiver,
) -> None:
    # The worst case: the Secrets' owners made them available to a rollout of this name.
    create(control_plane, prometheus_secret(namespace, allowed="fraud-model"))
    forbidden = control_plane.kubectl(
        "get", "secret", "prometheus-auth", "-n", namespace, kubeconfig=tenant, check=False
    )
    assert forbidden.returncode != 0 and "Forbidden" in forbidden.stderr
    r = e2e.rollout(mesh=False, create=False, steps=LONG_STEPS)
    if path == "prometheus":
        with_headers_secret(r, address=listener.url)
        field, flag = "spec.metrics.prometheus.address", "--allow-prometheus"
    else:
        r.body["spec"]["paging"]["pagerDuty"]["url"] = listener.url + "/v2/enqueue"
        field, flag = "spec.paging.pagerDuty.url", "--allow-pagerduty"
    create(control_plane, r.body, kubeconfig=tenant)  # the tenant may do this much
    vs_before = r.cp.kubectl("get", "vs", "fraud-model", "-n", namespace, "-o", "json").stdout
    op = operator()

    wait_for("phase Invalid", lambda: r.phase() == "Invalid", timeout=30)
    status = r.status()
    assert status["message"].startswith(f"invalid: {field}: {listener.url}")
    assert "is not an address this operator may send requests to" in status["message"]
    assert status["message"].endswith(f"the operator's installer allows addresses with {flag}")
    spec_valid = condition(status, "SpecValid")
    assert (spec_valid["status"], spec_valid["reason"]) == ("False", "AddressNotAllowed")
    assert condition(status, "Progressing")["reason"] == "AddressNotAllowed"
    (event,) = [e for e in r.events() if e["reason"] == "AddressNotAllowed"]
    assert event["type"] == "Warning" and field in event["message"]

    # Ten seconds of ticks later: still refused, reported once, nothing sent anywhere.
    wait_ticks(op, 10)
    assert r.phase() == "Invalid"
    assert r.event_reasons().count("AddressNotAllowed") == 1
    assert listener.requests == []
    assert pagerduty.calls() == []
    vs_after = r.cp.kubectl("get", "vs", "fraud-model", "-n", namespace, "-o", "json").stdout
    assert (
        json.loads(vs_after)["metadata"]["resourceVersion"]
        == (json.loads(vs_before)["metadata"]["resourceVersion"])
    )
    assert r.weights() == (100, 0)
    assert_no_credentials(captured(r, [op], pagerduty, listener))


def test_credentials_in_an_address_are_refused_by_the_api_server_and_go_nowhere(
    control_plane: ControlPlane,
    namespace: str,
    tenant: Path,
    listener: Listener,
    e2e: EndToEnd,
    operator: Callable[..., Operator],
    pagerduty: PagerDutyReceiver,
    prometheus: PrometheusServer,
) -> None:
    op = operator()
    r = e2e.rollout(mesh=False, create=False, steps=LONG_STEPS)
    r.body["spec"]["metrics"]["prometheus"]["address"] = prometheus.url.replace(
        "http://", "http://user:pass@"
    )
    refused = control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(r.body), kubeconfig=tenant, check=False
    )
    assert refused.returncode != 0
    assert "must not hold credentials (user:password@host)" in refused.stderr
    assert "user:pass@" not in refused.stderr
    assert control_plane.kubectl("get", "cro", "-n", namespace, "-o", "name").stdout == ""
    time.sleep(2)  # the operator had nothing to act on; give it the chance to say otherwise
    assert_no_credentials(captured(r, [op], pagerduty, listener))


# --- Secrets are read only when made available ------------------------------------------------


def test_a_headers_secret_not_made_available_is_not_read_until_its_owner_opts_in(
    control_plane: ControlPlane,
    namespace: str,
    tenant: Path,
    e2e: EndToEnd,
    operator: Callable[..., Operator],
    pagerduty: PagerDutyReceiver,
) -> None:
    create(control_plane, prometheus_secret(namespace, allowed="another-rollout"))
    r = e2e.rollout(mesh=False, create=False, steps=LONG_STEPS)
    with_headers_secret(r)  # the allowed Prometheus
    create(control_plane, r.body, kubeconfig=tenant)
    op = operator()

    wait_for("phase Invalid", lambda: r.phase() == "Invalid", timeout=30)
    status = r.status()
    assert (
        f"Secret {namespace}/prometheus-auth is not made available to CanaryRollout "
        f'fraud-model: its owner opts in with the annotation {SECRET_OPT_IN}: "fraud-model"'
    ) in status["message"]
    assert condition(status, "SpecValid")["reason"] == "SecretNotAllowed"
    (event,) = [e for e in r.events() if e["reason"] == "SecretNotAllowed"]
    assert event["type"] == "Warning" and "prometheus-auth" in event["message"]
    wait_ticks(op, 3)
    assert r.weights() == (100, 0)

    opt_in(control_plane, namespace, "prometheus-auth", "another-rollout,fraud-model")
    wait_for(
        "Progressing at 80/20 once the Secret is available",
        lambda: r.phase() == "Progressing" and r.weights() == (80, 20),
        timeout=20,
    )
    assert condition(r.status(), "SpecValid")["status"] == "True"
    assert_no_credentials(captured(r, [op], pagerduty))


def test_a_routing_key_not_made_available_is_not_sent_until_its_owner_opts_in(
    control_plane: ControlPlane,
    namespace: str,
    e2e: EndToEnd,
    operator: Callable[..., Operator],
    pagerduty: PagerDutyReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create(control_plane, pagerduty_secret(namespace, allowed=None))
    r = e2e.rollout(mesh=False, steps=LONG_STEPS)
    op = operator()
    wait_for("step 1 at 80/20", lambda: r.weights() == (80, 20), timeout=20)

    abort_with_page(control_plane, r, capsys)
    wait_for("RolledBack", lambda: r.phase() == "RolledBack", timeout=20)
    assert r.weights() == (100, 0)  # protection never waits for the page
    wait_for(
        "the page refused for its Secret",
        lambda: "not made available" in (r.status().get("page") or {}).get("lastError", ""),
        timeout=20,
    )
    wait_ticks(op, 3)
    status = r.status()
    assert status["page"]["state"] == "Pending"
    assert condition(status, "Paged")["status"] == "False"
    (failed,) = [e for e in r.events() if e["reason"] == "PageFailed"]
    assert f"Secret {namespace}/pagerduty is not made available" in failed["message"]
    assert SECRET_OPT_IN in failed["message"]
    assert pagerduty.calls() == []

    opt_in(control_plane, namespace, "pagerduty", "fraud-model")
    wait_for(
        "the page delivered once the Secret is available",
        lambda: (r.status().get("page") or {}).get("state") == "Delivered",
        timeout=60,  # page retries back off: 5 s, 10 s, 20 s ...
    )
    (page,) = pagerduty.events()
    assert page["event"]["routing_key"] == ROUTING_KEY
    assert page["event"]["dedup_key"] == r.status()["page"]["dedupKey"]
    assert_no_credentials(captured(r, [op], pagerduty))


# --- no redirect leaves the allowed address ---------------------------------------------------


def test_a_redirect_from_an_allowed_prometheus_is_not_followed(
    control_plane: ControlPlane,
    namespace: str,
    listener: Listener,
    e2e: EndToEnd,
    operator: Callable[..., Operator],
    pagerduty: PagerDutyReceiver,
) -> None:
    create(control_plane, prometheus_secret(namespace, allowed="fraud-model"))
    with Listener(redirect_to=listener.url) as redirector:
        r = e2e.rollout(mesh=False, create=False, steps=LONG_STEPS)
        with_headers_secret(r, address=redirector.url)
        r.apply()
        op = operator(args=allow_flags(redirector.url, pagerduty.url))
        wait_for(
            "a Prometheus outage seen",
            lambda: r.status().get("metricsOutageSince"),
            timeout=30,
        )
        wait_ticks(op, 3)
        # The allowed address got the queries (and the header: the installer trusts it);
        # the address it redirected to got nothing.
        assert redirector.requests
        assert all(q["headers"].get("Authorization") == PROM_TOKEN for q in redirector.requests)
        assert listener.requests == []
        assert r.weights() == (100, 0)  # never started: its metrics cannot be read
        texts = captured(r, [op], pagerduty, listener)
    assert "answered with a redirect, which is not followed" in texts["rollouts"]
    assert_no_credentials(texts)


# --- the namespace-scoped install -------------------------------------------------------------


def test_the_namespace_scoped_role_alone_carries_a_rollout_with_its_secrets(
    control_plane: ControlPlane,
    namespace: str,
    e2e: EndToEnd,
    operator: Callable[..., Operator],
    pagerduty: PagerDutyReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The Role and RoleBinding of examples/install-namespaced, moved into this namespace and
    bound to a ServiceAccount of its own (no ClusterRole): the operator reads the header and
    the routing key Secrets, moves weights, writes status and Events, and pages."""
    rendered = render(control_plane, ROOT / "examples/install-namespaced")
    # The watched namespace's Role (the leader election's, in canaryguard-system, is not needed
    # by an operator run without --leader-elect).
    role, binding = (
        one(rendered, "Role", "canaryguard"),
        one(rendered, "RoleBinding", "canaryguard"),
    )
    role["metadata"]["namespace"] = binding["metadata"]["namespace"] = namespace
    binding["subjects"] = [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}]
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "operator")
    create(control_plane, role, binding)
    elsewhere = control_plane.kubectl(
        "auth", "can-i", "get", "secrets", "-n", "default", kubeconfig=kubeconfig, check=False
    )
    assert elsewhere.stdout.strip() == "no"

    create(control_plane, prometheus_secret(namespace, allowed="fraud-model"))
    r = e2e.rollout(mesh=False, create=False, steps=LONG_STEPS)
    with_headers_secret(r)
    r.apply()
    op = operator(kubeconfig=kubeconfig)
    wait_for("step 1 at 80/20", lambda: r.weights() == (80, 20), timeout=20)
    abort_with_page(control_plane, r, capsys)
    wait_for(
        "RolledBack and paged",
        lambda: (r.status().get("page") or {}).get("state") == "Delivered",
        timeout=30,
    )
    assert r.weights() == (100, 0)
    assert {"Started", "ManualAbort", "PageDelivered"} <= set(r.event_reasons())
    assert [e["event"]["routing_key"] for e in pagerduty.events()] == [ROUTING_KEY]
    texts = captured(r, [op], pagerduty)
    assert "Forbidden" not in texts["operator log"]
    assert_no_credentials(texts)
