"""``cluster.placement`` on a real local Ray: the recipe entries, the spawn options they become
(``rlsys.placement``), a reward pool and a learner group placed by custom resources (the
``[placement]`` line names the node), and bounded waits when no node offers what a role
reserves: a pool start fails with ``WorkerError`` and a learner group with
``LearnerLostError`` naming the placement, each within its timeout. The multi-node behaviour
(labels, lost nodes) is ``tests/e2e/test_multinode.py``.
"""

from __future__ import annotations

import pydantic
import pytest
import ray
from ray.util.scheduling_strategies import NodeLabelSchedulingStrategy

from actors.launch import WorkerError, launch_reward_workers
from learner.errors import LearnerLostError
from rlsys.config import Recipe
from rlsys.config.cluster import RolePlacement, placement_for
from rlsys.controller.context import role_placement
from rlsys.placement import describe, placement_options

RECIPE = {"name": "p", "model": {"path": "tiny-llama"},
          "data": {"sources": [{"name": "a", "generator": "arithmetic", "kind": "prompt"}]},
          "stages": [{"name": "g", "kind": "grpo", "steps": 1}]}


def test_learner_groups_fall_back_to_the_learner_entry():
    recipe = Recipe.model_validate({**RECIPE, "cluster": {"placement": {
        "learner": {"resources": {"gpu_node": 1}}, "critic": {"labels": {"pool": "big"}},
        "rollout": {"prefer_labels": {"rlsys-role": "rollout"}}}}})
    assert role_placement(recipe, "policy") == {"resources": {"gpu_node": 1.0}, "labels": {},
                                                "prefer_labels": {}}
    assert role_placement(recipe, "reference") == role_placement(recipe, "policy")
    assert role_placement(recipe, "rm") == role_placement(recipe, "policy")  # any group name
    assert role_placement(recipe, "critic") == {"resources": {}, "labels": {"pool": "big"},
                                                "prefer_labels": {}}
    assert role_placement(recipe, "reward") is None  # pools do not fall back to learner
    assert placement_for({}, "policy") is None
    assert recipe.cluster.max_restarts == 0


@pytest.mark.parametrize("bad", [{"resources": {"CPU": 1}}, {"resources": {"x": 0}},
                                 {"resource": {"x": 1}}])
def test_bad_placement_entries_are_refused(bad):
    with pytest.raises(pydantic.ValidationError):
        RolePlacement.model_validate(bad)
    with pytest.raises(pydantic.ValidationError):
        Recipe.model_validate({**RECIPE, "cluster": {"placement": {"judge": {}}}})


def test_spawn_options_from_a_placement():
    assert placement_options(None) == {} and placement_options({}) == {}
    opts = placement_options({"resources": {"a": 1}, "labels": {}, "prefer_labels": {}})
    assert opts == {"resources": {"a": 1.0}}
    opts = placement_options({"resources": {}, "labels": {"zone": "x"},
                              "prefer_labels": {"rlsys-role": "rollout"}})
    strategy = opts["scheduling_strategy"]
    assert isinstance(strategy, NodeLabelSchedulingStrategy)
    assert [e.key for e in strategy.hard] == ["zone"]
    assert [e.key for e in strategy.soft] == ["rlsys-role"]
    with pytest.raises(ValueError, match="unknown key"):
        placement_options({"resource": {"a": 1}})
    assert describe({"resources": {"a": 1}, "labels": {}}) == "resources {'a': 1}"
    assert describe(None) == "anywhere"


@pytest.fixture(scope="module")
def node_id(ray_cluster):
    """The id of the shared test cluster's (one) node."""
    return ray.get_runtime_context().get_node_id()


def test_reward_pool_placed_on_a_node_prints_where(node_id, capsys):
    # "node:<ip>" is a resource every Ray node offers under its own address
    ip = ray.util.get_node_ip_address()
    pool = launch_reward_workers(1, {"name": "format", "kwargs": {"pattern": "a"}}, num_cpus=0,
                                 timeout_s=60, placement={"resources": {f"node:{ip}": 0.01}})
    try:
        line = [ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith("[placement] reward-0:")]
        assert line and f"pid {pool.pids[0]} on node {node_id}" in line[0], line
    finally:
        pool.close()


def test_pool_start_waits_bounded_for_a_resource_no_node_has(node_id):
    with pytest.raises(WorkerError) as caught:
        launch_reward_workers(1, {"name": "format", "kwargs": {"pattern": "a"}}, num_cpus=0,
                              timeout_s=3, placement={"resources": {"no_such_node": 1}})
    assert caught.value.phase == "start"


def test_learner_group_placement_no_node_offers_is_a_lost_learner(node_id, tiny_model_dir):
    from learner.launch import LearnerGroup

    with pytest.raises(LearnerLostError, match=r"no Ray node could take learner rank 0 of "
                       r"'policy' within 3 s \(placement: resources \{'no_such_node': 1\}\)"):
        LearnerGroup(1, model_path=tiny_model_dir, lr=1e-3, seed=0, log_name="policy",
                     init_timeout_s=3, placement={"resources": {"no_such_node": 1}})
