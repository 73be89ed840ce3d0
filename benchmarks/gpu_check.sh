#!/usr/bin/env bash
# One stay on a GPU machine: build ssdfast for this GPU only, then check and measure its CUDA kernels.
#
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]        # default: gpu-check-<date>-<time>
#
# Steps (each under `timeout`, its output tee'd to OUTPUT_DIR/<step>.log; a failing step does not stop
# the others):
#   env         nvidia-smi, Python / torch versions, git revision
#   build       pip install --no-index --no-build-isolation --no-deps -e . with TORCH_CUDA_ARCH_LIST set
#               to this GPU's compute capability (falls back to setup.py build_ext --inplace)
#   check       python -m ssdfast.check (every op on every device vs ssdfast.ops.reference)
#   pytest      python -m pytest tests/ops/test_cuda.py (junit XML in pytest-cuda.xml)
#   memcheck    compute-sanitizer --tool memcheck over benchmarks/sanitize_ops.py (no caching allocator,
#               so an out-of-bounds access cannot hide inside a cached block)
#   racecheck   compute-sanitizer --tool racecheck over sanitize_ops.py --small
#   bench       python -m benchmarks.bench_cuda --quick --out OUTPUT_DIR/cuda-<gpu>.md
#   synccheck, initcheck   the same script --small, if time is left
# Then OUTPUT_DIR/summary.md: step, exit code, seconds. The whole run keeps within GPU_CHECK_BUDGET
# seconds (default 570, under 10 minutes on an H100/H200); steps that no longer fit are skipped.
# Needs: a CUDA toolkit (nvcc, compute-sanitizer), torch with CUDA, pytest, ninja. No network.
set -u -o pipefail

START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-570}
OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's ssdfast, whatever pip did
export PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.md"
printf '| step | exit code | seconds | log |\n|---|---:|---:|---|\n' > "$SUMMARY"

record() {  # step, exit code (or a word), seconds
  printf '| %s | %s | %s | %s.log |\n' "$1" "$2" "$3" "$1" >> "$SUMMARY"
  echo "== $1: exit $2 after $3 s"
}

# run_step NAME TIMEOUT_S COMMAND...: runs COMMAND under timeout (cut to the budget left), logs it.
run_step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if ((left < 30)); then
    echo "== $name: skipped, ${left} s of the ${BUDGET} s budget left" | tee "$OUT/$name.log"
    record "$name" skipped 0
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (timeout ${limit} s): $*" | tee "$OUT/$name.log"
  local t0
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  ((rc == 124)) && echo "== $name: timed out after ${limit} s" | tee -a "$OUT/$name.log"
  record "$name" "$rc" $(($(date +%s) - t0))
}

# ----------------------------------------------------------------------------- the GPU
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
if [ -z "$CAP" ]; then
  CAP=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null)
fi
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
GPU_SLUG=$(echo "${GPU:-gpu}" | sed 's/^NVIDIA //; s/[^A-Za-z0-9.]\+/-/g; s/-$//')
SANITIZER=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" 2>/dev/null || true)
echo "GPU: ${GPU:-unknown} (compute capability ${CAP:-unknown}); output: $OUT; budget ${BUDGET} s"

env_info() {
  nvidia-smi
  echo "--- python: $PYTHON"
  "$PYTHON" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "CUDA", torch.version.cuda, "devices", torch.cuda.device_count())'
  "$PYTHON" -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|pytest|ninja|setuptools|numpy|hypothesis) ' || true
  command -v nvcc && nvcc --version | tail -n 2
  echo "compute-sanitizer: ${SANITIZER:-not found}"
  echo "nproc: $(nproc)"
  git -C "$REPO" log -1 --format='%H %s' 2>/dev/null || true
  git -C "$REPO" status --short 2>/dev/null | head -n 20 || true
}
run_step env 60 bash -c "$(declare -f env_info); PYTHON='$PYTHON' SANITIZER='$SANITIZER' REPO='$REPO' env_info"

# ----------------------------------------------------------------------------- build (this GPU's arch only)
build() {
  export TORCH_CUDA_ARCH_LIST="$CAP" FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  "$PYTHON" -m pip install --no-index --no-build-isolation --no-deps -v -e . && return 0
  echo "pip install failed: building in place instead"
  "$PYTHON" setup.py build_ext --inplace
}
run_step build 300 bash -c "$(declare -f build); CAP='$CAP' PYTHON='$PYTHON' build"

# ----------------------------------------------------------------------------- correctness
run_step check 120 "$PYTHON" -m ssdfast.check
run_step pytest 300 "$PYTHON" -m pytest tests/ops/test_cuda.py -q -rs -p no:cacheprovider --junitxml="$OUT/pytest-cuda.xml"

sanitize() {  # TOOL, then sanitize_ops.py arguments
  local tool=$1
  shift
  if [ -z "$SANITIZER" ]; then
    echo "compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
    return 127
  fi
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 1 \
    "$PYTHON" -m benchmarks.sanitize_ops "$@"
}
run_step memcheck 150 bash -c "$(declare -f sanitize); SANITIZER='$SANITIZER' PYTHON='$PYTHON' sanitize memcheck"
run_step racecheck 150 bash -c "$(declare -f sanitize); SANITIZER='$SANITIZER' PYTHON='$PYTHON' sanitize racecheck --small"

# ----------------------------------------------------------------------------- speed
run_step bench 240 "$PYTHON" -m benchmarks.bench_cuda --quick --out "$OUT/cuda-$GPU_SLUG.md"

# ----------------------------------------------------------------------------- more sanitizers, if time is left
run_step synccheck 90 bash -c "$(declare -f sanitize); SANITIZER='$SANITIZER' PYTHON='$PYTHON' sanitize synccheck --small"
run_step initcheck 90 bash -c "$(declare -f sanitize); SANITIZER='$SANITIZER' PYTHON='$PYTHON' sanitize initcheck --small"

echo
echo "gpu_check: $(($(date +%s) - START)) s in all; results in $OUT"
{
  echo
  echo "GPU: ${GPU:-unknown} (sm_${CAP/./}), $(($(date +%s) - START)) s in all. Benchmark table: cuda-$GPU_SLUG.md"
} >> "$SUMMARY"
cat "$SUMMARY"
