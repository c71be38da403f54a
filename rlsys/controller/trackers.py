"""Experiment trackers fed by ``MetricsLogger``: TensorBoard, Weights & Biases, MLflow.

Each tracker gets the numbers of every ``metrics.jsonl`` row, the resolved recipe (W&B config;
MLflow params plus the whole recipe as the ``recipe.yaml`` artifact), and at the end the stage's
final model directory as a *reference* (its path; the weights are never copied). There is one
tracker run per stage, named ``RECIPE/STAGE``. ``wandb`` and ``mlflow`` are imported only when
their tracker is built, so ``import rlsys`` never pulls them in.

Resume: TensorBoard drops the events after the resumed step (``purge_step``). W&B and MLflow
cannot delete logged points, so a resumed stage opens a fresh tracker run and first replays the
stage's kept ``metrics.jsonl`` rows into it (with their original timestamps); the interrupted
tracker run is left as it was.

This module does not decide what is logged or when (``metrics``), and has no retry logic: a
tracker that cannot start fails the stage with a message naming the setting to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlsys.config import RecipeError

#: tracker names accepted by ``logging.trackers``
TRACKERS = ("tensorboard", "wandb", "mlflow")


@dataclass(frozen=True)
class TrackingSpec:
    """What every tracker of one stage needs (plain values; config stops at ``metrics``)."""

    run_dir: Path
    stage: str
    project: str  # W&B project / MLflow experiment
    run_name: str  # RECIPE/STAGE
    config: dict[str, Any] = field(default_factory=dict)  # the resolved recipe
    mlflow_tracking_uri: str | None = None


class Tracker(Protocol):
    """One experiment tracker of one stage."""

    def log(self, step: int, scalars: dict[str, float], timestamp: float) -> None:
        """Record the numbers of ``step`` (``timestamp``: seconds since the epoch)."""

    def finish(self, final_model: str | None) -> None:
        """Reference the stage's final model (if any) and close the run."""


class TrackerSetupError(RecipeError):
    """A tracker cannot start because of a setting the user controls (``field``: the recipe
    field to change); a ``RecipeError``, so the CLI prints it as a user error (exit 2)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("recipe", [(field, message)])


class TensorBoardTracker:
    """``RUN_DIR/tensorboard/STAGE`` event files; a resume purges events after ``start_step``."""

    def __init__(self, spec: TrackingSpec, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: readers drop every event at a step >= purge_step written before this one
        self._writer = SummaryWriter(str(spec.run_dir / "tensorboard" / spec.stage),
                                     purge_step=start_step + 1)

    def log(self, step: int, scalars: dict[str, float], timestamp: float) -> None:
        """One scalar per key at ``step``."""
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step, walltime=timestamp)

    def finish(self, final_model: str | None) -> None:
        """Write the final model path as a text summary and close the event file."""
        if final_model:
            self._writer.add_text("final_model", final_model)
        self._writer.close()


class WandbTracker:
    """A W&B run (``WANDB_MODE=offline`` works without a network; files under ``RUN_DIR/wandb``)."""

    def __init__(self, spec: TrackingSpec) -> None:
        import wandb
        from wandb.errors import UsageError

        self._wandb = wandb
        try:
            self._run = wandb.init(project=_safe_name(spec.project), name=spec.run_name,
                                   group=spec.project, job_type=spec.stage, config=spec.config,
                                   dir=str(spec.run_dir), reinit="create_new")
        except UsageError as err:
            raise TrackerSetupError("logging.trackers", f"wandb could not start ({err}); log in "
                                    "(WANDB_API_KEY) or set WANDB_MODE=offline") from err
        self._artifact = _safe_name(f"{spec.run_name}-model")

    def log(self, step: int, scalars: dict[str, float], timestamp: float) -> None:
        """``run.log`` at ``step`` (W&B keeps its own wall-clock; ``timestamp`` is unused)."""
        self._run.log(scalars, step=step)

    def finish(self, final_model: str | None) -> None:
        """Log the final model directory as a ``file://`` reference artifact, then finish."""
        if final_model:
            artifact = self._wandb.Artifact(self._artifact, type="model")
            artifact.add_reference(Path(final_model).resolve().as_uri(), name="model")
            self._run.log_artifact(artifact)
            self._run.summary["final_model"] = final_model
        self._run.finish()


