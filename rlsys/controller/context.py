"""``RunContext``: what the stages of one run share — Ray, the run dir, data records, the
tokenizer, and long-lived rollout/reward worker pools (re-pointed at new weights between stages
instead of being restarted).

It unpacks the recipe into plain arguments for the workers (config stops here). It does not
implement any stage loop.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsys import worker_logs
from rlsys.config import Recipe, SourceConfig


@dataclass
class RayStart:
    """What ``init_ray`` did: ``started`` a local Ray (with its ``watchdog`` process), and a
    one-line ``description`` for the run's header."""

    started: bool
    description: str
    watchdog: Any = None


def init_ray(address: str | None, num_cpus: int | None, *,
             log_dir: Path | None = None) -> RayStart:
    """Join ``address`` / ``RAY_ADDRESS`` if given, else start a local Ray.

    A local Ray gets ``num_cpus`` (default: all cores), no dashboard, binds to loopback only
    and is torn down with this process, even after ``kill -9`` (``watchdog``). With
    ``log_dir`` (a quiet run) worker output is not forwarded to this terminal: each named
    worker writes ``log_dir/NAME.log`` (``rlsys.worker_logs``); without it, as Ray does.
    """
    import ray

    if ray.is_initialized():
        return RayStart(False, "Ray already initialised in this process")
    target = address or os.environ.get("RAY_ADDRESS")
    env_vars = {"TOKENIZERS_PARALLELISM": "false"}
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    if log_dir is not None:
        env_vars.update({worker_logs.LOG_DIR_VAR: str(log_dir), **worker_logs.QUIET_ENV})
        runtime_env["worker_process_setup_hook"] = worker_logs.SETUP_HOOK
    quiet = log_dir is not None
    if target:
        ray.init(address=target, runtime_env=runtime_env, log_to_driver=not quiet)
        print(f"[ray] joined cluster at {target}", flush=True)
        return RayStart(False, f"Ray cluster at {target}")
    info = _init_local_ray(num_cpus=num_cpus, runtime_env=runtime_env,
                           log_to_driver=not quiet)
    from rlsys.controller.watchdog import start_watchdog

    watchdog = start_watchdog(info["session_dir"], str(log_dir / "watchdog.log")
                              if log_dir is not None else None)
    return RayStart(True, f"local Ray on 127.0.0.1, {num_cpus or os.cpu_count()} CPUs",
                    watchdog)


def _init_local_ray(**kwargs: Any) -> dict[str, Any]:
    """``ray.init`` of a single-node Ray whose servers listen on 127.0.0.1 only; returns its
    ``address_info``.

    Ray replaces a loopback ``_node_ip_address`` with the machine's routable address unless
    multi-node clusters are switched off (``ray_constants.ENABLE_RAY_CLUSTER``, which the
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` variable sets when Ray is imported); switched off,
    the GCS, raylet, agents and workers all bind to 127.0.0.1. The switch is restored once
    the node is up (it is only read while choosing the node's address).
    """
    import ray
    from ray._private import ray_constants
    from ray._private.worker import RayContext

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ctx = ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                       dashboard_host="127.0.0.1", configure_logging=False, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
    if not isinstance(ctx, RayContext):  # ray.init returns a ClientContext only for ray://
        raise RuntimeError(f"ray.init started no local node (got {type(ctx).__name__})")
    return ctx.address_info


def local_cpus_needed(recipe: Recipe) -> int:
    """Logical CPUs for a local Ray: at least the cores, and enough for every actor the recipe
    starts at once (policy + reference + critic ranks, rollout and judge workers), so nothing
    waits forever for a CPU on a small machine (the OS time-shares them)."""
    import math

    ranks = recipe.learner.num_ranks * recipe.learner.num_cpus_per_rank
    groups = 1 + any(s.kind == "dpo" or (s.algo and s.algo.kl_coef > 0) for s in recipe.stages) \
        + any(s.kind == "ppo" for s in recipe.stages)
    rollout = recipe.rollout.num_workers * recipe.rollout.num_cpus_per_worker
    judges = [s.generate.judge for s in recipe.stages if s.generate and s.generate.judge]
    rollout += max((j.num_workers * j.num_cpus_per_worker for j in judges), default=0)
    return max(os.cpu_count() or 1, math.ceil(ranks * groups + rollout))


