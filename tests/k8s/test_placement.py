"""The per-role worker groups of the RayCluster offer what ``cluster.placement`` of the
multi-node recipe (``k8s/base/recipes/multinode.yaml``, in the recipe ConfigMap) asks for:
every custom resource a role reserves is offered by a worker group (``rayStartParams``
``resources``, in KubeRay's quoted-JSON form) whose ``rlsys-role`` label names that role, and
the group's ``maxReplicas`` pods hold all of the role's actors. The recipe is
``configs/quickstart.yaml`` plus the ``cluster`` section. Each check has a negative twin.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from rlsys.config import Recipe
from rlsys.config.cluster import placement_for
from tests.k8s.helpers import OVERLAYS, REPO, deep_copy, find, rendered


def offered(group: dict[str, Any]) -> dict[str, float]:
    """Custom resources one pod of ``group`` offers (KubeRay: ``'"{\\"name\\": 1}"'``)."""
    text = group["rayStartParams"].get("resources")
    if text is None:
        return {}
    return json.loads(json.loads(text) if text.startswith('"') else text)


def role_label(group: dict[str, Any]) -> str | None:
    """The ``rlsys-role`` value of the group's ``ray start --labels``."""
    pairs = dict(p.split("=", 1) for p in group["rayStartParams"].get("labels", "").split(",")
                 if "=" in p)
    return pairs.get("rlsys-role")


def multinode_recipe(objs: list[dict]) -> Recipe:
    """The ``multinode.yaml`` key of the recipe ConfigMap, validated."""
    data = find(objs, "ConfigMap", "rlsys-recipe")["data"]
    return Recipe.model_validate(yaml.safe_load(data["multinode.yaml"]))


def actors_per_role(recipe: Recipe) -> dict[str, int]:
    """How many actors of each placed role the recipe starts at once (policy + reference
    when any stage has a KL term: two learner groups)."""
    groups = 1 + any(s.algo and s.algo.kl_coef > 0 for s in recipe.stages)
    return {"rollout": recipe.rollout.num_workers, "reward": recipe.reward.num_workers,
            "learner": recipe.learner.num_ranks * groups}


def placement_problems(cluster: dict[str, Any], recipe: Recipe) -> list[str]:
    """Every role whose reserved resources no (large enough) labelled worker group offers."""
    groups = cluster["spec"]["workerGroupSpecs"]
    problems = []
    for role, count in actors_per_role(recipe).items():
        placement = placement_for(recipe.cluster.placement, role)
        if placement is None or not placement.resources:
            problems.append(f"{role}: the multi-node recipe places it nowhere")
            continue
        for name, amount in placement.resources.items():
            hosts = [g for g in groups if offered(g).get(name, 0) >= amount]
            if not hosts:
                problems.append(f"{role}: no worker group offers {name}: {amount}")
                continue
            if any(role_label(g) != role for g in hosts):
                problems.append(f"{role}: {name} is offered by a group not labelled {role}")
            room = sum(int(offered(g)[name] // amount) * g["maxReplicas"] for g in hosts)
            if room < count:
                problems.append(f"{role}: {count} actors need {count * amount} {name}, "
                                f"the groups hold {room} at maxReplicas")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_role_groups_offer_what_the_placement_reserves(overlay: str) -> None:
    objs = rendered(overlay)
    recipe = multinode_recipe(objs)
    assert recipe.cluster.max_restarts >= 1
    assert placement_problems(find(objs, "RayCluster", "rlsys"), recipe) == []


def test_role_groups_start_empty_and_scale_from_zero() -> None:
    for overlay in OVERLAYS:
        cluster = find(rendered(overlay), "RayCluster", "rlsys")
        roles = [g for g in cluster["spec"]["workerGroupSpecs"] if role_label(g)]
        assert sorted(role_label(g) for g in roles) == ["learner", "reward", "rollout"]
        assert all(g["replicas"] == g["minReplicas"] == 0 < g["maxReplicas"] for g in roles)


@pytest.mark.parametrize("break_it", ["rename", "relabel", "too_few"])
def test_placement_check_sees_a_group_that_does_not_match(break_it: str) -> None:
    objs = rendered("gpu")
    recipe = multinode_recipe(objs)
    cluster = deep_copy(find(objs, "RayCluster", "rlsys"))
    rollout = next(g for g in cluster["spec"]["workerGroupSpecs"] if role_label(g) == "rollout")
    if break_it == "rename":
        rollout["rayStartParams"]["resources"] = '"{\\"rollout_nodes\\": 1}"'
    elif break_it == "relabel":
        rollout["rayStartParams"]["labels"] = "rlsys-role=learner"
    else:
        recipe = recipe.model_copy(update={"rollout": recipe.rollout.model_copy(
            update={"num_workers": rollout["maxReplicas"] + 1})})
    problems = placement_problems(cluster, recipe)
    assert problems and all(p.startswith("rollout:") for p in problems), problems


def test_multinode_recipe_is_quickstart_plus_the_cluster_section() -> None:
    multinode = yaml.safe_load((REPO / "k8s/base/recipes/multinode.yaml").read_text())
    quickstart = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    assert set(multinode["cluster"]) >= {"placement", "max_restarts"}
    multinode.pop("cluster")
    assert multinode == quickstart, "k8s/base/recipes/multinode.yaml: update it from " \
                                    "configs/quickstart.yaml (only `cluster` may differ)"
