"""Parsed specs kept per rollout (`canaryguard.runtime.specs`): the same `Spec` while nothing
it is parsed from changed, parsed again when the spec, a request annotation, the generation
or the uid changed, and an invalid spec never kept."""

from __future__ import annotations

import copy

import pytest

from canaryguard.core.spec import SpecError, parse_spec
from canaryguard.runtime.specs import SpecCache
from tests.unit.scenario import spec_dict


def body(**changes: object) -> dict[str, object]:
    return {
        "metadata": {"namespace": "ml", "name": "scorer", "uid": "u1", "generation": 1},
        "spec": spec_dict(),
        **changes,
    }


def test_an_unchanged_rollout_is_parsed_once_and_equals_a_fresh_parse() -> None:
    cache = SpecCache()
    first = cache.parse(body())
    again = cache.parse(copy.deepcopy(body()))  # a new watch event, equal content
    assert again is first and cache.parsed == 1
    assert first == parse_spec(body())


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b["spec"]["steps"][0].__setitem__("hold", "7m"),
        lambda b: b["metadata"].__setitem__("annotations", {"canaryguard.io/request": "x"}),
        lambda b: b["metadata"].__setitem__("generation", 2),
        lambda b: b["metadata"].__setitem__("uid", "u2"),
    ],
    ids=["spec", "annotation", "generation", "uid"],
)
def test_a_change_to_what_the_spec_is_parsed_from_parses_it_again(change: object) -> None:
    cache = SpecCache()
    first = cache.parse(body())
    changed = copy.deepcopy(body())
    change(changed)  # type: ignore[operator]
    second = cache.parse(changed)
    assert second is not first
    assert cache.parsed == 2 and second == parse_spec(changed)
    assert cache.parse(copy.deepcopy(changed)) is second


def test_an_invalid_spec_raises_every_time_and_is_not_kept() -> None:
    cache = SpecCache()
    bad = body(spec={"steps": []})
    for _ in range(2):
        with pytest.raises(SpecError):
            cache.parse(bad)
    assert cache.parsed == 2 and len(cache) == 0


def test_a_forgotten_rollout_is_parsed_again() -> None:
    cache = SpecCache()
    cache.parse(body())
    cache.forget(("ml", "scorer"))
    cache.parse(body())
    assert cache.parsed == 2 and len(cache) == 1
