#!/usr/bin/env bash
# The one script to run on a CUDA machine (made for one H200; under ~8 minutes there):
#   1. correctness: the Triton kernel tests on the GPU (bf16, large head dims, odd lengths),
#   2. the whole benchmark: python -m attnlib.bench --suite all --out "$OUT" (attnlib's default
#      forward, which is the tensor-descriptor/TMA kernel on Hopper, and the portable one, against
#      SDPA with each backend pinned),
#   3. if time is left, every code cell of labs 15-17 (their GPU timing cells included).
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
tests=$(ls tests/test_kernels_*.py 2>/dev/null)
ATTNLIB_FLASH_AUTOTUNE=0 timeout 130 $PY -m pytest -q -p no:cacheprovider $tests tests/test_kernel_labs_agree.py \
  tests/test_bench_harness.py \
  2>&1 | tee -a "$LOG" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "KERNEL TESTS FAILED (see run.log)"; status=1; }

echo "== benchmark (after $(( $(date +%s) - start )) s) =="
timeout 300 $PY -m attnlib.bench --suite all --out "$OUT" 2>&1 | tee -a "$LOG" | tail -60
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "BENCHMARK FAILED OR TIMED OUT (see run.log)"; status=1; }
if [ $(( $(date +%s) - start )) -lt 360 ]; then
  echo "== kernel labs 15-17 on the GPU (every code cell, GPU timing cells included) =="
  # The image has no jupyter/nbval: run the MyST code cells in order in one namespace.
  ATTN_FAST=1 timeout 110 $PY - <<'PY' 2>&1 | tee -a "$LOG" | tail -30
import linecache, re, sys, time, traceback
import matplotlib
matplotlib.use("Agg")
for lab in ("lab15_triton_basics", "lab16_flash_forward", "lab17_flash_backward"):
    text = open(f"solutions/{lab}.md").read()
    cells = re.findall(r"```\{code-cell\} ipython3\n(.*?)```", text, flags=re.S)
    ns, t0 = {"__name__": "__main__"}, time.time()
    for i, src in enumerate(cells):
        src = re.sub(r"\A---\n.*?\n---\n", "", src, flags=re.S)  # cell metadata
        src = re.sub(r"^(\s*)%.*$", r"\1pass", src, flags=re.M)  # IPython magics (Colab install)
        name = f"<{lab}[{i}]>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)  # Triton reads kernel sources
        try:
            exec(compile(src, name, "exec"), ns)
        except Exception:
            print(f"{lab}: cell {i} FAILED\n{traceback.format_exc()[-1500:]}")
            break
    else:
        print(f"{lab}: all {len(cells)} cells ran in {time.time() - t0:.0f} s")
PY
fi
echo "== done in $(( $(date +%s) - start )) s, status $status; files in $OUT =="
ls -la "$OUT"
exit $status
