"""The recipe's ``env:`` section: which environment multi-turn stages step, and their caps.

``EnvConfig`` is typed and strict like the rest of the recipe (frozen, unknown keys refused);
``type`` is checked against the environment registry (``rlsys.envs``, entry points included)
when the recipe is parsed. With ``env:`` set, every RL stage of the recipe samples multi-turn
episodes in that environment (the environment's reward is the reward; ``reward:`` is not used
by them), eval stages evaluate by episodes and ``rejection_sampling`` keeps rewarded episodes as
conversations; ``env_errors`` names the recipe settings that cannot go with it (the other
data-generation stages, overlong shaping, token chunks). This module only describes
configuration; it builds no environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def env_errors(recipe: Any) -> list[tuple[str, str]]:
    """``(field, message)`` for settings a recipe with ``env:`` cannot have: the
    data-generation stages other than ``rejection_sampling`` (they sample single-turn), DAPO
    overlong shaping (its length is per turn), and ``partial_rollout_chunk`` (async episodes
    take new weights between turns)."""
    from rlsys.config.base import DATA_GEN_KINDS, RL_KINDS

    errors = []
    for i, stage in enumerate(recipe.stages):
        if stage.kind in DATA_GEN_KINDS and stage.kind != "rejection_sampling":
            errors.append((f"stages.{i}.kind", f"{stage.kind!r} stages do not run multi-turn "
                           f"episodes; a recipe with 'env:' cannot have them (run them in a "
                           f"recipe without 'env:')"))
        if stage.kind in RL_KINDS and stage.algo_or_default.overlong_buffer > 0:
            errors.append((f"stages.{i}.algo.overlong_buffer",
                           "overlong shaping is single-turn only; set it to 0 with 'env:' (use "
                           "env.max_total_tokens and env.max_tokens_per_turn)"))
        if stage.kind in RL_KINDS and stage.algo_or_default.partial_rollout_chunk > 0:
            errors.append((f"stages.{i}.algo.partial_rollout_chunk",
                           "with 'env:' async episodes load new weights between turns, not "
                           "token chunks; remove it (env.max_tokens_per_turn bounds a turn)"))
    return errors


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
