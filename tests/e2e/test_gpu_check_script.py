"""The GPU check script's CPU dry run: the script calls the product's engine, learner,
experience and weight-sync APIs directly, so this keeps it in step with them between the rare
runs on a lent GPU (it does not exercise CUDA; bench/gpu_results.md has the GPU runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_core_dry_run_passes_every_check(tiny_model_dir, tmp_path):
    # the script builds its random model into $RLSYS_CACHE from the cached SmolLM2 tokenizer
    # (tiny_model_dir put it in the user's cache); a private cache keeps that one clean
    shutil.copytree(Path(tiny_model_dir).parent / "smollm2-tokenizer",
                    tmp_path / "smollm2-tokenizer")
    env = {**os.environ, "RLSYS_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_check_core.py", "--cpu-dry-run", "--hidden", "64",
         "--layers", "2", "--prompts", "2", "--max-new-tokens", "8", "--grpo-prompts", "2",
         "--steps", "2", "--lr", "1e-3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for line in ("PASS hf-generate", "PASS packed-forward", "PASS sync[initial]",
                 "PASS sync[step 0]", "PASS sync[step 1]", "[gpu_check] OK"):
        assert line in out, out[-3000:]
    assert "FAIL" not in out
