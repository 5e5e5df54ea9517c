#!/usr/bin/env bash
# One command on a GPU machine, no network: build lama_fast from this checkout with its compiled
# extension (CPU and CUDA kernels; nvcc and a CUDA build of torch needed), check that the CUDA
# kernels are registered, run the GPU tests (tests/test_cuda_ext.py, tests/test_triton.py), then the
# kernel and end-to-end benchmarks (bench/gpu_bench.py: reference, Triton and CUDA extension),
# which write bench/results/gpu_<card>.md and .json (or under --out DIR), and last the targets
# (bench/gpu_targets.py: each target's bar, value per backend and verdict, with the rows and the
# test runs) in gpu_<card>_<date>.json and .md.
#
# The whole run keeps to a time budget (default 390 s: 6.5 minutes): the build and the tests get
# bounded times, the benchmark the rest; what it cannot start in time is recorded as skipped, and
# results are written row by row. About 1-2 minutes of build (MAX_JOBS = all cores, the visible
# GPU's architecture only), 1.5-2.5 of tests, the rest benchmarks.
#
#   bench/gpu_check.sh [options] [gpu_bench.py options, e.g. --out DIR --suites e2e]
#   --no-cuda-ext     no compiled extension (LAMA_FAST_SKIP_EXTENSION=1) and no CUDA-extension
#                     tests or rows: the Triton part only, as before the extension existed
#   --rebuild         rebuild the extension even if the built one is newer than csrc/ and setup.py
#   --no-tests        skip the pytest runs (the benchmark gets their time)
#   --quick           benchmark suites fft, kernel, profile only
#   --full            gpu_bench.py's own defaults: every suite (crossover too), every end-to-end
#                     system, torch.compile of the reference at 512^2, the Triton dft route, the
#                     94x125 kernel map (needs far more than the default budget: the rest is
#                     recorded as skipped)
#   --budget-s N      seconds for the whole script (default 390, or $GPU_CHECK_BUDGET_S)
#   PYTHON=...                  the interpreter (default python3)
#   MAX_JOBS=N                  parallel compile jobs (default: every core)
#   LAMA_FAST_GOLDEN=dir        golden vectors for the golden tests (default ../shared/golden)
#   CUDA_EXT_PYTEST_ARGS="..."  extra pytest arguments for tests/test_cuda_ext.py, after its default
#                               -k "not compile_with_nvcc" (a -k here replaces it: -k "" runs all)
#
# Default benchmark (what the targets need first): end to end at 512^2 and 1000x750 (eager fp32,
# the reference in a CUDA graph, both backends in CUDA graphs, fp32 and bf16), one bf16 forward of
# each backend profiled at 1000x750, the spectral op at the 128^2 and 256^2 maps (the reference
# module and the ops in bf16: fft route; the dft-tc route at 128^2; no torch.compile); then the
# opt-in variants in bf16 at 1000x750 (fused
# layout, dft-tc route, compiled stages last) and 2048^2 end to end, as time allows.
# Tests: all of tests/test_cuda_ext.py but its nvcc compile tests (the build has just compiled the
# same sources; its CPU emulation tests take some 20 s), all of tests/test_triton.py; each with a
# time limit (90 s, 120 s), leaving the benchmark at least 170 s; per-test results in
# DIR/pytest_test_*.txt.
# Exit status: 0 when everything passed; 1 when the build, the CUDA kernels, a test run or the
# benchmark failed (the later phases still run after a failed test run); 2 for a bad option.
# The full log is written to DIR/gpu_check.log and the build's to DIR/gpu_build.log, where DIR is
# --out (default bench/results).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-390}
CUDA_EXT=1
REBUILD=0
RUN_TESTS=1
MODE=default
OUT_DIR=bench/results
PASS_ARGS=()

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die_usage() { echo "gpu_check: $1" >&2; exit 2; }
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }

