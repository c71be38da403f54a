#!/usr/bin/env bash
# GPU check of the rollout path (vLLM throughput, weight sync learner -> vLLM verified by
# log-probs, a few GRPO-like steps). Usage: bash scripts/gpu_check.sh [gpu_check.py options]
#
# Python: $PYTHON if it imports vllm with CUDA, else the venv $RLSYS_GPU_VENV (default
# .venv-gpu), created with `pip install vllm` (time-boxed) when it lacks vllm. Total run is
# bounded by `timeout` (installation 300 s, check 450 s). Exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

has_vllm() { "$1" -c "import torch, vllm; assert torch.cuda.is_available()" >/dev/null 2>&1; }

PY="${PYTHON:-python3}"
if ! has_vllm "$PY"; then
  VENV="${RLSYS_GPU_VENV:-$ROOT/.venv-gpu}"
  if ! { [ -x "$VENV/bin/python" ] && has_vllm "$VENV/bin/python"; }; then
    echo "[gpu_check] vllm with CUDA not found; installing official vllm into $VENV (<= 300 s)"
    python3 -m venv "$VENV"
    if ! timeout 300 "$VENV/bin/pip" install -q vllm; then
      echo "[gpu_check] FAIL: could not install vllm (no network or no wheel for this machine)"
      exit 2
    fi
  fi
  PY="$VENV/bin/python"
fi

nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
exec timeout 450 "$PY" scripts/gpu_check.py "$@"
