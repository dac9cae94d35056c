"""Kubernetes adapter: the API client, rollout status writes and Secret reads.

Clients are built when the operator starts, never at import time, so unit tests need no
cluster. Calls run the synchronous client in worker threads with a request timeout.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from canaryguard.core.access import secret_allows, secret_not_allowed
from canaryguard.core.ports import SecretError, SecretNotAllowed

GROUP = "canaryguard.io"
VERSION = "v1alpha1"
PLURAL = "canaryrollouts"
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "canaryguard"


def load_api_client(kubeconfig: str | None = None, pool_size: int = 64) -> client.ApiClient:
    """An API client from a kubeconfig file, else the in-cluster service account.

    Its connection pool keeps `pool_size` connections (the client's default is a few per
    core): calls run from many worker threads at once, and every connection the pool drops
    costs a new TLS handshake.
    """
    # kubernetes.config is untyped; these two names are all this module needs of it.
    from_file = cast(Callable[..., None], config.load_kube_config)
    in_cluster = cast(Callable[..., None], config.load_incluster_config)
    configuration = client.Configuration()
    if kubeconfig:
        from_file(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            in_cluster(client_configuration=configuration)
        except config.ConfigException:
            from_file(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`.

    Keys gone from `new` become null, nested objects are diffed, lists and scalars are
    replaced whole. Equal inputs give an empty patch.
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = value
    return patch


class KubeClient:
    """The few API calls the operator makes besides VirtualServices and kopf's own."""

    def __init__(self, api_client: client.ApiClient, request_timeout: float = 10.0) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._timeout = request_timeout

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the rollout's status subresource; returns the updated object."""
        obj = await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(patch)},
            _content_type=MERGE_PATCH,
            _request_timeout=self._timeout,
        )
        return obj if isinstance(obj, dict) else {}

    async def post_event(
        self, rollout: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """Post a core v1 Event about the rollout (`kubectl describe cro` shows it)."""
        meta = rollout.get("metadata", {})
        namespace = str(meta.get("namespace", "default"))
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{meta.get('name', 'canaryrollout')}.", namespace=namespace
            ),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="CanaryRollout",
                name=meta.get("name"),
                namespace=namespace,
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        await asyncio.to_thread(
            self._core.create_namespaced_event,
            namespace,
            event,
            _request_timeout=self._timeout,
        )

    async def list_rollouts(self, namespaces: Sequence[str]) -> list[dict[str, Any]]:
        """Every rollout in `namespaces` (all namespaces when empty), read afresh."""
        return await asyncio.to_thread(self._list_rollouts, tuple(namespaces))

    def _list_rollouts(self, namespaces: tuple[str, ...]) -> list[dict[str, Any]]:
        lists = (
            [
                self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, _request_timeout=self._timeout
                )
                for ns in namespaces
            ]
            if namespaces
            else [
                self._custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _request_timeout=self._timeout
                )
            ]
        )
        items: list[dict[str, Any]] = []
        for listed in lists:
            # Items of a list carry no kind; the watch's bodies do.
            items.extend(
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CanaryRollout", **item}
                for item in (listed.get("items") or [] if isinstance(listed, dict) else [])
            )
        return items

    async def read_secret(self, namespace: str, name: str, key: str, rollout: str) -> str:
        """One key of a Secret, decoded, when the Secret was made available to the rollout
        `rollout` (annotation `canaryguard.io/allowed-rollouts`). Errors name the Secret and
        key, never the value."""
        return await asyncio.to_thread(self._read_secret, namespace, name, key, rollout)

    def _read_secret(self, namespace: str, name: str, key: str, rollout: str) -> str:
        try:
            secret = self._core.read_namespaced_secret(
                name, namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                raise SecretError(f"Secret {namespace}/{name} not found") from None
            if exc.status == 403:
                raise SecretError(f"not allowed to read Secret {namespace}/{name}") from None
            raise
        # The opt-in is checked before any value is looked at: a Secret nobody made
        # available is dropped here, whatever the rollout asked of it.
        annotations = secret.metadata.annotations if secret.metadata is not None else None
        if not secret_allows(annotations, rollout):
            raise SecretNotAllowed(secret_not_allowed(namespace, name, rollout))
        data = secret.data or {}
        if key not in data:
            raise SecretError(f"Secret {namespace}/{name} has no key {key!r}")
        try:
            return base64.b64decode(data[key]).decode().strip()
        except (ValueError, UnicodeDecodeError):
            raise SecretError(f"Secret {namespace}/{name} key {key!r} is not UTF-8 text") from None


def lean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of `obj` without `metadata.managedFields`, which nothing here reads and
    which is most of a small object's size (a field set per writer): thousands of objects
    are kept, and their managed fields were most of the operator's memory after its own."""
    copy = dict(obj)
    meta = copy.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        copy["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return copy


def resource_version(obj: Mapping[str, Any]) -> int:
    """`metadata.resourceVersion` as a number (0 when missing or not a number), to tell a
    newer copy of an object from an older one, as this operator's watches and writes do
    (etcd's revisions: a later write has a larger one)."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0
