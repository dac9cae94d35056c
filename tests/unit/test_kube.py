"""The status merge patch: minimal, and applying it gives exactly the new status."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from canaryguard.adapters.kube import merge_patch

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