args=("$@")
i=0
while [ $i -lt ${#args[@]} ]; do
    arg=${args[$i]}
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --no-cuda-ext) CUDA_EXT=0 ;;
        --rebuild) REBUILD=1 ;;
        --no-tests) RUN_TESTS=0 ;;
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --budget-s=*) BUDGET_S=${arg#*=} ;;
        --budget-s)
            i=$((i + 1)); [ $i -lt ${#args[@]} ] || die_usage "--budget-s needs a value"
            BUDGET_S=${args[$i]} ;;
        --out=*) OUT_DIR=${arg#*=}; PASS_ARGS+=("$arg") ;;
        --out)
            i=$((i + 1)); [ $i -lt ${#args[@]} ] || die_usage "--out needs a folder"
            OUT_DIR=${args[$i]}; PASS_ARGS+=(--out "$OUT_DIR") ;;
        *) PASS_ARGS+=("$arg") ;;
    esac
    i=$((i + 1))
done
is_int "$BUDGET_S" || die_usage "--budget-s must be a whole number of seconds, got '$BUDGET_S'"

mkdir -p "$OUT_DIR" || die_usage "cannot create $OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
BUILD_LOG=$OUT_DIR/gpu_build.log
exec > >(tee "$LOG") 2>&1
TEE_PID=$!

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - $(date +%s) + START )); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
# `timeout` when it exists (coreutils); the command as is otherwise.
bounded() {
    local seconds=$1; shift
    if command -v timeout >/dev/null 2>&1; then timeout -k 15 "$seconds" "$@"; else "$@"; fi
}
SUMMARY=()
FAILED=0
note() { SUMMARY+=("$1"); }
finish() {
    echo
    echo "== summary ($(elapsed) s of a $BUDGET_S s budget)"
    for line in "${SUMMARY[@]}"; do echo "  $line"; done
    echo "  log: $LOG"
    # Let tee write the last lines before the script's exit ends the command.
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null
    exit "$1"
}
fail_now() {
    echo "gpu_check: $1" >&2
    note "FAILED: $1"
    finish 1
}

case "$MODE" in
    default) BENCH_ARGS=(--suites e2e,kernel,e2e_variants,e2e_large --e2e-sizes 512x512,1000x750
                         --e2e-variant-sizes 1000x750 --e2e-large-sizes 2048x2048
                         --e2e-systems core --e2e-profile 1000x750 --kernel-maps 128x128,256x256 --kernel-systems core
                         --triton-routes fft,dft-tc --no-compile --compile-sizes none) ;;
    quick) BENCH_ARGS=(--suites fft,kernel,profile --kernel-maps 64x64,128x128,256x256
                       --triton-routes fft --no-compile) ;;
    full) BENCH_ARGS=() ;;
esac
[ "$CUDA_EXT" = 1 ] || BENCH_ARGS+=(--no-cuda-ext)
# The caller's own gpu_bench.py options come last: argparse keeps the last value given.
BENCH_ARGS+=(${PASS_ARGS[@]+"${PASS_ARGS[@]}"})

echo "== machine ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), budget $BUDGET_S s, mode $MODE, CUDA extension $([ "$CUDA_EXT" = 1 ] && echo on || echo off))"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
echo "cores: $(nproc 2>/dev/null || echo '?') | nvcc: $(command -v nvcc || echo 'not on PATH') | CUDA_HOME: ${CUDA_HOME:-unset}"
if command -v nvcc >/dev/null 2>&1; then nvcc --version | tail -n 2; elif [ -x /usr/local/cuda/bin/nvcc ]; then
    /usr/local/cuda/bin/nvcc --version | tail -n 2; fi
TRITON_OK=1
"$PY" - <<'PY'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
print("device:", torch.cuda.get_device_name(0), "| compute capability", ".".join(map(str, torch.cuda.get_device_capability(0))))
try:
    import triton
    print("triton", triton.__version__)
except Exception as error:
    print(f"gpu_check: triton does not import ({error}); install the triton that matches this torch", file=sys.stderr)
    sys.exit(3)
PY
rc=$?
if [ $rc = 3 ]; then
    TRITON_OK=0
    [ "$CUDA_EXT" = 1 ] || fail_now "triton does not import and --no-cuda-ext leaves nothing to run"
    note "WARNING: triton does not import: the Triton tests and rows are skipped"
elif [ $rc != 0 ]; then
    fail_now "no usable CUDA device or torch (see above)"
fi

# --- install ---------------------------------------------------------------------------------------
if [ "$CUDA_EXT" = 0 ]; then
    echo "== install (editable, no dependencies, no compiled extension: --no-cuda-ext)"
    if ! "$PY" -c "import lama_fast.kernels.spectral" 2>/dev/null; then
        LAMA_FAST_SKIP_EXTENSION=1 "$PY" -m pip install --no-deps --no-build-isolation --no-index -q -e . \
            || fail_now "pip install -e . failed"
    fi
    note "install: without the compiled extension (--no-cuda-ext)"
else
    echo "== build (editable install with the compiled extension, CUDA kernels included)"
    # Skip the build when the installed extension has the CUDA kernels and is newer than its sources.
    fresh=1
    if [ "$REBUILD" = 1 ]; then
        fresh=0; echo "rebuilding: --rebuild"
    elif ! "$PY" - <<'PY'
import glob, os, sys, sysconfig
root = os.getcwd()
try:
    import lama_fast, lama_fast.kernels  # noqa: F401  (lama_fast.kernels exists only when installed)
    from lama_fast.backends.cuda import cuda_kernels_reasons