class MlflowTracker:
    """An MLflow run through ``MlflowClient`` (no global active run is touched)."""

    def __init__(self, spec: TrackingSpec) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = spec.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            (spec.run_dir / "mlruns").resolve().as_uri()
        try:
            self._client = MlflowClient(tracking_uri=uri)
            experiment = self._client.get_experiment_by_name(spec.project)
        except MlflowException as err:
            raise TrackerSetupError(
                "logging.mlflow_tracking_uri", f"MLflow cannot use {uri!r}: {_first_line(err)} "
                "(a local file store also needs MLFLOW_ALLOW_FILE_STORE=true)") from err
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self._client.create_experiment(spec.project))
        run = self._client.create_run(experiment_id, run_name=spec.run_name,
                                      tags={"rlsys.stage": spec.stage})
        self.run_id = run.info.run_id
        params = [Param(_safe_key(k), str(v)[:500]) for k, v in flatten(spec.config).items()]
        for start in range(0, len(params), 100):  # the REST API takes 100 params per batch
            self._client.log_batch(self.run_id, params=params[start:start + 100])
        self._client.log_dict(self.run_id, spec.config, "recipe.yaml")

    def log(self, step: int, scalars: dict[str, float], timestamp: float) -> None:
        """One ``log_batch`` per step."""
        from mlflow.entities import Metric

        ms = int(timestamp * 1000)
        metrics = [Metric(_safe_key(k), v, ms, step) for k, v in scalars.items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def finish(self, final_model: str | None) -> None:
        """Tag + ``final_model.json`` artifact with the model path; mark the run finished."""
        if final_model:
            self._client.set_tag(self.run_id, "rlsys.final_model", final_model)
            self._client.log_dict(self.run_id, {"final_model": final_model}, "final_model.json")
        self._client.set_terminated(self.run_id, "FINISHED")


def make_trackers(names: Sequence[str], spec: TrackingSpec, *, start_step: int = 0,
                  history: Iterable[tuple[int, dict[str, float], float]] = ()) -> list[Tracker]:
    """Build the named trackers; W&B and MLflow first replay ``history`` (``(step, scalars,
    timestamp)`` of the stage's rows up to ``start_step``, see the module docstring)."""
    unknown = sorted(set(names) - set(TRACKERS))
    if unknown:
        raise TrackerSetupError("logging.trackers", f"unknown {unknown}; choose from {TRACKERS}")
    history = list(history)
    trackers: list[Tracker] = []
    try:
        for name in names:
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(spec, start_step))
                continue
            tracker = WandbTracker(spec) if name == "wandb" else MlflowTracker(spec)
            trackers.append(tracker)
            for step, scalars, timestamp in history:
                tracker.log(step, scalars, timestamp)
    except BaseException:
        for tracker in trackers:
            tracker.finish(None)
        raise
    return trackers


def scalars_of(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics row a tracker records (not ``step``/``time``, no None/bool)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "time")}


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "stages": [{"name": "sft", ...}]}`` -> ``{"a.b": 1, "stages.sft....}``;
    list items that are mappings with a ``name`` are keyed by it, others by their index."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list | tuple) and config and all(
            isinstance(x, dict) and "name" in x for x in config):
        items = ((x["name"], x) for x in config)
    elif isinstance(config, list | tuple) and any(isinstance(x, dict | list) for x in config):
        items = enumerate(config)
    else:
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _safe_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . space /``; anything else becomes ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)


def _safe_name(name: str) -> str:
    """W&B project / artifact names: letters, digits, ``- _ .`` only."""
    return re.sub(r"[^\w\-.]", "-", name)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
