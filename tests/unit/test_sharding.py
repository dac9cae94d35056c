"""`canaryguard run --shard i/n`: shards split the rollouts by name, disjoint and complete,
the same in every process; a controller tracks only its shard's rollouts."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from canaryguard.cli.main import build_parser
from canaryguard.cli.run import operator_settings
from canaryguard.runtime.controller import Controller
from canaryguard.runtime.sharding import Shard, parse_shard, shard_of
from tests.unit.fakes import SETTINGS, World, rollout_body


def test_shards_split_the_rollouts_disjoint_and_complete() -> None:
    names = [("ns-a", f"svc-{i:04d}") for i in range(300)] + [("ns-b", "svc-0000")]
    shards = [Shard(i, 3) for i in range(3)]
    owners = [[s for s in shards if s.owns(*key)] for key in names]
    assert all(len(owner) == 1 for owner in owners)
    sizes = [sum(1 for o in owners if o[0] == s) for s in shards]
    assert all(70 <= size <= 130 for size in sizes), sizes
    assert all(Shard().owns(*key) for key in names)  # one shard: everything
    assert shard_of("ns-a", "svc-0001", 3) == shard_of("ns-a", "svc-0001", 3)


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/0"])
def test_a_shard_that_is_not_i_of_n_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_the_flag_takes_i_of_n() -> None:
    args = build_parser().parse_args(["run", "--shard", "1/4"])
    assert operator_settings(args).shard == Shard(1, 4)
    assert operator_settings(build_parser().parse_args(["run"])).shard == Shard(0, 1)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--shard", "4/4"])


def test_a_controller_tracks_only_its_shard_s_rollouts() -> None:
    world = World()
    bodies = []
    for i in range(12):
        body = rollout_body()
        body["metadata"]["name"] = f"svc-{i:04d}"
        bodies.append(copy.deepcopy(body))
    mine = [b for b in bodies if shard_of("ml", b["metadata"]["name"], 2) == 1]
    assert 0 < len(mine) < len(bodies)
    controller = Controller(
        world.kube, world.router, world.metrics, world.pager, replace(SETTINGS, shard=Shard(1, 2))
    )
    for body in bodies:
        controller.seen(None, body)
    assert len(controller.scheduler) == len(mine)
    assert all(("ml", b["metadata"]["name"]) in controller.scheduler for b in mine)
    pending = REGISTRY.get_sample_value("canaryguard_rollouts", {"phase": "Pending"})
    assert pending == len(mine)
    for body in bodies:
        controller.seen("DELETED", body)
    assert len(controller.scheduler) == 0
    assert REGISTRY.get_sample_value("canaryguard_rollouts", {"phase": "Pending"}) == 0