except Exception as error:
    sys.exit(f"building: lama_fast is not installed from this checkout ({type(error).__name__}: {error})")
if os.path.dirname(os.path.abspath(lama_fast.__file__)) != os.path.join(root, "lama_fast"):
    sys.exit(f"building: lama_fast imports from {lama_fast.__file__}, not from this checkout")
why = "; ".join(cuda_kernels_reasons())
if why:
    sys.exit(f"building: the CUDA kernels are not available ({why})")
built = glob.glob(os.path.join(root, "lama_fast", "_C" + sysconfig.get_config_var("EXT_SUFFIX")))
sources = [p for p in glob.glob(os.path.join(root, "csrc", "**", "*"), recursive=True) if os.path.isfile(p)]
if not built or os.path.getmtime(built[0]) < max(os.path.getmtime(p) for p in sources + [os.path.join(root, "setup.py")]):
    sys.exit("building: csrc/ or setup.py is newer than the built extension")
print("the built extension is up to date (has the CUDA kernels, newer than csrc/ and setup.py): not rebuilding")
PY
    then
        fresh=0
    fi
    if [ "$fresh" = 0 ]; then
        jobs=${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}
        build_limit=$(min 300 $(( $(left) - 60 )))
        [ "$build_limit" -gt 60 ] || fail_now "no time left in the budget for the build"
        echo "MAX_JOBS=$jobs, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-chosen by torch from the visible GPU}, limit ${build_limit} s, log $BUILD_LOG"
        build_start=$(date +%s)
        MAX_JOBS=$jobs bounded "$build_limit" "$PY" -m pip install --no-deps --no-build-isolation --no-index -v -e . \
            > "$BUILD_LOG" 2>&1
        rc=$?
        build_s=$(( $(date +%s) - build_start ))
        grep -E "lama_fast (cpu|cuda)_extension:" "$BUILD_LOG" | tail -n 2
        if [ $rc != 0 ]; then
            echo "---- last lines of $BUILD_LOG (errors first)"
            grep -n -E "error|Error|FAILED" "$BUILD_LOG" | grep -v -E "Werror|-Wno-error|error_" | head -n 20
            tail -n 40 "$BUILD_LOG"
            { [ $rc = 124 ] || [ $rc = 137 ]; } && fail_now "the build ran past ${build_limit} s (killed); see $BUILD_LOG"
            fail_now "pip install -e . failed after ${build_s} s (exit $rc); see $BUILD_LOG. bench/gpu_check.sh --no-cuda-ext runs the Triton part alone"
        fi
        echo "built in ${build_s} s"
        note "build: ${build_s} s (MAX_JOBS=$jobs)"
    else
        note "build: up to date, not rebuilt"
    fi
fi

echo "== lama_fast/_build_info.json"
cat lama_fast/_build_info.json 2>/dev/null || echo "(missing)"
echo "== lama-fast info"
"$PY" -c "import sys; from lama_fast.cli import main; sys.exit(main(['info']))" > "$OUT_DIR/lama_fast_info.txt" 2>&1
# The component table's lines that matter here, then the backends on the GPU.
sed '/^$/q' "$OUT_DIR/lama_fast_info.txt" | grep -E "^\| (lama_fast|torch|triton|cuda|extension lama_fast._C|CUDA kernels|triton kernels) " \
    || cat "$OUT_DIR/lama_fast_info.txt"
