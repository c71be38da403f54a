"""Atomic checkpoint directories and checkpoint discovery (no DeepSpeed involved)."""

from __future__ import annotations

import json

import pytest

from learner.checkpoint import (
    TRAINER_STATE_FILE,
    TRAINING_STATE,
    atomic_dir,
    capture_rng_state,
    checkpoint_dir,
    latest_checkpoint,
    read_trainer_state,
    restore_rng_state,
    write_trainer_state,
)


def _complete(path, step):
    (path / TRAINING_STATE).mkdir(parents=True)
    write_trainer_state(path, {"step": step, "extra_state": {}})


def test_atomic_dir_publishes_and_replaces(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_dir(final, "a") as tmp:
        (tmp / "weights").write_text("v1")
        assert not final.exists()  # nothing visible before the commit
    assert (final / "weights").read_text() == "v1"
    with atomic_dir(final, "b") as tmp:
        (tmp / "weights").write_text("v2")
    assert (final / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no tmp/old leftovers


def test_atomic_dir_failure_keeps_previous(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_dir(final, "a") as tmp:
        (tmp / "weights").write_text("good")
    with pytest.raises(RuntimeError, match="disk full"), atomic_dir(final, "b") as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")
    assert (final / "weights").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_latest_checkpoint_skips_partial_and_staging(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    _complete(checkpoint_dir(tmp_path, 3), 3)
    _complete(checkpoint_dir(tmp_path, 10), 10)
    # a crash mid-save leaves a staging dir (even a "complete-looking" one) and partial dirs
    _complete(checkpoint_dir(tmp_path, 20).with_name("step_00000020.tmp-dead"), 20)
    checkpoint_dir(tmp_path, 30).mkdir()  # no trainer_state.json: incomplete
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 10)
    assert checkpoint_dir(tmp_path, 10).name == "step_00000010"


def test_trainer_state_roundtrip_and_errors(tmp_path):
    _complete(tmp_path / "c", 7)
    assert read_trainer_state(tmp_path / "c")["step"] == 7
    assert json.loads((tmp_path / "c" / TRAINING_STATE / TRAINER_STATE_FILE).read_text())
    with pytest.raises(FileNotFoundError, match="not a complete rlsys checkpoint"):
        read_trainer_state(tmp_path / "missing")
    with pytest.raises(TypeError, match="extra_state must be JSON-serialisable"):
        write_trainer_state(tmp_path / "c", {"extra_state": {"x": object()}})


def test_rng_state_roundtrip():
    import random

    import numpy as np
    import torch

    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
