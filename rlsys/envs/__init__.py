"""Environments for agentic (multi-turn, tool-using) RL, and their registry.

``get_env(name, **kwargs)`` builds an environment by name (the recipe's ``env.type`` and
``env.kwargs``). Built-ins (``tool_math``, ``code_repair``) are resolved lazily; third-party
packages register factories through the ``rlsys.envs`` entry-point group or ``register_env``.
The contract is in ``rlsys.envs.base``; tool-call parsing in ``rlsys.envs.parse``; tools in
``rlsys.envs.tools``. Importing this package imports no sandbox, sympy, Ray or torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlsys.envs.base import Environment, Message, StepResult, step_many
from rlsys.registry import Registry, lazy_factory

__all__ = ["ENVS", "Environment", "Message", "StepResult", "env_names", "get_env",
           "register_env", "step_many"]

#: name -> factory(**kwargs) -> Environment
ENVS: Registry[Callable[..., Environment]] = Registry("environment")

_BUILTINS = {
    "tool_math": "rlsys.envs.tool_math:ToolMathEnv",
    "code_repair": "rlsys.envs.code_repair:CodeRepairEnv",
}
for _name, _path in _BUILTINS.items():
    ENVS.register(_name, lazy_factory(_path))


def _load_entry_points() -> None:
    ENVS.load_entry_points("rlsys.envs")


def register_env(name: str, factory: Callable[..., Environment]) -> None:
    """Register an environment class or factory ``(**kwargs) -> Environment``."""
    ENVS.register(name, factory)


def env_names() -> list[str]:
    """Every known environment name, built-ins and entry points."""
    _load_entry_points()
    return ENVS.names()


def get_env(name: str, **kwargs: Any) -> Environment:
    """Build the environment registered as ``name``; unknown names list the known ones."""
    _load_entry_points()
    return ENVS.get(name)(**kwargs)
