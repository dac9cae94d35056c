"""Sharding: `canaryguard run --shard i/n` ticks only the rollouts of shard i of n.

Every process of a sharded install watches every rollout and takes those whose key
(namespace/name) hashes to its shard, so n processes carry disjoint sets that together are
all of them, with no coordination: the split depends on the names alone, the same in every
process and after every restart. A rollout is carried by exactly one process as long as
every shard runs once (one Deployment per shard, each with `strategy: Recreate`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected i/n with 0 <= i < n")

    def owns(self, namespace: str, name: str) -> bool:
        """Whether the rollout `namespace/name` is this shard's."""
        if self.count == 1:
            return True
        return shard_of(namespace, name, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(namespace: str, name: str, count: int) -> int:
    """The shard of `namespace/name` among `count`: a stable hash of the key."""
    digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) % count


def parse_shard(text: str) -> Shard:
    """`i/n`, e.g. `0/2`; ValueError otherwise."""
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"invalid shard {text!r}: expected i/n, e.g. 0/2")
    return Shard(int(index), int(count))
