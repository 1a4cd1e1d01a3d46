#!/usr/bin/env bash
# CUDA compile check for CI (no GPU needed): builds the fused_adam, fused_lion, fused_layer_norm and
# fused_moe_dispatch CUDA ops for sm_80 and sm_90 with the CUDA build of torch in a separate venv, then
# hipifies their sources and fails on errors or left-over CUDA runtime identifiers. Independent of the CPU
# test run.
# Env: ACCELOPS_CUDA_VENV (venv folder, reused when it already holds torch 2.14.1 with CUDA),
#      CUDA_HOME (default /usr/local/cuda-13.0), TORCH_CUDA_ARCH_LIST (default "8.0;9.0").
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

venv="${ACCELOPS_CUDA_VENV:-${TMPDIR:-/tmp}/accelops-cuda-venv}"
py="$venv/bin/python"
if ! "$py" -c "import sys, torch; sys.exit(0 if torch.__version__.startswith('2.14.1') and torch.version.cuda else 1)" \
        >/dev/null 2>&1; then
    echo "cuda_compile_check: creating $venv with torch==2.14.1 (CUDA build)"
    python3 -m venv "$venv"
    "$py" -m pip install -q torch==2.14.1 ninja numpy setuptools wheel py-cpuinfo
fi
"$py" -m pip install -q --no-deps --no-build-isolation -e .

export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda-13.0}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export DS_ACCELERATOR=cuda
export MAX_JOBS="${MAX_JOBS:-2}"
"$py" .ci/cuda_compile_check.py

echo "cuda_compile_check: passed in $(( $(date +%s) - start )) s"
