"""The recipe's ``env:`` section: which environment multi-turn stages step, and their caps.

``EnvConfig`` is typed and strict like the rest of the recipe (frozen, unknown keys refused);
``type`` is checked against the environment registry (``rlsys.envs``, entry points included)
when the recipe is parsed. Stages do not use it yet: multi-turn rollout is in progress, so
``rlsys.config.load`` refuses a recipe that sets ``env:`` rather than silently ignoring it.
This module only describes configuration; it builds no environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: why a recipe with ``env:`` is refused for now (one line, shown by ``rlsys validate``)
NOT_YET = ("multi-turn stages are not implemented yet (multi-turn rollout is in progress); "
           "remove 'env:' to run this recipe")


class EnvConfig(BaseModel):
    """An environment for multi-turn (agentic) stages; see README "Environments and tools"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(..., description="Registered environment name (tool_math, code_repair, "
                                       "or one from the rlsys.envs entry-point group).")
    kwargs: dict[str, Any] = Field(default_factory=dict,
                                   description="Keyword arguments of the environment.")
    max_turns: int = Field(
        default=4, ge=1, le=64, description="Assistant turns per trajectory at most.")
    max_tokens_per_turn: int = Field(default=512, ge=1, description="Tokens one assistant turn may "
                                                            "generate.")
    max_total_tokens: int = Field(default=2048, ge=1, description="Tokens of a whole trajectory "
                                                          "(prompt, turns and observations).")

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        from rlsys.envs import env_names

        names = env_names()
        if value not in names:
            raise ValueError(f"unknown environment {value!r}; known: {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _caps(self) -> EnvConfig:
        if self.max_tokens_per_turn > self.max_total_tokens:
            raise ValueError(f"max_tokens_per_turn ({self.max_tokens_per_turn}) exceeds "
                             f"max_total_tokens ({self.max_total_tokens})")
        return self
