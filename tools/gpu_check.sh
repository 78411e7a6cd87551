#!/usr/bin/env bash
# The one script to run on a CUDA machine (made for one H200; at most ~9 minutes there, by its limits):
#   1. correctness: the Triton kernel tests on the GPU (bf16, large head dims, odd lengths),
#   2. the whole benchmark: python -m attnlib.bench --suite decode|block_sparse|flash (attnlib's default
#      forward, which is the tensor-descriptor/TMA kernel on Hopper, and the portable one, against
#      SDPA with each backend pinned),
#   3. if time is left, every code cell of labs 15-18 and chapter 08 (GPU timing cells included).
# Needs torch and triton already installed (no internet is assumed); attnlib comes from
# this checkout. Results land in $OUT (default ./bench-out): copy the JSON files into
# attnlib/bench/results/ (for example as flash-h200.json) to ship and plot them.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
# The device tool brings back at most 8 files: one log, ceilings.json, and per suite a JSON and a PNG.
LOG="$OUT/run.log"
: >"$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
PY="${PYTHON:-python3}"
start=$(date +%s)
status=0

$PY -m pip install --quiet --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 \
  || echo "(pip install -e . failed, see run.log; using PYTHONPATH=$PWD instead)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv \
  | tee -a "$LOG"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"

echo "== ceilings (bf16 matmul 8192^3, device copy) =="
timeout 45 $PY - <<'PY' | tee -a "$LOG"
import json, os, torch
from triton.testing import do_bench
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
ms = do_bench(lambda: a @ b, warmup=25, rep=100, return_mode="median")
x = torch.randn(1 << 28, device="cuda", dtype=torch.float32); y = torch.empty_like(x)
ms_copy = do_bench(lambda: y.copy_(x), warmup=25, rep=100, return_mode="median")
res = {"bf16_matmul_8192_tflops": 2 * 8192**3 / ms / 1e9, "device_copy_tb_s": 2 * x.numel() * 4 / ms_copy / 1e9}
print(json.dumps(res))
json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "ceilings.json"), "w"))
PY

echo "== kernel tests on CUDA (one config per shape: ATTNLIB_FLASH_AUTOTUNE=0) =="
# The GPU image has pytest and hypothesis but no nbval or jupytext: override the project's addopts
# (they name nbval's options) and leave out the test that reads the lab notebooks if jupytext is missing.
# (test_kernels_compile_sm90.py compiles for the GPU without one: nothing to learn from it here.)
tests="$(ls tests/test_kernels_*.py | grep -v compile_sm90) tests/test_bench_harness.py"
$PY -c "import jupytext" 2>/dev/null && tests="$tests tests/test_kernel_labs_agree.py"
# Compiling is the slow part (float32 kernels take ~5-10 s each, tools/compile_kernels.py): with
# pytest-xdist (the image has it) four processes compile side by side.
xdist=""; $PY -c "import xdist" 2>/dev/null && xdist="-n 4"
ATTNLIB_FLASH_AUTOTUNE=0 timeout 120 $PY -m pytest -q -p no:cacheprovider -o addopts="-ra" $xdist $tests \
  2>&1 | tee -a "$LOG" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "KERNEL TESTS FAILED (see run.log)"; status=1; }

# One suite per call, cheapest first, each with its own time limit: a slow flash suite (compiles and
# autotunes many kernels) must not cost the decode and block-sparse results. Worst case ~9 minutes.
for spec in decode:90 block_sparse:60 flash:220; do
  suite=${spec%%:*}; limit=${spec##*:}
  echo "== benchmark: $suite (limit $limit s; after $(( $(date +%s) - start )) s) =="
  ATTNLIB_BENCH_FLASH_BUDGET_S=170 timeout "$limit" $PY -m attnlib.bench --suite "$suite" --out "$OUT" 2>&1 \
    | tee -a "$LOG" | tail -40
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "BENCHMARK $suite FAILED OR TIMED OUT (see run.log)"; status=1; }
done
if [ $(( $(date +%s) - start )) -lt 420 ]; then
  echo "== kernel labs 15-18 and chapter 08 on the GPU (every code cell, GPU timing cells included) =="
  # The image has no Jupyter, nbval or jupytext: tools/run_md_cells.py runs the MyST code cells in order.
  ATTN_FAST=1 timeout 90 $PY tools/run_md_cells.py solutions/lab1[5-8]_*.md chapters/08_gpu_profiling.md \
    2>&1 | tee -a "$LOG" | tail -30
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "A LAB OR CHAPTER CELL FAILED ON THE GPU (see run.log)"; status=1; }
fi
echo "== done in $(( $(date +%s) - start )) s, status $status; files in $OUT =="
ls -la "$OUT"
exit $status
