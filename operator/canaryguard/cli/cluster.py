"""Reading and writing CanaryRollouts through the Kubernetes API, every failure a CliError.

Every failure a user can cause or meet (no kubeconfig, an unreachable or refusing API server,
a missing rollout, the CRD not installed) becomes a CliError that says what could not be done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from canaryguard.adapters.kube import GROUP, PLURAL, VERSION
from canaryguard.cli.errors import CliError

KIND = "CanaryRollout"
# (connect, read) seconds: a CLI should answer or fail fast, not hang on a dead network.
REQUEST_TIMEOUT = (5.0, 20.0)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


class Conflict(CliError):
    """The object changed since it was read (HTTP 409)."""


@dataclass
class Cluster:
    """An API client, the server it talks to and the namespace used when none is given."""

    api: Any  # kubernetes.client.CustomObjectsApi (untyped)
    server: str
    namespace: str
    user: str = ""  # the kubeconfig context's user name, if any

    def namespace_or_default(self, namespace: str | None) -> str:
        """The namespace given on the command line, else the kubeconfig's (or the pod's)."""
        return str(namespace or self.namespace)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the API; turn every failure into a CliError that says what could not be done."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(_api_error(exc, what)) from None
            raise CliError(_api_error(exc, what)) from None
        except (HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CliError(f"cannot reach the API server at {self.server}: {reason}") from None

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        """One rollout."""
        obj: dict[str, Any] = self.call(
            _what("get", namespace, name),
            self.api.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )
        return obj

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        """The rollouts of a namespace, or of all namespaces (None)."""
        if namespace is None:
            what = f"list {KIND}s in all namespaces"
            result = self.call(what, self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            what = f'list {KIND}s in namespace "{namespace}"'
            result = self.call(
                what, self.api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def patch_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Merge fields into the rollout's spec."""
        return self._patch("patch", namespace, name, {"spec": dict(spec)})

    def annotate(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> dict[str, Any]:
        """Merge annotations in, only if the object is still at `resource_version` (else
        Conflict)."""
        metadata = {"annotations": dict(annotations), "resourceVersion": resource_version}
        return self._patch("annotate", namespace, name, {"metadata": metadata})

    def _patch(
        self, verb: str, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        obj: dict[str, Any] = self.call(
            _what(verb, namespace, name),
            self.api.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
        )
        return obj

    def whoami(self) -> str:
        """The user name the API server knows these credentials by (a SelfSubjectReview),
        else the kubeconfig's user name; "" when neither is known. Best effort: a request
        is worth more than its signature."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            review = client.AuthenticationV1Api(self.api.api_client).create_self_subject_review(
                client.V1SelfSubjectReview(), _request_timeout=REQUEST_TIMEOUT
            )
            info = review.status.user_info if review.status is not None else None
            name = info.username if info is not None else None
        except (ApiException, HTTPError, OSError, ValueError):
            name = None
        return str(name or self.user)


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """A client from the kubeconfig (flag, then KUBECONFIG, then ~/.kube/config), else the
    pod's service account. The client retries nothing by itself: one attempt, one answer."""
    from kubernetes import client, config

    if kubeconfig and not Path(kubeconfig).is_file():
        raise CliError(f"kubeconfig {kubeconfig} does not exist")
    cfg = client.Configuration()
    cfg.retries = 0
    namespace = "default"
    user = ""
    has_file = bool(kubeconfig or os.environ.get("KUBECONFIG")) or (
        Path("~/.kube/config").expanduser().is_file()
    )
    try:
        if has_file:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig
            )
            chosen = next((c for c in contexts if c.get("name") == context), None) or active
            namespace = (chosen or {}).get("context", {}).get("namespace") or namespace
            user = str((chosen or {}).get("context", {}).get("user") or "")
        else:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            if SERVICE_ACCOUNT_NAMESPACE.is_file():
                namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or namespace
    except config.ConfigException as exc:
        hint = "" if has_file else "; set --kubeconfig or KUBECONFIG"
        raise CliError(f"no cluster access: {exc}{hint}") from None
    api = client.CustomObjectsApi(client.ApiClient(cfg))
    return Cluster(api=api, server=str(cfg.host), namespace=namespace, user=user)


def _what(verb: str, namespace: str, name: str) -> str:
    return f'{verb} {KIND} "{name}" in namespace "{namespace}"'


def _api_error(exc: Any, what: str) -> str:
    status = getattr(exc, "status", None)
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(getattr(exc, "body", None) or "{}")
        body = parsed if isinstance(parsed, dict) else {}
    except (TypeError, ValueError):
        pass
    message = body.get("message") or getattr(exc, "reason", "") or ""
    if status == 404:
        details = body.get("details") or {}
        if body.get("kind") == "Status" and details.get("name"):
            return f'{KIND} "{details["name"]}" not found' + _in_namespace(what)
        return (
            f"cannot {what}: the {KIND} API ({GROUP}/{VERSION}) is not installed on this "
            "cluster (kubectl apply -k manifests/ installs it)"
        )
    if status == 401:
        return f"cannot {what}: not authenticated (401); check the kubeconfig's credentials"
    if status == 403:
        return f"cannot {what}: forbidden (403): {message}"
    if status == 0 or status is None:
        return f"cannot {what}: {message or exc}"
    return f"cannot {what}: the API server answered {status}: {message}"


def _in_namespace(what: str) -> str:
    marker = 'in namespace "'
    return " " + what[what.index(marker) :] if marker in what else ""
