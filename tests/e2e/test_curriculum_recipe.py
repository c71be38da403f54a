"""End to end: ``configs/curriculum_cpt_tiny.yaml``, the seed's CPT curriculum as one stage.

The phase switches after the named step (metrics and the terminal say so), and a run resumed
from a checkpoint in the middle of the first phase draws the same data (same tokens per step)
and reaches the same losses as the uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import run_train, stage_rows

pytestmark = pytest.mark.slow
RECIPE = "configs/curriculum_cpt_tiny.yaml"


def _forget_after(run_dir: Path, step: int) -> None:
    """Make ``run_dir`` look like a run killed just after the checkpoint of ``step``: later
    checkpoints, the final model and the stage's 'finished' mark are gone."""
    stage = run_dir / "stages" / "cpt"
    shutil.rmtree(stage / "final")
    for ckpt in (stage / "ckpt" / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    state_path = run_dir / "run_state.json"
    state = json.loads(state_path.read_text())
    state["stages"] = {k: v for k, v in state.get("stages", {}).items() if k != "cpt"}
    state_path.write_text(json.dumps(state))


def test_curriculum_switches_at_the_named_step_and_resumes_mid_phase(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(RECIPE, run_dir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "[cpt] curriculum phase 2/2 from step 6" in result.stdout
    rows = stage_rows(run_dir, "cpt")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["curriculum/phase"] for r in rows] == [0] * 5 + [1] * 3

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed_dir)
    _forget_after(resumed_dir, 4)
    again = run_train(RECIPE, resumed_dir, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "resumed from" in again.stdout and "at step 4" in again.stdout
    resumed = stage_rows(resumed_dir, "cpt")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert [r["tokens"] for r in resumed] == [r["tokens"] for r in rows]
    assert [r["curriculum/phase"] for r in resumed] == [0] * 5 + [1] * 3
    for a, b in zip(resumed[4:], rows[4:], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
