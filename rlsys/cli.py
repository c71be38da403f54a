"""The ``rlsys`` command line: ``train``, ``validate``, ``eval``, ``serve``, ``config``.

User errors (``rlsys.errors.UserError``: a bad recipe, a missing or unreadable file, bad data,
an unknown model or reward argument) print one line per problem naming the file and field (and
the line, for data) and exit with status 2, without a traceback; any other exception is a bug
and keeps its traceback, except a worker that failed or died (``WorkerError``,
``LearnerLostError``): one line naming the worker, the phase and its log file, exit status 3.
``validate`` and ``train`` check the model, the data files and the
reward arguments before anything starts (``rlsys.config.checks``). Heavy imports (Ray, torch,
the service) happen inside the command that needs them, so ``rlsys --help`` and
``rlsys validate`` are quick.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from actors.errors import WorkerError
from learner.errors import LearnerLostError
from rlsys.config import load_recipe
from rlsys.errors import UserError

__all__ = ["UserError", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlsys", description="Post-train LLMs with RL, SFT, DPO "
                                "and CPT on Ray + vLLM + DeepSpeed.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def recipe_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("recipe", help="recipe YAML file")
        sp.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="override a recipe field (repeatable)")
        return sp

    train = recipe_cmd("train", "run every stage of a recipe")
    train.add_argument("--address", default=None,
                       help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    train.add_argument("--run-dir", default=None, help="output directory (overrides the recipe)")
    train.add_argument("--verbose", action="store_true", help="show worker output and library "
                       "logs here (default: in RUN_DIR/logs/, one file per worker)")
    recipe_cmd("validate", "check a recipe, its model, data files and reward arguments without "
                           "running it")
    ev = recipe_cmd("eval", "pass@k / maj@k of a checkpoint with the recipe's reward")
    ev.add_argument("--checkpoint", required=True, help="HF model directory or short name")
    ev.add_argument("--address", default=None, help="Ray cluster address")
    ev.add_argument("--output", default=None, help="write the JSON report here")
    ev.add_argument("--verbose", action="store_true", help="show worker output and library "
                    "logs here (default: in RUN_DIR/logs/)")

    config = sub.add_parser("config", help="print the recipe JSON schema or a resolved recipe",
                            description="Print the recipe JSON schema or a resolved recipe.")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="WHAT")
    config_sub.add_parser("schema", help="the JSON schema of a recipe (every field, type, "
                          "default and description)")
    show = config_sub.add_parser("show", help="the recipe as run: overrides applied, every "
                                 "default filled in (YAML)")
    show.add_argument("recipe", help="recipe YAML file")
    show.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY.PATH=VALUE", help="override a recipe field (repeatable)")

    export = sub.add_parser("export", help="merge a LoRA adapter into its base model",
                            description="Write a LoRA stage's adapter merged into its base "
                                        "model as a Hugging Face directory.")
    export.add_argument("--merge", action="store_true", required=True,
                        help="merge the adapter (the only export there is)")
    export.add_argument("src", help="RUN_DIR/stages/NAME, its final dir, or an adapter dir")
    export.add_argument("out", help="output directory (new or empty)")

    serve = sub.add_parser("serve", help="run the reward-plugin REST service",
                           description="Run the reward-plugin REST service (FastAPI + Redis).")
    serve.add_argument("--host", default=os.environ.get("RLSYS_SERVICE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("RLSYS_SERVICE_PORT",
                                                                      "8000")))
    serve.add_argument("--token", default=None,
                       help="bearer token (default: the RLSYS_API_TOKEN environment variable; "
                            "required unless --insecure-no-auth)")
    from rewards.service.flags import add_service_arguments  # light: no FastAPI, no Redis

    add_service_arguments(serve)
    return p


def _load_checked(args: argparse.Namespace):
    """The recipe, with its model, data files and reward arguments checked."""
    from rlsys.config.checks import check_inputs

    recipe = load_recipe(args.recipe, args.overrides)
    check_inputs(recipe, args.recipe)
    return recipe


def _cmd_validate(args: argparse.Namespace) -> int:
    recipe = _load_checked(args)
    kinds = " -> ".join(f"{s.name}({s.kind})" for s in recipe.stages)
    print(f"{args.recipe}: OK — recipe {recipe.name!r}, stages: {kinds}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    recipe = _load_checked(args)  # before Ray starts: bad input fails in a second
    from rlsys.controller.runner import run_recipe

    run_recipe(recipe, address=args.address, run_dir=args.run_dir, verbose=args.verbose)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from rlsys.modeling.resolve import check_model

    recipe = _load_checked(args)
    check_model(args.checkpoint)
    from rlsys.controller.evaluate import eval_checkpoint

    eval_checkpoint(recipe, args.checkpoint, address=args.address, output=args.output,
                    verbose=args.verbose)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from rewards.service import serve
    from rewards.service.flags import ServiceConfigError, settings_from_args

    try:
        settings = settings_from_args(args, host=args.host, port=args.port,
                                      token=args.token or None)
    except ServiceConfigError as exc:
        raise UserError(str(exc)) from None
    serve(settings)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import json

    if args.config_command == "schema":
        from rlsys.config.schema import Recipe

        print(json.dumps(Recipe.model_json_schema(), indent=2))
        return 0
    import yaml

    from rlsys.config.doc import resolved_dict

    recipe = load_recipe(args.recipe, args.overrides)
    print(yaml.safe_dump(resolved_dict(recipe), sort_keys=False, allow_unicode=True), end="")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from rlsys.controller.export import merge_export

    print(f"merged model written to {merge_export(args.src, args.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlsys`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    handler = {"validate": _cmd_validate, "train": _cmd_train, "eval": _cmd_eval,
               "serve": _cmd_serve, "config": _cmd_config, "export": _cmd_export}[args.command]
    try:
        return handler(args)
    except (UserError, FileNotFoundError) as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"rlsys {args.command}: error: {line}", file=sys.stderr)
        return 2
    except (LearnerLostError, WorkerError) as exc:  # a worker failed or died: one line naming
        print(f"rlsys {args.command}: error: {exc}", file=sys.stderr)  # its log, exit 3
        return exc.EXIT_STATUS
    except KeyboardInterrupt:
        print(f"rlsys {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
