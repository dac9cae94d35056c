"""The Kubernetes adapter: the status merge patch is minimal and applying it gives exactly the
new status; a Secret is read only when it was made available to the rollout."""

import asyncio
import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from canaryguard.adapters.kube import KubeClient, merge_patch
from canaryguard.core.access import SECRET_OPT_IN
from canaryguard.core.ports import SecretNotAllowed

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)
json_object = st.dictionaries(st.text(max_size=3), json_value, max_size=4)


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386's reference algorithm, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def test_equal_statuses_give_an_empty_patch() -> None:
    status = {"phase": "Progressing", "slos": [{"name": "a"}], "page": {"state": "Pending"}}
    assert merge_patch(status, dict(status)) == {}


def test_removed_nested_keys_become_null_and_only_changes_are_sent() -> None:
    old = {"phase": "Progressing", "stepIndex": 1, "page": {"state": "Pending", "attempts": 1}}
    new = {"phase": "Progressing", "stepIndex": 2, "page": {"state": "Pending"}}
    assert merge_patch(old, new) == {"stepIndex": 2, "page": {"attempts": None}}


@given(json_object, json_object)
def test_applying_the_patch_gives_the_new_object(old: dict[str, Any], new: dict[str, Any]) -> None:
    # Merge patches cannot express null values inside objects, so compare without them.
    old, new = strip_nulls(old), strip_nulls(new)
    assert apply_merge_patch(old, merge_patch(old, new)) == new


# --- Secrets: read only when made available --------------------------------------------------


class StubCore:
    """CoreV1Api's `read_namespaced_secret`, answering with one Secret."""

    def __init__(self, annotations: dict[str, str] | None) -> None:
        self.secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name="pd", namespace="ml", annotations=annotations),
            data={"routing-key": base64.b64encode(b"R0UT1NG\n").decode()},
        )

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> client.V1Secret:
        return self.secret


def kube_with_secret(annotations: dict[str, str] | None) -> KubeClient:
    kube = KubeClient(client.ApiClient())
    kube._core = StubCore(annotations)  # type: ignore[assignment]
    return kube


@pytest.mark.parametrize("allowed", ["fraud-model", "a, fraud-model", "*"])
def test_a_secret_made_available_to_the_rollout_is_read(allowed: str) -> None:
    kube = kube_with_secret({SECRET_OPT_IN: allowed})
    assert asyncio.run(kube.read_secret("ml", "pd", "routing-key", "fraud-model")) == "R0UT1NG"


@pytest.mark.parametrize("annotations", [None, {}, {SECRET_OPT_IN: "fraud-model-b"}])
def test_a_secret_not_made_available_to_the_rollout_is_refused(
    annotations: dict[str, str] | None,
) -> None:
    kube = kube_with_secret(annotations)
    with pytest.raises(SecretNotAllowed) as raised:
        asyncio.run(kube.read_secret("ml", "pd", "routing-key", "fraud-model"))
    assert str(raised.value).startswith(
        "Secret ml/pd is not made available to CanaryRollout fraud-model"
    )
    assert "R0UT1NG" not in str(raised.value)
