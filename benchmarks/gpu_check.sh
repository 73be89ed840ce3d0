#!/usr/bin/env bash
# One stay on a GPU machine: build ssdfast for this GPU only, then check, test and measure its CUDA kernels.
#
#   bash benchmarks/gpu_check.sh OUTPUT_DIR                    # default OUTPUT_DIR: gpu-check-<date>-<time>
#   bash benchmarks/gpu_check.sh --only pytest,bench OUTPUT_DIR  # some steps again (env always runs)
#   bash benchmarks/gpu_check.sh --dry-run OUTPUT_DIR          # every step with CPU stand-ins (CI, < 1 minute)
#
# Steps, in this order, each under `timeout` (its cap below, cut to what is left of the whole budget; a
# step with under 20 s left is skipped), its output in OUTPUT_DIR/<step>.log; a failing step does not
# stop the others. The first five are the run's purpose and take about 5 minutes on an H100/H200
# (caps: 8 minutes at most); the sanitizers come last and are the first cut.
#   step       cap    what (the --dry-run stand-in)
#   env         20 s  nvidia-smi, Python / torch / toolchain versions, git revision (the same)
#   build      150 s  setup.py build_ext --inplace, FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST = this GPU's
#                     compute capability, MAX_JOBS = nproc (setup.py --name with the same settings: it
#                     builds the extension list, compiles nothing; then import ssdfast._C)
#   check       60 s  python -m ssdfast.check: every op on every device vs ssdfast.ops.reference
#                     (python -m ssdfast.check --quick --device cpu)
#   pytest     120 s  pytest -m cuda over tests/ops/test_cuda.py and every test file marked cuda, without
#                     pytest-xdist; junit XML in pytest-cuda.xml (the same: every test skips without a GPU)
#   bench      140 s  python -m benchmarks.bench_cuda --quick, table in cuda-<gpu>.md (--dry-run: every
#                     row once at tiny sizes on the CPU, table in cuda-dry-run.md)
#   memcheck    90 s  compute-sanitizer --tool memcheck over benchmarks/sanitize_ops.py, without torch's
#                     caching allocator (an out-of-bounds access cannot hide in a cached block)
#   racecheck   60 s  compute-sanitizer --tool racecheck over sanitize_ops.py --small
#   synccheck   45 s  the same with --tool synccheck
#   initcheck   45 s  the same with --tool initcheck
#                     (sanitizers in the dry run: the command is printed, and sanitize_ops.py runs every
#                     call on the CPU kernels)
# Then OUTPUT_DIR/summary.md: one row per step (ok, exit code, timed out or skipped; seconds; cap) and the
# total. The whole run keeps within GPU_CHECK_BUDGET seconds (default 510: 8.5 minutes, so that with the
# machine's start-up a rerun of a few steps still fits a 15-minute stay). Exit status 1 when a step that
# ran failed or timed out. Needs: a CUDA toolkit (nvcc, compute-sanitizer), torch with CUDA, pytest,
# ninja. No network. Everything written goes to OUTPUT_DIR, except the build (build/, ssdfast/_C*.so).
set -u -o pipefail

DRY=0
ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1; shift ;;
    --only) ONLY=",${2:?--only needs a comma-separated list of steps},"; shift 2 ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1 (--dry-run, --only STEPS, --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-510}
OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's ssdfast, built in place
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SUMMARY="$OUT/summary.md"
FAILED=0

# ----------------------------------------------------------------------------- the GPU
if ((DRY)); then
  CAP=9.0 GPU="dry run (CPU stand-ins)" GPU_SLUG=dry-run
else
  CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
  if [ -z "$CAP" ]; then
    CAP=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null)
  fi
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  GPU_SLUG=$(echo "${GPU:-gpu}" | sed 's/^NVIDIA //; s/[^A-Za-z0-9.]\+/-/g; s/-$//')
fi
SANITIZER=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" 2>/dev/null || true)
echo "GPU: ${GPU:-unknown} (compute capability ${CAP:-unknown}); output: $OUT; budget ${BUDGET} s"
{
  echo "# gpu_check$( ((DRY)) && echo ' --dry-run')"
  echo
  echo "GPU: ${GPU:-unknown} (compute capability ${CAP:-unknown}); revision $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown); budget ${BUDGET} s"
  echo
  echo "| step | result | seconds | cap s | log |"
  echo "|---|---|---:|---:|---|"
} > "$SUMMARY"

record() {  # step, result, seconds, cap
  printf '| %s | %s | %s | %s | %s.log |\n' "$1" "$2" "$3" "$4" "$1" >> "$SUMMARY"
  echo "== $1: $2 after $3 s"
}

