"""Typed recipes: the schema (``schema``) and the loader with overrides (``load``)."""

from rlsys.config.load import RecipeError, load_recipe, recipe_from_dict
from rlsys.config.schema import (
    DATA_GEN_KINDS,
    RL_KINDS,
    SFT_KINDS,
    STAGE_KINDS,
    AlgoConfig,
    Recipe,
    SourceConfig,
    StageConfig,
)

__all__ = ["DATA_GEN_KINDS", "RL_KINDS", "SFT_KINDS", "STAGE_KINDS", "AlgoConfig", "Recipe",
           "RecipeError", "SourceConfig", "StageConfig", "load_recipe", "recipe_from_dict"]
