"""Check what a valid recipe points at: the model, the data files and the reward's arguments.

``input_errors(recipe)`` returns ``(field_path, reason)`` pairs; ``check_inputs`` raises them
as one ``RecipeError``. ``rlsys validate`` and ``rlsys train`` (before Ray starts) run it, so a
missing or unreadable data file, an unknown model name or a misspelled reward argument is one
clear line naming the recipe field and the file, line and data field, not a traceback from a
worker. It reads every data file (``load_records``) and runs built-in generators, which are
small; it does not build models (``check_model`` only), and it builds the reward only when that
is cheap (never a reward model). Paths containing ``{run_dir}`` are written by an earlier stage
of the run and are not checked here. It does not start Ray or import torch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from rlsys.config.load import RecipeError
from rlsys.config.schema import Recipe

#: rewards that load a model when built: their arguments are checked against the signature only
_HEAVY_REWARDS = ("model",)


def check_inputs(recipe: Recipe, source: str = "<recipe>") -> None:
    """Raise ``RecipeError`` naming every problem ``input_errors`` finds."""
    errors = input_errors(recipe)
    if errors:
        raise RecipeError(source, errors)


def input_errors(recipe: Recipe) -> list[tuple[str, str]]:
    """Problems of the model, the data sources and the reward of a schema-valid recipe."""
    return [*_model_errors(recipe), *_data_errors(recipe), *_reward_errors(recipe)]


def _model_errors(recipe: Recipe) -> list[tuple[str, str]]:
    from rlsys.modeling.resolve import ModelError, check_model

    try:
        check_model(recipe.model.path)
    except ModelError as exc:
        return [("model.path", str(exc))]
    return []


def _signature_error(target: Callable[..., Any], kwargs: dict[str, Any], what: str) -> str | None:
    """Why ``target(**kwargs)`` cannot bind, listing the accepted arguments; None if it can."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return None
    params = signature.parameters.values()
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params):
        return f"{what}: unknown argument(s) {unknown}; accepted: {', '.join(accepted) or 'none'}"
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        return f"{what}: {exc}; accepted: {', '.join(accepted) or 'none'}"
    return None


def _data_errors(recipe: Recipe) -> list[tuple[str, str]]:
    from rlsys.data.sources import DataError, load_records
    from rlsys.tasks import GENERATORS

    errors: list[tuple[str, str]] = []
    for i, src in enumerate(recipe.data.sources):
        if src.generator is not None:
            if src.generator not in GENERATORS:
                errors.append((f"data.sources.{i}.generator",
                               f"unknown generator {src.generator!r}; known: "
                               f"{', '.join(GENERATORS.names())}"))
                continue
            generate = GENERATORS.get(src.generator)
            why = _signature_error(generate, src.generator_kwargs, f"generator {src.generator!r}")
            if why:
                errors.append((f"data.sources.{i}.generator_kwargs", why))
                continue
            try:
                if not generate(**src.generator_kwargs):
                    errors.append((f"data.sources.{i}.generator_kwargs", "no records"))
            except ValueError as exc:
                errors.append((f"data.sources.{i}.generator_kwargs", str(exc)))
        elif src.path is not None and "{run_dir}" not in src.path:
            try:
                load_records(src.path, format=src.format, fields=src.fields or None,
                             on_error=src.on_error, source_name=src.name, kind=src.kind)
            except DataError as exc:
                errors.append((f"data.sources.{i}.path", str(exc)))
    return errors


def _reward_target(name: str) -> Callable[..., Any]:
    """The class or function a reward name builds (built-ins are registered as lazy factories
    whose ``__qualname__`` is ``module:attr``; see ``rlsys.registry.lazy_factory``)."""
    from rewards import REWARDS, reward_names

    reward_names()  # loads the entry points
    factory = REWARDS.get(name)
    module, sep, attr = getattr(factory, "__qualname__", "").partition(":")
    if sep:
        return getattr(importlib.import_module(module), attr)
    return factory


def _reward_kwarg_errors(name: str, kwargs: dict[str, Any], path: str,
                         used: list[str]) -> list[tuple[str, str]]:
    """Signature errors of one reward spec and of its components (``weighted``)."""
    from rewards import reward_names

    if name not in reward_names():
        return [(path.rsplit(".", 1)[0] + ".name", f"unknown reward {name!r}; known: "
                 f"{', '.join(reward_names())}")]
    used.append(name)
    why = _signature_error(_reward_target(name), kwargs, f"reward {name!r}")
    if why:
        return [(path, why)]
    errors: list[tuple[str, str]] = []
    components = kwargs.get("components") if name == "weighted" else None
    for j, spec in enumerate(components if isinstance(components, list) else []):
        if isinstance(spec, dict) and isinstance(spec.get("name"), str) \
                and isinstance(spec.get("kwargs") or {}, dict):
            errors += _reward_kwarg_errors(spec["name"], spec.get("kwargs") or {},
                                           f"{path}.components.{j}.kwargs", used)
    return errors


def _reward_errors(recipe: Recipe) -> list[tuple[str, str]]:
    from rewards import get_reward, reward_names

    rc = recipe.reward
    if rc.type not in reward_names():
        return []  # load_recipe already reported the unknown name
    kwargs = dict(rc.kwargs)
    if rc.url:
        kwargs.setdefault("url", rc.url)
    used: list[str] = []
    errors = _reward_kwarg_errors(rc.type, kwargs, "reward.kwargs", used)
    if errors or any(name in _HEAVY_REWARDS for name in used):
        return errors
    try:  # cheap to build: catches bad values (a regex that does not compile, a bad URL)
        reward = get_reward(rc.type, **kwargs)
    except (TypeError, ValueError) as exc:
        return [("reward.kwargs", str(exc))]
    close = getattr(reward, "close", None)
    if callable(close):
        close()
    return []
