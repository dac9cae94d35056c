"""Leases adapter: coordination.k8s.io/v1 Leases, read and written conditionally.

Bodies go out and come back as JSON, not as the client's models: a Lease's times are
MicroTime (RFC 3339 with microseconds), written here exactly as the API server reads them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaryguard.core.election import Lease, LeaseRecord
from canaryguard.core.ports import LeaseConflict

LABELS = {"app.kubernetes.io/name": "canaryguard", "app.kubernetes.io/component": "leader"}


def micro_time(value: datetime | None) -> str | None:
    """A Lease time as the API server writes it: `2024-06-01T12:00:00.123456Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def lease_from_body(body: dict[str, Any]) -> Lease:
    """The Lease (record and resourceVersion) of an API object."""
    spec = body.get("spec") or {}
    return Lease(
        LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquired=_parse_time(spec.get("acquireTime")),
            renewed=_parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
        ),
        version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
    )


def body_for(namespace: str, name: str, record: LeaseRecord, version: str | None) -> dict[str, Any]:
    """The API object that holds `record`; with `version`, a write conditional on it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(LABELS)}
    if version is not None:
        metadata["resourceVersion"] = version
    spec = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_seconds,
        "acquireTime": micro_time(record.acquired),
        "renewTime": micro_time(record.renewed),
        "leaseTransitions": record.transitions,
    }
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


class LeaseClient:
    """Get, create and update Leases (RBAC: get, create, update on leases in one namespace)."""

    def __init__(self, api_client: client.ApiClient, request_timeout: float = 5.0) -> None:
        self._api = client.CoordinationV1Api(api_client)
        self._timeout = request_timeout

    async def get(self, namespace: str, name: str) -> Lease | None:
        """The Lease, or None when it does not exist."""
        try:
            body = await self._call(self._api.read_namespaced_lease, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return lease_from_body(body)

    async def create(self, namespace: str, name: str, record: LeaseRecord) -> Lease:
        """Create the Lease; `LeaseConflict` when another candidate created it first."""
        body = body_for(namespace, name, record, None)
        try:
            created = await self._call(self._api.create_namespaced_lease, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflict(f"Lease {namespace}/{name} exists already") from None
            raise
        return lease_from_body(created)

    async def update(self, namespace: str, name: str, record: LeaseRecord, version: str) -> Lease:
        """Replace the Lease if it is still at `version`, else `LeaseConflict`."""
        body = body_for(namespace, name, record, version)
        try:
            updated = await self._call(self._api.replace_namespaced_lease, name, namespace, body)
        except ApiException as exc:
            if exc.status in (404, 409):
                raise LeaseConflict(
                    f"Lease {namespace}/{name} changed since version {version}"
                ) from None
            raise
        return lease_from_body(updated)

    async def _call(self, method: Any, *args: Any) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout)
            data: dict[str, Any] = json.loads(response.data)
            return data

        return await asyncio.to_thread(call)
