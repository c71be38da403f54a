"""Per-step metrics: ``metrics.jsonl``, experiment trackers, a progress bar, PNG curves.

``MetricsLogger`` appends one JSON object per step (flushed, so a crash loses nothing already
logged) and forwards the numbers to the recipe's trackers (``rlsys.controller.trackers``:
TensorBoard, W&B, MLflow). A stage that starts at ``start_step`` (a resume) first drops its own
rows after that step, so a replayed step appears exactly once. It does not aggregate across
ranks (callers pass already-reduced numbers).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlsys.config import StageConfig
    from rlsys.controller.context import RunContext
    from rlsys.controller.trackers import TrackingSpec


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Writes metrics of one stage to ``run_dir`` and its trackers; shows progress on stdout.

    ``trackers`` names the experiment trackers (default: TensorBoard only, or none with
    ``tensorboard=False``); ``tracking`` carries what W&B/MLflow need (project, run name,
    the resolved recipe). A ``start_step`` > 0 means a resume: ``metrics.jsonl`` rows of this
    stage after it are dropped first (see ``truncate_stage``).
    """

    def __init__(self, run_dir: str | Path, stage: str, total_steps: int, *,
                 tensorboard: bool = True, progress: bool = True, start_step: int = 0,
                 trackers: Sequence[str] | None = None,
                 tracking: TrackingSpec | None = None) -> None:
        from rlsys.controller.trackers import TrackingSpec, make_trackers, scalars_of

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self.path = self.run_dir / "metrics.jsonl"
        truncate_stage(self.path, stage, start_step)
        if trackers is None:
            trackers = ("tensorboard",) if tensorboard else ()
        spec = tracking or TrackingSpec(self.run_dir, stage, project=stage, run_name=stage)
        history = ((r["step"], scalars_of(r), r.get("time", 0.0))
                   for r in read_metrics(self.path, stage))
        self._trackers = make_trackers(trackers, spec, start_step=start_step, history=history)
        self._scalars = scalars_of
        self._file = self.path.open("a", buffering=1)
        self._bar = None
        if progress:
            from tqdm import tqdm

            # stdout: a quiet run sends this process's stderr to RUN_DIR/logs/driver.log
            self._bar = tqdm(total=total_steps, initial=start_step, desc=stage, unit="step",
                             dynamic_ncols=True, leave=True, file=sys.stdout)
        self._t0 = time.monotonic()

    def log(self, step: int, metrics: dict[str, Any], *, show: tuple[str, ...] = ()) -> None:
        """Record ``metrics`` for ``step``; keys in ``show`` appear on the progress bar."""
        row = {"step": step, "stage": self.stage, "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        scalars = self._scalars(row)
        for tracker in self._trackers:
            tracker.log(step, scalars, row["time"])
        if self._bar is not None:
            post = {k.split("/")[-1] if k.count("/") else k: _fmt(row.get(k)) for k in show
                    if k in row}
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)

    def note(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self, final_model: str | None = None) -> None:
        """Flush and close everything; ``final_model`` (the stage's output directory) is handed
        to the trackers as a reference."""
        if self._bar is not None:
            self._bar.close()
        for tracker in self._trackers:
            tracker.finish(final_model)
        self._file.close()


def stage_logger(ctx: RunContext, stage: StageConfig, *, start_step: int = 0) -> MetricsLogger:
    """The ``MetricsLogger`` of ``stage`` as the recipe's ``logging`` section asks for."""
    from rlsys.controller.trackers import TrackingSpec

    recipe, lg = ctx.recipe, ctx.recipe.logging
    spec = TrackingSpec(Path(ctx.run_dir), stage.name, project=lg.project or recipe.name,
                        run_name=f"{recipe.name}/{stage.name}",
                        config=recipe.model_dump(mode="json"),
                        mlflow_tracking_uri=lg.mlflow_tracking_uri)
    return MetricsLogger(ctx.run_dir, stage.name, stage.steps, progress=lg.progress,
                         start_step=start_step, trackers=lg.trackers, tracking=spec)


def truncate_stage(path: str | Path, stage: str | None, after_step: int) -> int:
    """Drop the rows of ``stage`` with ``step > after_step`` (and torn lines) from the metrics
    file at ``path``; other stages' rows stay byte for byte. ``stage`` None: a file whose rows
    name no stage (a stage's own ``samples.jsonl``). Atomic (a temp file replaces the
    original), so a crash leaves either the old or the new file. Returns the rows dropped."""
    p = Path(path)
    if not p.exists():
        return 0
    kept, dropped = [], 0
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn last line: appending after it would spoil a row
            dropped += 1
            continue
        if row.get("stage") == stage and row.get("step", 0) > after_step:
            dropped += 1
            continue
        kept.append(line + "\n")
    if dropped:
        tmp = p.with_name(p.name + ".tmp")
        with tmp.open("w") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    return dropped


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def read_metrics(path: str | Path, stage: str | None = None) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` rows (optionally of one stage); a torn last line is ignored."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if stage is None or row.get("stage") == stage:
            rows.append(row)
    return rows


def plot_curves(run_dir: str | Path, stage: str, keys: list[str], out: str | Path) -> Path | None:
    """Write a PNG with one panel per metric key present for ``stage``; None if nothing to plot."""
    rows = read_metrics(Path(run_dir) / "metrics.jsonl", stage)
    present = [k for k in keys if any(isinstance(r.get(k), int | float) for r in rows)]
    if not present:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present), 3.2), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(f"{stage}: {key}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
