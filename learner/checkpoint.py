"""Atomic checkpoint directories, checkpoint discovery and per-rank RNG state.

A checkpoint is written into a private sibling ``<dir>.tmp-<token>``, every file and directory
in it is fsync'ed, and only then is it renamed to ``<dir>``; a crash at any point before the
rename leaves the previous checkpoint untouched and a stale ``*.tmp-*`` directory that
``latest_checkpoint`` ignores. Replacing an existing ``<dir>`` takes two renames (old one aside,
new one in) because POSIX ``rename`` cannot replace a non-empty directory.

Layout written by ``Learner.save_checkpoint``::

    <dir>/config.json, model.safetensors, tokenizer files   # Hugging Face, loadable as is
    <dir>/training_state/deepspeed/...                      # engine.save_checkpoint
    <dir>/training_state/rng_rank<r>.pt                     # python/numpy/torch RNG per rank
    <dir>/training_state/trainer_state.json                 # step, world size, extra_state

A weights-only save (``training_state=False``, a stage's final model) has no ``deepspeed/`` or
RNG files and ``"training_state": false`` in ``trainer_state.json``; it cannot be resumed from.
``trainer_state.json`` is written last, so its presence marks a complete checkpoint. Multi-node
runs need ``<dir>`` on a shared file system. This module knows nothing about DeepSpeed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAINING_STATE = "training_state"
TRAINER_STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def tmp_dir_for(final: str | os.PathLike[str], token: str) -> Path:
    """The private staging directory ``<final>.tmp-<token>`` next to ``final``."""
    final = Path(final)
    return final.parent / f"{final.name}.tmp-{token}"


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every regular file and directory under ``root`` (and ``root`` itself)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        _fsync_dir(dirpath)


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Durably publish the finished directory ``tmp`` as ``final`` (replacing it if present)."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    old = None
    if final.exists():
        old = final.parent / f"{final.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | os.PathLike[str], token: str) -> Iterator[Path]:
    """Single-writer helper: yield an empty staging directory, publish it on success, delete it
    (leaving ``final`` as it was) when the body raises."""
    tmp = tmp_dir_for(final, token)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        commit_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_dir(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Conventional location of the checkpoint taken after ``step``: ``<run_dir>/checkpoints/
    step_<step:08d>``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def is_complete(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a fully written checkpoint (its trainer state exists)."""
    return (Path(path) / TRAINING_STATE / TRAINER_STATE_FILE).is_file()


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The complete ``<run_dir>/checkpoints/step_*`` with the highest step, or None.

    Staging (``*.tmp-*``), set-aside (``*.old-*``) and incomplete directories are ignored."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and is_complete(child):
            step = int(match.group(1))
            if best is None or step > best[0]:
                best = (step, child)
    return None if best is None else best[1]


def prune_checkpoints(run_dir: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the ``keep`` highest-step complete checkpoints under
    ``<run_dir>/checkpoints``; returns what was removed. Incomplete ones are left alone (a save
    may be in flight); ``keep`` < 1 is refused."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    steps = sorted((int(m.group(1)), child) for child in root.iterdir()
                   if (m := _STEP_DIR.match(child.name)) and child.is_dir() and is_complete(child))
    removed = [path for _, path in steps[:-keep]]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def read_trainer_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``training_state/trainer_state.json``; a clear error when the checkpoint is not
    complete."""
    state_file = Path(path) / TRAINING_STATE / TRAINER_STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{state_file} not found: {path} is not a complete rlsys checkpoint"
        )
    return json.loads(state_file.read_text())


def write_trainer_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write the trainer state JSON; ``extra_state`` must be JSON-serialisable."""
    try:
        text = json.dumps(state, indent=2, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"extra_state must be JSON-serialisable: {err}") from None
    (Path(path) / TRAINING_STATE / TRAINER_STATE_FILE).write_text(text)


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy, torch CPU (and CUDA, when present) RNG states of this process."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_file(path: str | os.PathLike[str], rank: int) -> Path:
    """Where rank ``rank`` keeps its RNG state inside checkpoint ``path``."""
    return Path(path) / TRAINING_STATE / f"rng_rank{rank}.pt"
