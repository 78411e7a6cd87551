#!/usr/bin/env bash
# The one script to run on a CUDA machine (made for one H200 lent for ~10 minutes; it plans to end
# by DEADLINE seconds, 555 by default, and gives the flash suite whatever time is left):
#   1. ceilings: a bf16 matrix product and a device copy, measured here (ceilings.json),
#   2. compile, in parallel processes, every kernel the flash benchmark will launch
#      (tools/compile_kernels.py --set bench fills Triton's cache: the benchmark then autotunes
#      without compiling ~200 kernels one after another), and meanwhile
#   3. correctness: the Triton kernel tests on the GPU (bf16, large head dims, odd lengths; they
#      compile kernels of their own, so they run beside step 2, not after it),
#   4. the benchmarks: python -m attnlib.bench --suite decode|block_sparse|flash (attnlib's default
#      forward, which is the tensor-descriptor/TMA kernel on Hopper, and the portable one, against
#      SDPA with each backend pinned; each suite checks its kernels before timing them; the flash suite
#      first checks the experimental kernels, the Gluon ones included, in child processes side by side,
#      its ladder times those that pass, and it rewrites its JSON after every phase, so that its time
#      limit costs only what it had not measured yet),
#   4b. the decoding probe (tools/decode_probe.py --host: the host's cost per call, a CUDA-graph
#      replay, and the suite's timing of GQA 8k before and after MHA 64k; see NOTES.md, first run),
#   5. if time is left, every code cell of labs 15-18 and chapter 08 (GPU timing cells included).
# Needs torch and triton already installed (no internet is assumed); attnlib comes from
# this checkout. Results land in $OUT (default ./bench-out): copy the JSON files into
# attnlib/bench/results/ (for example as flash-h200.json) to ship and plot them.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
# The device tool brings back at most 8 files: run.log, ceilings.json, a JSON per suite, decode_host.json,
# and the suites' plots bundled as plots.tar at the end.
LOG="$OUT/run.log"
: >"$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export MPLBACKEND=Agg
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/attnlib-triton-cache}"  # shared by every step below
mkdir -p "$TRITON_CACHE_DIR"
PY="${PYTHON:-python3}"
DEADLINE="${DEADLINE:-555}"
scratch="$(mktemp -d)"  # this run's own files (no other run's are read back as this one's)
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
status=0

$PY -m pip install --quiet --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 \
  || echo "(pip install -e . failed, see run.log; using PYTHONPATH=$PWD instead)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv \
  | tee -a "$LOG"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'cpus', __import__('os').cpu_count())" \
  | tee -a "$LOG"

echo "== ceilings (bf16 matmul 8192^3 on random data, device copy) =="
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

echo "== kernel tests on CUDA (one config per shape: ATTNLIB_FLASH_AUTOTUNE=0), beside the compile step =="
# The GPU image has pytest and hypothesis but no nbval or jupytext: override the project's addopts
# (they name nbval's options) and leave out the test that reads the lab notebooks if jupytext is missing.
# (test_kernels_compile_sm90.py compiles for the GPU without one: nothing to learn from it here.)
tests="$(ls tests/test_kernels_*.py | grep -v compile_sm90) tests/test_bench_harness.py"
$PY -c "import jupytext" 2>/dev/null && tests="$tests tests/test_kernel_labs_agree.py"
# Compiling is the slow part (float32 kernels take ~5-10 s each, tools/compile_kernels.py): with
# pytest-xdist (the image has it) four processes compile side by side. Their output goes to its own file
# and into run.log after the compile step's; nothing here is timed, so the two share the machine.
xdist=""; $PY -c "import xdist" 2>/dev/null && xdist="-n 4"
( ATTNLIB_FLASH_AUTOTUNE=0 timeout 180 $PY -m pytest -q -p no:cacheprovider -o addopts="-ra" $xdist $tests \
    >"$scratch/kernel-tests.txt" 2>&1; echo $? >"$scratch/kernel-tests.rc" ) &
tests_pid=$!

echo "== compile the flash benchmark's kernels for this GPU, 16 processes (after $(elapsed) s) =="
# Each process takes one slice of the cases (head dim, mask, kernel, shape class); the log keeps the
# resource table (registers, shared memory, spills) of every kernel the benchmark can choose from.
pids=()
for d in 128 64; do
  for c in full causal; do
    for slice in ".* fwd.*" "grid bwd.*" "check bwd" "check-gqa bwd"; do
      timeout 150 $PY tools/compile_kernels.py --set bench --cases "D=$d $c $slice\$" \
        >"$scratch/compile-$d-$c-${slice//[^a-z-]/}.txt" 2>&1 &
      pids+=($!)
    done
  done
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
cat "$scratch"/compile-*.txt >>"$LOG"
grep -h "kernels compiled in\|PROBLEM\|UNUSABLE\|ALL SPILL\|NO WGMMA" "$scratch"/compile-*.txt | sort | uniq -c | tail -20
echo "Triton cache entries: $(ls "$TRITON_CACHE_DIR" | wc -l) (after $(elapsed) s)" | tee -a "$LOG"

