"""Load a recipe YAML, apply ``--set a.b=c`` overrides, validate, and check registry names.

Errors are collected into one ``RecipeError`` (a ``rlsys.errors.UserError``) with one line per
error, each naming the file and the field path (or the line, for YAML and encoding errors), so
``rlsys validate`` can print them all. This module does not run anything and does not open data
files or models (``rlsys.config.checks`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rlsys.config.schema import RL_KINDS, Recipe
from rlsys.errors import UserError


class RecipeError(UserError, ValueError):
    """A recipe that cannot be used; ``errors`` holds ``(field_path, reason)`` pairs.

    Its message has one line per error: ``SOURCE: FIELD.PATH: reason`` (or ``SOURCE: reason``
    for an error of the whole file).
    """

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = [f"{source}: {path}: {_one_line(msg)}" if path else
                 f"{source}: {_one_line(msg)}" for path, msg in errors]
        super().__init__("\n".join(lines))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}not valid YAML: {problem}"


def _read_text(path: str | Path, source: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise RecipeError(source, [("", "file not found")]) from None
    except IsADirectoryError:
        raise RecipeError(source, [("", "is a directory, not a recipe file")]) from None
    except PermissionError:
        raise RecipeError(source, [("", "permission denied")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        raise RecipeError(source, [("", f"line {line}, column {column}: not UTF-8 text (byte "
                                        f"{raw[err.start]:#04x}); save the recipe as UTF-8")]
                          ) from None


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
        raise RecipeError("--set", [(key, f"value is {_yaml_problem(exc)}")]) from None
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
    if recipe.env is not None:  # no silently ignored section (rlsys.config.env.env_errors)
        from rlsys.config.env import env_errors

        errors += env_errors(recipe)
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
        judge = stage.generate.judge if stage.generate is not None else None
        if judge is not None:  # a rubric that does not compile fails here, not mid-run
            from rewards.judge import Rubric

            try:
                Rubric(judge.rubric, mode=judge.mode)
            except ValueError as exc:
                errors.append((f"stages.{i}.generate.judge.rubric", str(exc)))
    return errors


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read ``path``, apply dotted overrides, validate; ``RecipeError`` lists all errors."""
    source = str(path)
    text = _read_text(path, source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(source, [("", _yaml_problem(exc))]) from None
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
