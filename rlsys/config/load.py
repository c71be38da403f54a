"""Load a recipe YAML, apply ``--set a.b=c`` overrides, validate, and check registry names.

Errors are collected into one ``RecipeError`` whose lines each name a field path, so
``rlsys validate`` can print them all. This module does not run anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rlsys.config.schema import RL_KINDS, Recipe


class RecipeError(ValueError):
    """A recipe that cannot be used; ``errors`` holds ``(field_path, reason)`` pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path or '<root>'}: {msg}" for path, msg in errors)
        super().__init__(f"{source}: {len(errors)} error(s)\n{lines}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise RecipeError("--set", [(text, "expected key.path=value")])
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError("--set", [(text, "empty key path")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError("--set", [(key, f"value is not valid YAML: {exc}")]) from None
    return parts, value


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, list):
        if part.isdigit() and int(part) < len(node):
            return int(part)
        for i, item in enumerate(node):  # a stage or source can be addressed by its name
            if isinstance(item, dict) and item.get("name") == part:
                return i
        raise RecipeError("--set", [(path, f"no list item {part!r}")])
    if not isinstance(node, dict):
        raise RecipeError("--set", [(path, "cannot descend into a scalar")])
    return part


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``value`` at the key path in the nested dict/list ``data`` (creating dicts)."""
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        key = _child(node, part, ".".join(parts[: depth + 1]))
        if isinstance(node, dict) and not isinstance(node.get(key), dict | list):
            node[key] = {}
        node = node[key]
    node[_child(node, parts[-1], ".".join(parts))] = value


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def _registry_errors(recipe: Recipe) -> list[tuple[str, str]]:
    """Check every registry name the recipe uses; imports the registries lazily."""
    from rewards import reward_names
    from rlsys.algo import ADVANTAGES, AGGREGATIONS, DPO_LOSSES, KL_ESTIMATORS, POLICY_OBJECTIVES

    errors: list[tuple[str, str]] = []

    def check(path: str, name: str, names: list[str], kind: str) -> None:
        if name not in names:
            errors.append((path, f"unknown {kind} {name!r}; known: {', '.join(sorted(names))}"))

    check("reward.type", recipe.reward.type, reward_names(), "reward")
    for i, stage in enumerate(recipe.stages):
        if stage.kind in RL_KINDS:
            algo = stage.algo_or_default
            check(f"stages.{i}.algo.estimator", stage.estimator, ADVANTAGES.names(), "estimator")
            check(f"stages.{i}.algo.objective", algo.objective, POLICY_OBJECTIVES.names(),
                  "policy objective")
            check(f"stages.{i}.algo.aggregation", algo.aggregation, AGGREGATIONS.names(),
                  "aggregation")
            check(f"stages.{i}.algo.kl_estimator", algo.kl_estimator, KL_ESTIMATORS.names(),
                  "KL estimator")
        if stage.kind == "dpo" and stage.dpo is not None:
            check(f"stages.{i}.dpo.loss", stage.dpo.loss, DPO_LOSSES.names(), "DPO loss")
    return errors


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read ``path``, apply dotted overrides, validate; ``RecipeError`` lists all errors."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise RecipeError(source, [("", "file not found")]) from None
    except yaml.YAMLError as exc:
        raise RecipeError(source, [("", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise RecipeError(source, [("", "a recipe must be a mapping at the top level")])
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
    return recipe_from_dict(data, source)


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate an already-parsed recipe mapping (schema, cross-field rules and registries)."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        errors = [(_format_loc(e["loc"]), e["msg"].removeprefix("Value error, "))
                  for e in exc.errors()]
        raise RecipeError(source, errors) from None
    errors = _registry_errors(recipe)
    if errors:
        raise RecipeError(source, errors)
    return recipe