wait "$tests_pid"
echo "== kernel tests on CUDA: done (after $(elapsed) s) =="
cat "$scratch/kernel-tests.txt" >>"$LOG"
tail -25 "$scratch/kernel-tests.txt"
[ "$(cat "$scratch/kernel-tests.rc" 2>/dev/null)" = 0 ] || { echo "KERNEL TESTS FAILED (see run.log)"; status=1; }

# One suite per call, cheapest first, each with its own time limit: a slow suite must not cost the
# others' results. The flash suite gets what is left before DEADLINE but the probe's minute (its budget
# stops starting new shapes 45 s before its limit; should the limit stop it anyway, its JSON holds every
# phase it finished, "complete": false).
cache_before=$(ls "$TRITON_CACHE_DIR" | wc -l)
touch "$scratch/before-benchmarks"
for suite in decode block_sparse flash; do
  case $suite in
    decode) limit=90 ;;
    block_sparse) limit=60 ;;
    # (the decoding probe after it keeps its 60 s)
    # (and at least 60 s: what it checkpoints by then still comes back if the device's own limit ends the call)
    flash) limit=$(( DEADLINE - $(elapsed) - 70 )); [ "$limit" -gt 330 ] && limit=330; [ "$limit" -lt 60 ] && limit=60 ;;
  esac
  echo "== benchmark: $suite (limit $limit s; after $(elapsed) s) =="
  ATTNLIB_BENCH_FLASH_BUDGET_S=$(( limit - 45 )) timeout "$limit" $PY -m attnlib.bench --suite "$suite" --out "$OUT" \
    2>&1 | tee -a "$LOG" | tail -40
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "BENCHMARK $suite FAILED OR TIMED OUT (see run.log)"; status=1; }
done
echo "Triton cache entries: $cache_before before the benchmarks, $(ls "$TRITON_CACHE_DIR" | wc -l) after" \
  | tee -a "$LOG"
# Which kernels the precompile step missed (the first run's cache grew by 13 here): each new entry's metadata.
find "$TRITON_CACHE_DIR" -name "*.json" -newer "$scratch/before-benchmarks" ! -name "__grp__*" 2>/dev/null \
  | head -40 | xargs -r $PY -c '
import json, sys
for path in sys.argv[1:]:
    try:
        m = json.load(open(path))
    except Exception:
        continue
    print("compiled during the benchmarks:", m.get("name"), "warps", m.get("num_warps"), "stages",
          m.get("num_stages"), "maxnreg", m.get("maxnreg"), "shared", m.get("shared"))
' 2>&1 | sort | uniq -c | tee -a "$LOG" | tail -20
echo "== decoding probe: host cost per call, CUDA-graph replay, order (after $(elapsed) s) =="
timeout 60 $PY tools/decode_probe.py --host --out "$OUT" 2>&1 | grep -v "Warning\|  return" | tee -a "$LOG" | tail -12
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "DECODE PROBE FAILED OR TIMED OUT (see run.log)"; status=1; }
left=$(( DEADLINE - $(elapsed) ))
if [ "$left" -gt 45 ]; then
  echo "== kernel labs 15-18 and chapter 08 on the GPU (every code cell; limit $left s) =="
  # The image has no Jupyter, nbval or jupytext: tools/run_md_cells.py runs the MyST code cells in order.
  ATTN_FAST=1 timeout "$left" $PY tools/run_md_cells.py solutions/lab1[5-8]_*.md chapters/08_gpu_profiling.md \
    2>&1 | tee -a "$LOG" | tail -30
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "A LAB OR CHAPTER CELL FAILED ON THE GPU (see run.log)"; status=1; }
else
  echo "== no time left for the labs' GPU cells ($left s before the deadline) =="
fi
# One file for the plots (they can be redrawn from the JSON): the tool brings back 8 files at most.
( cd "$OUT" && ls ./*.png >/dev/null 2>&1 && tar -cf plots.tar ./*.png && rm -f ./*.png )
echo "== done in $(elapsed) s, status $status; files in $OUT =="
ls -la "$OUT"
exit $status