grep -E "^\| [a-z]+ +\| cuda +\|" "$OUT_DIR/lama_fast_info.txt" | sort -u || true
if [ "$CUDA_EXT" = 1 ]; then
    why=$("$PY" - <<'PY'
import json
from lama_fast._build import build_info
from lama_fast.backends.cuda import cuda_kernels_reasons
why = "; ".join(cuda_kernels_reasons())
if why:
    info = build_info()
    print(f"{why} | build info: cuda_extension = {info['cuda_extension']!r}; cpu_extension = {info['cpu_extension']!r}")
PY
    ) || why="lama_fast.backends.cuda does not import (see above)"
    if [ -n "$why" ]; then
        fail_now "the CUDA kernels are not available: $why. Fix the build (log: $BUILD_LOG) or run bench/gpu_check.sh --no-cuda-ext for the Triton part alone"
    fi
    echo "CUDA kernels: registered"
    note "CUDA kernels: registered ($(grep -o '"cuda_extension": "[^"]*"' lama_fast/_build_info.json 2>/dev/null | cut -d'"' -f4))"
fi

# --- tests -----------------------------------------------------------------------------------------
# A test run ends within its limit; the benchmark keeps at least BENCH_RESERVE_S of the budget.
BENCH_RESERVE_S=170
run_tests() {  # name, cap in seconds, pytest arguments...
    local name=$1 cap=$2; shift 2
    local limit
    limit=$(min "$cap" $(( $(left) - BENCH_RESERVE_S )))
    if [ "$limit" -lt 30 ]; then
        echo "skipped: ${limit} s left for it"; note "tests $name: SKIPPED (no time left in the budget)"; FAILED=1; return
    fi
    local out="$OUT_DIR/pytest_${name%.py}.txt" t0 rc last
    t0=$(date +%s)
    # Every test's line goes to the file; the console leaves out the passing ones.
    bounded "$limit" "$PY" -m pytest -v -p no:cacheprovider -o addopts="" -rfE --tb=short --durations=5 "$@" 2>&1 \
        | tee "$out" | grep -v -E " PASSED( |$)"
    rc=${PIPESTATUS[0]}
    last=$(grep -E "(passed|failed|error|skipped|no tests ran)" "$out" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
    if [ "$rc" = 0 ]; then
        note "tests $name: ok: $last"
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        note "tests $name: FAILED: killed at the ${limit} s limit after: $last"; FAILED=1
    elif [ "$rc" = 5 ]; then
        note "tests $name: no tests collected ($last)"
    else
        note "tests $name: FAILED (pytest exit $rc): $last"; FAILED=1
    fi
    echo "($name: $(( $(date +%s) - t0 )) s)"
}
if [ "$RUN_TESTS" = 1 ]; then
    if [ "$CUDA_EXT" = 1 ]; then
        echo "== GPU tests: tests/test_cuda_ext.py"
        if [ -f tests/test_cuda_ext.py ]; then
            # Not its nvcc compile tests: the build above has just compiled every .cu file with nvcc.
            eval "extra=(${CUDA_EXT_PYTEST_ARGS:-})" || die_usage "cannot parse CUDA_EXT_PYTEST_ARGS"
            TRITON_INTERPRET=0 run_tests test_cuda_ext.py 90 tests/test_cuda_ext.py -k "not compile_with_nvcc" \
                ${extra[@]+"${extra[@]}"}
        else
            echo "tests/test_cuda_ext.py is missing"; note "tests test_cuda_ext.py: MISSING"; FAILED=1
        fi
    fi
    echo "== GPU tests: tests/test_triton.py (compiled kernels, one fixed tile per kernel)"
    if [ "$TRITON_OK" = 1 ]; then
        # One fixed tile per kernel: autotuning every tiny test shape would take minutes.
        TRITON_INTERPRET=0 LAMA_FAST_TRITON_AUTOTUNE=0 run_tests test_triton.py 120 tests/test_triton.py
    else
        note "tests test_triton.py: skipped (triton does not import)"
    fi
else
    note "tests: skipped (--no-tests)"
fi

# --- benchmarks ------------------------------------------------------------------------------------
echo "== benchmarks (bench/gpu_bench.py ${BENCH_ARGS[*]})"
bench_left=$(left)
if [ "$bench_left" -lt 60 ]; then
    note "benchmarks: SKIPPED (${bench_left} s left in the budget)"
    finish 1
fi
# gpu_bench.py starts no new row after its own budget; the hard limit (SIGINT, then KILL) is a backstop.
# It writes its .md and .json after every row, so a stopped run keeps what it measured.
bounded_bench() {
    if command -v timeout >/dev/null 2>&1; then timeout -s INT -k 15 "$1" "${@:2}"; else "${@:2}"; fi
}
bounded_bench $(( bench_left - 5 )) "$PY" bench/gpu_bench.py --budget-s $(( bench_left - 45 )) "${BENCH_ARGS[@]}"
rc=$?
results=$(ls -t "$OUT_DIR"/gpu_*.md 2>/dev/null | grep -v -E "gpu_check|gpu_build" | head -n 1)
if [ $rc = 0 ]; then
    note "benchmarks: ok, ${results:-no results file}"
    skipped=$(grep -c -E "skipped: the time budget" "${results:-/dev/null}" 2>/dev/null || true)
    [ "${skipped:-0}" = 0 ] || note "benchmarks: ${skipped} lines of the report were skipped for lack of time"
else
    note "benchmarks: FAILED or stopped (exit $rc); partial results: ${results:-none}"; FAILED=1
fi
# --- targets (seconds: outside the budget) -------------------------------------------------------
echo "== targets (bench/gpu_targets.py)"
if "$PY" bench/gpu_targets.py --out "$OUT_DIR"; then
    note "targets: $(ls -t "$OUT_DIR"/gpu_*_20*.json 2>/dev/null | head -n 1)"
else
    note "targets: FAILED (bench/gpu_targets.py)"; FAILED=1
fi
finish $FAILED
