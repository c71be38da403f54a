"""Per-step metrics: ``metrics.jsonl``, TensorBoard events, a progress bar, PNG curves.

``MetricsLogger`` appends one JSON object per step (flushed, so a crash loses nothing already
logged); it does not aggregate across ranks (callers pass already-reduced numbers).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Writes metrics of one stage to ``run_dir`` and shows progress on stderr."""

    def __init__(self, run_dir: str | Path, stage: str, total_steps: int, *,
                 tensorboard: bool = True, progress: bool = True, start_step: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self.path = self.run_dir / "metrics.jsonl"
        self._file = self.path.open("a", buffering=1)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard" / stage))
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc=stage, unit="step",
                             dynamic_ncols=True, leave=True)
        self._t0 = time.monotonic()

    def log(self, step: int, metrics: dict[str, Any], *, show: tuple[str, ...] = ()) -> None:
        """Record ``metrics`` for ``step``; keys in ``show`` appear on the progress bar."""
        row = {"step": step, "stage": self.stage, "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key not in ("step", "time"):
                    self._writer.add_scalar(key, value, step)
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

    def close(self) -> None:
        """Flush and close everything."""
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        self._file.close()


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
