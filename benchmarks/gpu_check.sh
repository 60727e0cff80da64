#!/usr/bin/env bash
# The GPU check (issue 20): on a fresh machine with one NVIDIA GPU, Python 3.12, a CUDA build of
# torch 2.11-2.13, e3nn, lightning, CMake and ninja installed and no network, in under 8 minutes:
# build the runtime, compile small models for cuda and run the GPU tests (tests/gpu, marked
# gpu), then time the benchmark model's energy + forces + stress call at 4096 and 32768 atoms
# on the GPU against the CPU (benchmarks/gpu_time.py) and print one table.
#
#   benchmarks/gpu_check.sh --download-wheels   # beforehand, where PyPI is reachable: the other
#                                               # Python packages, as cp312 wheels, into $WHEELS
#   benchmarks/gpu_check.sh                     # on the GPU machine, from the repository root
#
# WHEELS (default build/gpu-wheels) holds the wheels; OUT (default build/gpu_check) the
# results: gpu_tests.txt, gpu_time.json, table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-build/gpu-wheels}
OUT=${OUT:-build/gpu_check}
PYTHON=${PYTHON:-python3}
# what the project needs beyond torch, numpy, scipy, e3nn and lightning (installed there)
PACKAGES=(ase vesin pydantic pyyaml tqdm torchmetrics pytest pytest-timeout "scikit-build-core>=0.10" "pybind11>=2.12")
# ... and their dependencies, listed (pip download --no-deps): contourpy 1.4 needs numpy 2, the
# GPU machine's numpy may be older; pydantic needs a newer typing-extensions than torch's
WHEEL_CLOSURE=(ase matplotlib "contourpy==1.3.3" cycler fonttools kiwisolver pillow pyparsing
  python-dateutil tzdata vesin pydantic pydantic-core annotated-types "typing-extensions>=4.14"
  typing-inspection pyyaml tqdm torchmetrics lightning-utilities packaging pytest pytest-timeout
  iniconfig pluggy pygments scikit-build-core pathspec pybind11)

if [[ "${1:-}" == "--download-wheels" ]]; then
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${WHEEL_CLOSURE[@]}"
  du -sh "$WHEELS"
  exit 0
fi

start=$(date +%s)
step() { echo "== [$(($(date +%s) - start)) s] $*"; }
mkdir -p "$OUT"

step "torch and the GPU"
"$PYTHON" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device: this check needs an NVIDIA GPU and a CUDA build of torch")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}")
PY

step "virtual environment on the installed torch, other packages from $WHEELS"
"$PYTHON" -m venv --system-site-packages build/gpu-venv
VPY=build/gpu-venv/bin/python
"$VPY" -m pip install -q --no-index --find-links "$WHEELS" "${PACKAGES[@]}"

step "building the C++ runtime against the installed torch"
"$VPY" -m pip install -q --no-index --no-build-isolation --no-deps .

step "compiling the benchmark model for cuda and cpu (in the background)"
"$VPY" benchmarks/gpu_time.py --compile-only --out-dir "$OUT/files" >"$OUT/compile.log" 2>&1 &
compiling=$!

step "GPU tests (tests/gpu)"
tests_status=0
"$VPY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -o addopts="-ra" 2>&1 | tee "$OUT/gpu_tests.txt" || tests_status=$?

step "waiting for the benchmark files"
wait "$compiling" || { cat "$OUT/compile.log"; exit 1; }
step "timing the benchmark model on the GPU and the CPU"
"$VPY" benchmarks/gpu_time.py --reuse --out-dir "$OUT/files" --sizes 4096 32768 --json "$OUT/gpu_time.json" \
  | tee "$OUT/table.md"

step "done: GPU tests $( ((tests_status == 0)) && echo passed || echo FAILED ), table in $OUT/table.md"
exit "$tests_status"
