"""The ``cluster.placement`` entries of the recipe: where each role's Ray actors may run.

Declarations (typed, strict) and the role fallback (``placement_for``);
``rlsys.controller.context.role_placement`` turns an entry into a plain dict and
``rlsys.placement`` into Ray spawn options. Does not talk to Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from rlsys.config.base import Strict


class RolePlacement(Strict):
    """Where the actors of one role run (all keys optional; empty: anywhere)."""

    resources: dict[str, float] = Field(
        default={}, description="Ray custom resources each actor of the role reserves, e.g. "
        "{rollout_node: 1}: it runs only on nodes started with them (ray start --resources; "
        "the k8s worker group of the role). Hard: a lost node's actors come back only where "
        "these are left.")
    labels: dict[str, str] = Field(
        default={}, description="Node labels the actor requires (ray start --labels "
        "k=v): hard, like resources.")
    prefer_labels: dict[str, str] = Field(
        default={}, description="Node labels the actor prefers: it runs there when it fits, "
        "else on any node, so workers of a lost node are recreated on the others.")

    @field_validator("resources")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if v <= 0 or k in ("CPU", "GPU", "memory")}
        if bad:
            raise ValueError(f"resources must be custom names with amounts > 0 (CPU/GPU come "
                             f"from num_cpus_per_*/num_gpus_per_*); got {bad}")
        return value


#: a role ``cluster.placement`` may name
PlacementRole = Literal["rollout", "reward", "learner", "policy", "critic", "reference"]


def placement_for(placement: Mapping[Any, RolePlacement], role: str) -> RolePlacement | None:
    """The placement of ``role``: its own entry; a learner group (``policy``, ``critic``,
    ``reference`` or any other group name) falls back to ``learner``; None: no constraint."""
    own = placement.get(role)
    if own is None and role not in ("rollout", "reward"):
        return placement.get("learner")
    return own
