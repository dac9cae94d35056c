"""Parsed specs kept per rollout, parsed again only when what they are parsed from changed.

A rollout's spec is read at every tick and at every watch event (its interval), and the
status writes of thousands of rollouts bring back a watch event each: parsing it every time
was most of a tick's CPU after the queries (`bench/bench_operator.py`). What a parsed `Spec`
depends on is the object's `spec`, its annotations (a manual request), its uid, generation,
namespace and name; while all of them compare equal to those it was parsed from, the same
`Spec` is handed out. A spec that does not parse is never kept: it raises every time.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from canaryguard.core.spec import Spec, parse_spec


def _key_and_stamp(body: Mapping[str, Any]) -> tuple[tuple[Any, Any], tuple[Any, ...]]:
    """The rollout's (namespace, name), and what its parsed spec depends on besides."""
    meta = body.get("metadata") or {}
    if not isinstance(meta, Mapping):
        meta = {}
    key = (meta.get("namespace"), meta.get("name"))
    return key, (meta.get("uid"), meta.get("generation"), meta.get("annotations"), body.get("spec"))


class SpecCache:
    """`parse(body)` is `parse_spec(body)`, kept per (namespace, name) while it is valid."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple[Any, ...], Spec]] = {}
        self.parsed = 0  # parse_spec calls made (a test counts them)

    def __len__(self) -> int:
        return len(self._entries)

    def parse(self, body: Mapping[str, Any]) -> Spec:
        """The rollout's parsed spec; raises SpecError as `parse_spec` does."""
        key, stamp = _key_and_stamp(body)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        self._entries.pop(key, None)
        self.parsed += 1
        spec = parse_spec(body)
        self._entries[key] = (stamp, spec)
        return spec

    def forget(self, key: Hashable) -> None:
        """The rollout is gone."""
        self._entries.pop(key, None)
