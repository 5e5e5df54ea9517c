#!/usr/bin/env bash
# One command on a GPU machine: install lama_fast from this checkout (no network, no compiled
# CPU extension: the triton backend needs only torch with CUDA and triton), run the GPU tests,
# then the kernel and end-to-end benchmarks (bench/gpu_bench.py), which write
# bench/results/gpu_<card>.md and .json.  About 5-8 minutes on an H100.
#
#   bench/gpu_check.sh [--quick] [gpu_bench.py options, e.g. --out DIR]
#   PYTHON=...                           the interpreter (default python3)
#   LAMA_FAST_GOLDEN=dir                 golden vectors for the golden tests (default ../shared/golden)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
BENCH_ARGS=()
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then
        BENCH_ARGS+=(--suites fft,kernel,crossover --no-compile)
    else
        BENCH_ARGS+=("$arg")
    fi
done

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
"$PY" - <<'PY'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except Exception as error:
    sys.exit(f"gpu_check: triton does not import ({error}); install the triton that matches this torch")
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
print("device:", torch.cuda.get_device_name(0))
PY

echo "== install (editable, no dependencies, no compiled extension)"
if ! "$PY" -c "import lama_fast.kernels.spectral" 2>/dev/null; then
    LAMA_FAST_SKIP_EXTENSION=1 "$PY" -m pip install --no-deps --no-build-isolation --no-index -q -e . \
        || { echo "gpu_check: pip install -e . failed" >&2; exit 1; }
fi
"$PY" -c "import lama_fast, lama_fast.kernels.spectral as k; print('lama_fast', lama_fast.__version__, \
'| triton backend:', lama_fast.available_backends('cuda')['triton'] or 'usable')"

echo "== GPU tests (tests/test_triton.py, compiled kernels)"
# One fixed tile per kernel: autotuning every tiny test shape would take minutes.
TRITON_INTERPRET=0 LAMA_FAST_TRITON_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_triton.py

echo "== benchmarks"
"$PY" bench/gpu_bench.py "${BENCH_ARGS[@]}"