def role_placement(recipe: Recipe, role: str) -> dict[str, Any] | None:
    """The plain placement dict (``rlsys.placement``) of ``role`` (``rollout``, ``reward``,
    or a learner group's name, which falls back to ``learner``); None: anywhere."""
    from rlsys.config.cluster import placement_for

    found = placement_for(recipe.cluster.placement, role)
    return found.model_dump() if found is not None else None


def resolve_run_dir(recipe: Recipe, run_dir: str | None) -> Path:
    """The run dir: ``--run-dir`` or the recipe's ``logging.run_dir`` with ``{name}`` filled."""
    return Path(run_dir or recipe.logging.run_dir.format(name=recipe.name)).resolve()


class RunContext:
    """Shared state of one ``rlsys train`` / ``rlsys eval`` run. Use as a context manager."""

    def __init__(self, recipe: Recipe, run_dir: Path, *, address: str | None = None,
                 start_ray: bool = True, verbose: bool = False) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.address = address or recipe.cluster.address
        num_cpus = recipe.cluster.num_cpus or local_cpus_needed(recipe)
        # Quiet (the default): worker output and this process's stderr (warnings, library
        # logs) go to RUN_DIR/logs; the terminal keeps the run's own lines and progress bars.
        self.log_dir = None if verbose or not start_ray else self.run_dir / "logs"
        self._quiet = ExitStack()
        if self.log_dir is not None:
            self._quiet.enter_context(worker_logs.redirect_stderr(self.log_dir / "driver.log"))
        try:
            self._ray = init_ray(self.address, num_cpus, log_dir=self.log_dir) if start_ray \
                else RayStart(False, "no Ray")
        except BaseException:
            self._quiet.close()
            raise
        self._started_ray = self._ray.started
        self._records: dict[str, list[dict]] = {}
        self._rollout = None
        self._rollout_model: str | None = None
        self._reward = None
        self._base_model: str | None = None

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- models and data -------------------------------------------------------------------
    def base_model_path(self) -> str:
        """The recipe's model as a local HF directory (short names converted once and cached)."""
        if self._base_model is None:
            from rlsys.modeling import resolve_model

            self._base_model = resolve_model(self.recipe.model.path)
        return self._base_model

    def source(self, name: str) -> SourceConfig:
        """The source config named ``name``."""
        for src in self.recipe.data.sources:
            if src.name == name:
                return src
        raise KeyError(f"unknown data source {name!r}")

    def records(self, name: str) -> list[dict]:
        """Records of a source (canonical keys), loaded once; malformed rows per ``on_error``."""
        if name not in self._records:
            src = self.source(name)
            if src.generator:
                from rlsys.tasks import GENERATORS

                self._records[name] = GENERATORS.get(src.generator)(**src.generator_kwargs)
            else:
                from rlsys.data.sources import load_records

                if src.path is None:  # SourceConfig requires exactly one of path / generator
                    raise RuntimeError(f"data source {name!r} has neither path nor generator")
                loaded = load_records(self.resolve_path(src.path), format=src.format,
                                      fields=src.fields or None, on_error=src.on_error,
                                      source_name=src.name, kind=src.kind)
                if loaded.skipped:
                    print(f"[data] {name}: skipped {loaded.skipped} malformed row(s), e.g. "
                          f"{loaded.errors[:1]}", flush=True)
                self._records[name] = loaded.records
            if not self._records[name]:
                raise ValueError(f"data source {name!r} has no records")
        return self._records[name]

    def resolve_path(self, path: str) -> str:
        """A data path: ``{run_dir}`` is expanded (synthetic stages write there)."""
        return path.replace("{run_dir}", str(self.run_dir))

    def stage_sources(self, stage_sources: list[str], kinds: tuple[str, ...]) -> list[str]:
        """The stage's sources, or every train source whose kind is in ``kinds``."""
        if stage_sources:
            return list(stage_sources)
        names = [s.name for s in self.recipe.data.sources
                 if s.split == "train" and s.kind in kinds]
        if not names:
            raise ValueError(f"no train data source of kind {kinds} in the recipe")
        return names

    def eval_sources(self) -> list[str]:
        """The held-out sources: ``eval.sources`` or every ``split: eval`` source."""
        names = list(self.recipe.eval.sources) or [
            s.name for s in self.recipe.data.sources if s.split == "eval"]
        if not names:
            raise ValueError("no eval source: set eval.sources or a source with split: eval")
        return names

    def stage_dir(self, stage: str) -> Path:
        """``RUN_DIR/stages/NAME`` (created)."""
        path = self.run_dir / "stages" / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- worker pools ------------------------------------------------------------------------
    def rollout_pool(self, model_path: str):
        """The rollout pool serving ``model_path`` (created once; new weights loaded in place)."""
        rc = self.recipe.rollout
        if self._rollout is None:
            from actors.launch import launch_rollout_workers

            self._rollout = launch_rollout_workers(
                rc.num_workers, rc.engine, model_path, engine_kwargs=self._engine_kwargs(),
                num_cpus=rc.num_cpus_per_worker, num_gpus=rc.num_gpus_per_worker,
                system_prompt=self.recipe.model.system_prompt,
                timeout_s=self.recipe.cluster.timeout_s,
                placement=role_placement(self.recipe, "rollout"))
        elif self._rollout_model != model_path:
            self._rollout.sync_weights(load_hf_state_dict(model_path))
        self._rollout_model = model_path
        return self._rollout

    def mark_rollout_weights(self, label: str) -> None:
        """Record that the pool now holds weights other than a saved dir (after a sync)."""
        self._rollout_model = label

    def _engine_kwargs(self) -> dict[str, Any]:
        rc = self.recipe.rollout
        kwargs = dict(rc.engine_kwargs)
        kwargs.setdefault("dtype", self.recipe.model.dtype)
        if rc.engine == "hf" and not rc.num_gpus_per_worker:  # CPU: a thread per reserved CPU
            from learner.launch import cpu_threads

            kwargs.setdefault("num_threads", cpu_threads(rc.num_cpus_per_worker))
        if rc.engine == "vllm":  # LoRA: vLLM must know the largest adapter rank at start
            loras = [lora for stage in self.recipe.stages
                     if (lora := stage.lora_for(self.recipe.model)) is not None]
            kwargs.setdefault("lora_sync", rc.lora_sync)
            if loras:
                kwargs.setdefault("max_lora_rank", max(lora.r for lora in loras))
                kwargs.setdefault("lora_modules_to_save",
                                  sorted({m for lora in loras for m in lora.modules_to_save}))
        return kwargs

    def reward_pool(self):
        """The reward pool for the recipe's reward (created once)."""
        if self._reward is None:
            from actors.launch import launch_reward_workers

            # Scoring is light next to generation and training (the math checker runs its
            # own small process pool), so reward actors take no CPU reservation.
            self._reward = launch_reward_workers(self.recipe.reward.num_workers,
                                                 self.reward_spec(), num_cpus=0,
                                                 timeout_s=self.recipe.cluster.timeout_s,
                                                 placement=role_placement(self.recipe,
                                                                          "reward"))
        return self._reward

    def reward_spec(self) -> dict[str, Any]:
        """Plain ``{"name", "kwargs"}`` for ``rewards.get_reward``; ``{run_dir}`` in a string
        argument is expanded (e.g. the path of a reward model an ``rm`` stage trained)."""
        rc = self.recipe.reward
        kwargs = {k: self.resolve_path(v) if isinstance(v, str) else v
                  for k, v in rc.kwargs.items()}
        if rc.url:
            kwargs.setdefault("url", rc.url)
        return {"name": rc.type, "kwargs": kwargs}

    def close(self) -> None:
        """Stop the pools (and Ray, if this context started it)."""
        for pool in (self._rollout, self._reward):
            if pool is not None:
                pool.close()
        self._rollout = self._reward = None
        if self._started_ray:
            import ray

            from rlsys.controller.watchdog import stop_watchdog

            ray.shutdown()
            stop_watchdog(self._ray.watchdog)
            self._started_ray = False
        self._quiet.close()  # the terminal gets this process's stderr back

    @property
    def ray_description(self) -> str:
        """One line about the Ray this run uses (for the run's header)."""
        return self._ray.description


def load_hf_state_dict(model_path: str):
    """The packed state dict of a saved HF model directory (safetensors), for a weight sync."""
    from safetensors.torch import load_file

    from actors.weight_sync import pack_state_dict

    state: dict = {}
    for f in sorted(Path(model_path).glob("*.safetensors")):
        state.update(load_file(str(f)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors weights in {model_path}")
    return pack_state_dict(state)
