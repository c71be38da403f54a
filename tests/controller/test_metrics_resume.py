"""A resumed stage logs every step exactly once: ``truncate_stage`` drops the replayed rows of
``metrics.jsonl`` (only that stage's, atomically, torn lines too), and the TensorBoard writer of
the resumed stage tells readers to purge the events after the checkpoint step."""

from __future__ import annotations

import json
from pathlib import Path

from rlsys.controller.metrics import MetricsLogger, read_metrics, truncate_stage


def _write_rows(path: Path, rows: list[dict], torn: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)


def test_truncate_stage_drops_later_rows_of_that_stage_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sft = [{"step": s, "stage": "sft", "loss": 1.0 / s} for s in range(1, 7)]
    grpo = [{"step": s, "stage": "grpo", "loss": 2.0 * s} for s in range(1, 4)]
    _write_rows(path, sft[:3] + grpo + sft[3:], torn='{"step": 7, "stage": "sf')
    other_lines = [line for line in path.read_text().splitlines() if '"grpo"' in line]

    assert truncate_stage(path, "sft", 4) == 3  # steps 5, 6 and the torn line

    assert [r["step"] for r in read_metrics(path, "sft")] == [1, 2, 3, 4]
    assert [line for line in path.read_text().splitlines() if '"grpo"' in line] == other_lines
    assert path.read_text().endswith("\n")
    assert not (tmp_path / "metrics.jsonl.tmp").exists()
    before = path.stat().st_mtime_ns
    assert truncate_stage(path, "sft", 4) == 0  # nothing to drop: the file is not rewritten
    assert path.stat().st_mtime_ns == before
    assert truncate_stage(tmp_path / "missing.jsonl", "sft", 0) == 0


def test_truncate_without_a_stage_drops_later_steps_of_a_samples_file(tmp_path):
    """A stage's ``samples.jsonl`` (rows name no stage): a resume at step 2 drops what the
    killed run logged for step 3, so the replayed step 3 is there once."""
    path = tmp_path / "samples.jsonl"
    _write_rows(path, [{"step": s, "prompt": f"p{s}-{i}"} for s in (1, 2, 3) for i in (0, 1)])
    assert truncate_stage(path, None, 2) == 2
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 1, 2, 2]


def test_truncate_stage_at_zero_drops_the_whole_stage(tmp_path):
    """A stage restarted without a checkpoint replays from step 1: its old rows all go."""
    path = tmp_path / "metrics.jsonl"
    _write_rows(path, [{"step": 1, "stage": "sft"}, {"step": 1, "stage": "dpo"},
                       {"step": 2, "stage": "sft"}])
    assert truncate_stage(path, "sft", 0) == 2
    assert read_metrics(path) == [{"step": 1, "stage": "dpo"}]


def _tensorboard_events(run_dir: Path, stage: str) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = sorted((run_dir / "tensorboard" / stage).glob("events.out.tfevents.*"))
    return [event for f in files for event in EventFileLoader(str(f)).Load()]


def test_resumed_logger_keeps_every_step_once(tmp_path):
    """Steps 1..5 logged, checkpoint at 3, resume: 4..6 again with new values. metrics.jsonl
    and TensorBoard (as its reader resolves the purge) both show steps 1..6 once, new values
    after step 3."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.proto.event_pb2 import SessionLog

    first = MetricsLogger(tmp_path, "sft", 6, progress=False)
    for step in range(1, 6):
        first.log(step, {"loss": float(step)})
    first.close()  # the driver dies here; the last checkpoint was at step 3
    resumed = MetricsLogger(tmp_path, "sft", 6, progress=False, start_step=3)
    for step in range(4, 7):
        resumed.log(step, {"loss": 10.0 * step})
    resumed.close()

    rows = read_metrics(tmp_path / "metrics.jsonl", "sft")
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0),
                                                      (5, 50.0), (6, 60.0)]
    starts = [e.step for e in _tensorboard_events(tmp_path, "sft")
              if e.HasField("session_log") and e.session_log.status == SessionLog.START]
    assert starts[-1] == 4  # readers drop the earlier events at steps >= 4

    acc = EventAccumulator(str(tmp_path / "tensorboard" / "sft"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]


def test_logger_without_trackers_writes_no_events(tmp_path):
    logger = MetricsLogger(tmp_path, "sft", 2, progress=False, trackers=[])
    logger.log(1, {"loss": 0.5, "flag": True, "missing": float("nan")})
    logger.close(final_model=str(tmp_path / "final"))
    assert not (tmp_path / "tensorboard").exists()
    (row,) = read_metrics(tmp_path / "metrics.jsonl")
    assert row["loss"] == 0.5 and row["missing"] is None
