#!/usr/bin/env bash
# GPU check of the rollout/learner path. Usage: bash scripts/gpu_check.sh [gpu_check.py options]
#
# 1. scripts/gpu_check_core.py (needs torch with CUDA, transformers, deepspeed, pydantic; no vLLM,
#    no Ray): HF engine on the GPU, the DeepSpeed learner on the GPU, GRPO steps with weight sync
#    verified by log-probs, CUDA-IPC weight sync into another process.
# 2. scripts/gpu_check.py (needs official vLLM): vLLM GPU engine throughput, weight sync into vLLM
#    (host, CUDA IPC, NCCL with two GPUs), GRPO-like steps.
#
# Python: $PYTHON if it imports vllm with CUDA, else the venv $RLSYS_GPU_VENV (default .venv-gpu),
# created with `pip install vllm` (time-boxed) when it lacks vllm. Without vLLM (no wheel, no
# network) step 2 is reported as SKIPPED and the exit code is step 1's. Bounded by `timeout`
# (core 300 s, installation 300 s, vLLM check 450 s). Exits non-zero on any failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

has_vllm() { "$1" -c "import torch, vllm; assert torch.cuda.is_available()" >/dev/null 2>&1; }

nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "[gpu_check] FAIL: $PY sees no CUDA device (torch with CUDA and a GPU are needed)"
  exit 1
fi
timeout 300 "$PY" scripts/gpu_check_core.py
core=$?
echo "[gpu_check] core check exit code: $core"

if ! has_vllm "$PY"; then
  VENV="${RLSYS_GPU_VENV:-$ROOT/.venv-gpu}"
  if ! { [ -x "$VENV/bin/python" ] && has_vllm "$VENV/bin/python"; }; then
    echo "[gpu_check] vllm with CUDA not found; installing official vllm into $VENV (<= 300 s)"
    python3 -m venv "$VENV" \
      && timeout 300 "$VENV/bin/pip" install -q --retries 1 --timeout 20 vllm \
      || { echo "[gpu_check] SKIPPED vLLM check: could not install vllm (no network or no" \
                "wheel for this machine)"; exit "$core"; }
  fi
  PY="$VENV/bin/python"
fi
timeout 450 "$PY" scripts/gpu_check.py "$@"
vllm_rc=$?
echo "[gpu_check] vLLM check exit code: $vllm_rc"
[ "$core" -eq 0 ] && [ "$vllm_rc" -eq 0 ]