# run_step NAME CAP_S WHAT COMMAND...: runs COMMAND under timeout (its cap, cut to the budget left) and
# logs it; WHAT names it in the log.
run_step() {
  local name=$1 limit=$2 what=$3
  shift 3
  if [ -n "$ONLY" ] && [ "$name" != env ] && [[ $ONLY != *",$name,"* ]]; then
    return
  fi
  local cap=$limit left=$((BUDGET - ($(date +%s) - START)))
  if ((left < 20)); then
    echo "== $name: skipped, ${left} s of the ${BUDGET} s budget left" | tee "$OUT/$name.log"
    record "$name" skipped 0 "$cap"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (timeout ${limit} s): $what" | tee "$OUT/$name.log"
  local t0 rc result
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) result=ok ;;
    124 | 137) result="timed out (${limit} s)"; FAILED=1 ;;
    *) result="exit $rc"; FAILED=1 ;;
  esac
  echo "== $name: $result" >> "$OUT/$name.log"
  record "$name" "$result" $(($(date +%s) - t0)) "$cap"
}

env_info() {
  if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  echo "--- python: $PYTHON"
  "$PYTHON" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "CUDA", torch.version.cuda, "devices", torch.cuda.device_count())' || return
  "$PYTHON" -m pip list 2> /dev/null | grep -i -E '^(torch|torchvision|pytest|pytest-xdist|ninja|setuptools|numpy|hypothesis) ' || true
  if command -v nvcc > /dev/null; then nvcc --version | tail -n 2; else echo "nvcc: not found"; fi
  echo "compute-sanitizer: ${SANITIZER:-not found}"
  echo "nproc: $(nproc)"
  git -C "$REPO" log -1 --format='%H %s' 2> /dev/null || true
  git -C "$REPO" status --short 2> /dev/null | head -n 20 || true
}

build() {  # this GPU's architecture only, in place (PYTHONPATH points at the checkout)
  export TORCH_CUDA_ARCH_LIST="$CAP" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  if ((DRY)); then  # the same settings, nothing compiled: setup.py's extension list, then the built one
    echo "would run: FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS $PYTHON setup.py build_ext --inplace"
    "$PYTHON" setup.py --name && "$PYTHON" -c 'import torch, ssdfast._C as C; print("ssdfast._C:", C.build_info())'
    return
  fi
  export FORCE_CUDA=1
  echo "FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  "$PYTHON" -c 'import torch.utils.cpp_extension as e; e.verify_ninja_availability()' 2> /dev/null \
    || echo "ninja not found: torch compiles one file at a time (several minutes; pip install ninja)"
  "$PYTHON" setup.py build_ext --inplace
}

check() {
  if ((DRY)); then
    "$PYTHON" -m ssdfast.check --quick --device cpu
  else
    "$PYTHON" -m ssdfast.check
  fi
}

cuda_tests() {  # tests/ops/test_cuda.py and every other test file that carries the cuda mark
  local files
  files=$({ echo tests/ops/test_cuda.py; grep -rl --include='test_*.py' 'pytest.mark.cuda' tests; } | sort -u)
  # shellcheck disable=SC2086  # one word per file
  "$PYTHON" -m pytest $files -m cuda -p no:xdist -p no:cacheprovider -v -rs --durations=15 \
    --junitxml="$OUT/pytest-cuda.xml"
}

bench() {
  if ((DRY)); then
    "$PYTHON" -m benchmarks.bench_cuda --dry-run --out "$OUT/cuda-$GPU_SLUG.md"
  else
    "$PYTHON" -m benchmarks.bench_cuda --quick --out "$OUT/cuda-$GPU_SLUG.md"
  fi
}

sanitize() {  # TOOL, then sanitize_ops.py arguments
  local tool=$1
  shift
  if ((DRY)); then
    echo "would run: PYTORCH_NO_CUDA_MEMORY_CACHING=1 ${SANITIZER:-compute-sanitizer} --tool $tool --error-exitcode 1 $PYTHON -m benchmarks.sanitize_ops $*"
    "$PYTHON" -m benchmarks.sanitize_ops --device cpu "$@"
    return
  fi
  if [ -z "$SANITIZER" ]; then
    echo "compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
    return 127
  fi
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 1 \
    "$PYTHON" -m benchmarks.sanitize_ops "$@"
}

# Each step runs in a child bash that gets the functions and settings it needs.
FUNCS="$(declare -f env_info build check cuda_tests bench sanitize); set -o pipefail"
export DRY CAP OUT GPU_SLUG PYTHON REPO SANITIZER
step() {  # NAME CAP_S FUNCTION ARGS...
  local name=$1 limit=$2
  shift 2
  run_step "$name" "$limit" "$*" bash -c "$FUNCS; $*"
}

# ----------------------------------------------------------------------------- the run's purpose
step env 20 env_info
step build 150 build
step check 60 check
step pytest 120 cuda_tests
step bench 140 bench
# ----------------------------------------------------------------------------- sanitizers, if time is left
step memcheck 90 sanitize memcheck
step racecheck 60 sanitize racecheck --small
step synccheck 45 sanitize synccheck --small
step initcheck 45 sanitize initcheck --small

TOTAL=$(($(date +%s) - START))
{
  echo
  echo "$TOTAL s in all (budget ${BUDGET} s). Benchmark table: cuda-$GPU_SLUG.md; CUDA tests: pytest-cuda.xml."
} >> "$SUMMARY"
echo
echo "gpu_check: $TOTAL s in all; results in $OUT"
cat "$SUMMARY"
exit $FAILED
