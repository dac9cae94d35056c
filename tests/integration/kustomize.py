"""Install manifests as the cluster sees them: rendered by kubectl's kustomize, and the
operator's command line as the kubelet runs it (`$(VAR)` expanded from the container's
environment, ConfigMap keys included)."""

import re
from pathlib import Path
from typing import Any

import yaml

from canaryguard_testbed.controlplane import ControlPlane

Obj = dict[str, Any]


def render(cp: ControlPlane, path: Path) -> list[Obj]:
    """`kubectl kustomize PATH`, as objects."""
    out = cp.kubectl("kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_args(objs: list[Obj]) -> list[str]:
    """The operator container's args with every `$(NAME)` replaced by the variable's value,
    read from the ConfigMap it references when it has no literal value (variables from the
    downward API are known only in the pod, and no arg may name them)."""
    (container,) = one(objs, "Deployment", "canaryguard")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        if "configMapKeyRef" not in var["valueFrom"]:
            continue  # the downward API's (POD_NAME ...): set in the pod, never in the args
        ref = var["valueFrom"]["configMapKeyRef"]
        env[var["name"]] = one(objs, "ConfigMap", ref["name"])["data"][ref["key"]]

    def expand(arg: str) -> str:
        def value(match: re.Match[str]) -> str:
            assert match.group(1) in env, f"$({match.group(1)}) is not set in the container"
            return env[match.group(1)]

        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, arg)

    return [expand(arg) for arg in container["args"]]
