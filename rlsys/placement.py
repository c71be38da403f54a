"""Ray spawn options from a plain placement dict (``{"resources", "labels",
"prefer_labels"}``, see ``rlsys.config.cluster.RolePlacement``), and where the first of such
actors would run.

Used by the launch modules (``actors.launch`` pools, ``learner.launch`` groups) when they
spawn actors. Does not read the recipe (``rlsys.controller.context.role_placement`` unpacks
it) and does not start or stop actors.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

#: the keys a plain placement dict may have
PLACEMENT_KEYS = ("resources", "labels", "prefer_labels")


def placement_options(placement: Mapping[str, Any] | None) -> dict[str, Any]:
    """``.options(...)`` for an actor under ``placement``: ``resources`` (custom Ray
    resources it reserves) and, with labels, a ``NodeLabelSchedulingStrategy`` (``labels``
    hard, ``prefer_labels`` soft: any node that fits when no preferred one does). ``None`` or
    empty: no options (Ray places the actor anywhere)."""
    if not placement:
        return {}
    unknown = set(placement) - set(PLACEMENT_KEYS)
    if unknown:
        raise ValueError(f"placement has unknown key(s) {sorted(unknown)}; "
                         f"allowed: {PLACEMENT_KEYS}")
    options: dict[str, Any] = {}
    if placement.get("resources"):
        options["resources"] = {k: float(v) for k, v in placement["resources"].items()}
    hard, soft = placement.get("labels") or {}, placement.get("prefer_labels") or {}
    if hard or soft:
        from ray.util.scheduling_strategies import In, NodeLabelSchedulingStrategy

        options["scheduling_strategy"] = NodeLabelSchedulingStrategy(
            hard={k: In(v) for k, v in hard.items()},
            soft={k: In(v) for k, v in soft.items()})
    return options


def describe(placement: Mapping[str, Any] | None) -> str:
    """``resources {...}, labels {...}, prefer_labels {...}`` (only the keys set), or
    ``anywhere``."""
    parts = [f"{k} {dict(placement[k])}" for k in PLACEMENT_KEYS
             if placement and placement.get(k)]
    return ", ".join(parts) or "anywhere"


def node_address(_instance: Any = None) -> dict[str, Any]:
    """Runs on a node (a zero-CPU task): its Ray node id, IP and a TCP port free there a
    moment ago (a learner group's ``MASTER_ADDR``/``MASTER_PORT``)."""
    import ray

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port = int(sock.getsockname()[1])
    ctx = ray.get_runtime_context()
    labels = {k: v for k, v in ctx.get_node_labels().items() if not k.startswith("ray.io/")}
    return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "port": port,
            "pid": os.getpid(), "labels": labels}


def placement_line(name: str, facts: Mapping[str, Any]) -> str:
    """``[placement] rollout-0: pid 123 on node 5f2c...(12 hex) labels {...}``: where an actor
    runs (printed when a role has a placement; the multi-node test reads these lines)."""
    return (f"[placement] {name}: pid {facts.get('pid')} on node {facts.get('node_id', '?')} "
            f"labels {facts.get('labels', {})}")


def probe_node(options: Mapping[str, Any], timeout_s: float) -> dict[str, Any] | None:
    """Where an actor with ``options`` would be placed now: ``node_address`` of a zero-CPU
    task submitted with the same resources and strategy. None when no node took it within
    ``timeout_s`` (no node offers the resources/labels, or they are all taken)."""
    import ray
    from ray.exceptions import GetTimeoutError

    task = ray.remote(num_cpus=0)(node_address).options(**options)
    ref = task.remote()
    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError:
        ray.cancel(ref, force=True)
        return None
