#!/usr/bin/env bash
# Every GPU check of this repo in one go, for a short lent GPU session (about 5-8 minutes on an H100):
# install, build the CUDA ops, ds_report --verify, the GPU tests, compute-sanitizer's racecheck and
# synccheck over a few layer norm tests (where compute-sanitizer is installed), then the GPU benchmarks
# (add + layer norm in bf16, fp16 and fp32; FusedAdam). When .baseline/csrc exists (another version's
# sources, e.g. `mkdir -p .baseline && git archive a300e3b csrc | tar -x -C .baseline`), the layer
# norm benchmark also builds and times that version in the same run. Each step's output goes to ${OUT:-gpu_logs}/<step>.log and a
# summary line per step to summary.txt; a failing step does not stop the later ones.
# Usage, from the repo root on the GPU machine: bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_logs}"
mkdir -p "$out"
py="${PYTHON:-python3}"
: > "$out/summary.txt"

step() {   # step NAME TIMEOUT_S COMMAND...
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS rc
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc in $(( SECONDS - t0 )) s" | tee -a "$out/summary.txt"
}

export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$py" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
export MAX_JOBS="${MAX_JOBS:-16}"
step device 30 bash -c "nvidia-smi; $py -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda)'"
step install 120 "$py" -m pip install -q --no-deps --no-build-isolation -e .
step build 300 "$py" -c "
from accelops.accelerator import get_accelerator
for name in ('FusedAdamBuilder', 'FusedLayerNormBuilder', 'FusedMoEDispatchBuilder'):
    get_accelerator().create_op_builder(name).load(verbose=False)
    print(name, 'built')"
step ds_report 180 "$py" -m accelops.report --verify
step gpu_tests 420 "$py" -m pytest -q -m gpu tests/ops tests/comm -k "not last_line" -p no:cacheprovider
step last_line_checks 120 "$py" -m pytest -q -m gpu tests/ops -k last_line -p no:cacheprovider
sanitizer="$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" 2>/dev/null)"
if [ -n "$sanitizer" ]; then
    # Shared-memory races and barrier misuse, which the CPU emulation in tests/cuda_emu cannot show.
    for tool in racecheck synccheck; do
        step "sanitizer_$tool" 240 "$sanitizer" --tool "$tool" --error-exitcode 9 "$py" -m pytest -q -m gpu \
            tests/ops/test_cuda_layer_norm.py -k "forward_and_backward and (1024 or 16392) and True" -p no:cacheprovider
    done
else
    echo "sanitizer: compute-sanitizer not found, skipped" | tee -a "$out/summary.txt"
fi
baseline=()
[ -d .baseline/csrc ] && baseline=(--baseline .baseline)
for dtype in bf16 fp16 fp32; do
    step "bench_layer_norm_$dtype" 240 "$py" benchmarks/bench_gpu_layer_norm.py --dtype "$dtype" "${baseline[@]}"
done
step bench_fused_adam 180 "$py" benchmarks/bench_gpu_fused_adam.py
cat "$out/summary.txt"
