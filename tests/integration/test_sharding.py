"""Two operator processes with `--shard 0/2` and `--shard 1/2` on the local stack carry every
rollout of a namespace exactly once: each starts, ticks and records only its shard's."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import yaml

from canaryguard.runtime.sharding import shard_of
from canaryguard_testbed.controlplane import ControlPlane
from canaryguard_testbed.pagerduty_receiver import PagerDutyReceiver
from canaryguard_testbed.prometheus_server import PrometheusServer
from canaryguard_testbed.stack import allow_flags
from tests.integration.fixtures_operator import Operator, wait_for


def objects(namespace: str, name: str, prometheus_url: str) -> list[dict[str, Any]]:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [name],
            "http": [
                {"name": "primary", "route": [{"destination": {"host": name, "subset": "v1"}}]}
            ],
        },
    }
    rollout = {
        "apiVersion": "canaryguard.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "virtualService": {"name": name},
            "baseline": {"host": name, "subset": "v1"},
            "canary": {"host": name, "subset": "v2"},
            "metrics": {
                "prometheus": {"address": prometheus_url},
                "selector": {"destination_service_name": name},
                "baselineVersion": "v1",
                "canaryVersion": "v2",
            },
            "steps": [{"weight": 20, "hold": "1h"}, {"weight": 100, "hold": "1h"}],
            "analysis": {
                "interval": "1s",
                "slos": [{"name": "errors", "errorRate": {}, "margin": {"absolute": 0.05}}],
            },
        },
    }
    return [vs, rollout]


def started(op: Operator, namespace: str) -> list[str]:
    """The rollouts this operator started (its log's Started decisions)."""
    pattern = re.compile(rf"decision rollout={re.escape(namespace)}/(\S+) reason=Started")
    return sorted(
        m.group(1) for line in op.log_lines() if (m := pattern.search(str(line.get("message"))))
    )


def test_two_shards_carry_every_rollout_exactly_once(
    control_plane: ControlPlane,
    namespace: str,
    prometheus: PrometheusServer,
    pagerduty_receiver_session: PagerDutyReceiver,
    operator: Callable[..., Operator],
) -> None:
    by_shard: dict[int, list[str]] = {0: [], 1: []}
    i = 0
    while min(len(v) for v in by_shard.values()) < 3:
        name = f"sharded-{i}"
        owner = by_shard[shard_of(namespace, name, 2)]
        if len(owner) < 3:
            owner.append(name)
        i += 1
    names = sorted(by_shard[0] + by_shard[1])
    docs = [d for name in names for d in objects(namespace, name, prometheus.url)]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    flags = allow_flags(prometheus.url, pagerduty_receiver_session.url)
    shards = [operator(args=[*flags, f"--shard={i}/2"]) for i in (0, 1)]

    def all_progressing() -> bool:
        out = control_plane.kubectl("get", "cro", "-n", namespace, "-o", "json").stdout
        phases = [(i.get("status") or {}).get("phase") for i in json.loads(out)["items"]]
        return phases == ["Progressing"] * len(names)

    wait_for("every rollout Progressing", all_progressing, timeout=60)
    shards[0].wait_ticks(3, rollouts=len(names))

    for index, op in enumerate(shards):
        assert started(op, namespace) == sorted(by_shard[index])
        wait_for(f"shard {index} tracking its 3", lambda op=op: op.tracked() == 3, timeout=20)
        assert op.metric("canaryguard_rollouts", phase="Progressing") == 3
    # Each rollout was started once, by its shard: one Started Event each.
    events = json.loads(
        control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    )["items"]
    started_events = sorted(
        e["involvedObject"]["name"] for e in events if e.get("reason") == "Started"
    )
    assert started_events == names
