"""Every attnlib kernel compiles for Hopper (sm_90: H100/H200) on this GPU-less machine.

tools/compile_kernels.py runs attnlib's launch code with every launch replaced by Triton's
ahead-of-time compilation for sm_90 (PTX, then a cubin from the ptxas Triton ships), once
per autotuning configuration that pruning keeps, and reads shared memory, registers and
spills off the cubin. It runs in a subprocess: the tests here run kernels in Triton's
interpreter, which must not be on for compilation. CI runs it under two Tritons (the
newest, and 3.6 by `make test-triton-compat`), the versions Colab and the GPU image carry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parent.parent
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CUOBJDUMP.exists(), reason="this Triton has no NVIDIA backend tools (cuobjdump)"),
]


def _compile(tmp_path, *args, timeout=900):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile for real, not from an earlier run
    env["ATTNLIB_FLASH_AUTOTUNE"] = "1"  # every configuration autotuning would try
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # Triton 3.9 warns when unset; 1 is the default it keeps
    return subprocess.run([sys.executable, str(ROOT / "tools" / "compile_kernels.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_all_kernels_compile_for_sm90_fit_and_have_spill_free_configs(tmp_path):
    report = tmp_path / "sm90.json"
    done = _compile(tmp_path, "--quick", "--json", str(report))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    rows = json.loads(report.read_text())["rows"]
    kernels = {r["kernel"] for r in rows}
    assert {"_flash_fwd_kernel", "_flash_fwd_tma_kernel", "flash_bwd_delta_kernel", "_flash_bwd_dkdv_kernel",
            "_flash_bwd_dq_kernel", "_decode_split_kernel", "_decode_combine_kernel",
            "_block_sparse_fwd_kernel"} <= kernels
    assert all(r["error"] is None and r["fits_shared"] for r in rows)
    # The experimental forward is warp-specialised for Hopper: Triton adds a producer warp group
    # to the 4 warps asked for (tl.range(..., warp_specialize=True); 12 warps in Triton 3.6 and 3.9),
    # causal too (one loop, every tile masked: the pass takes no second loop and no branch in the loop).
    ws = [r for r in rows if r["kernel"] == "_flash_fwd_ws_kernel"]
    assert {r["CAUSAL"] for r in ws} == {False, True}, ws
    assert all(r["warps_compiled"] > r["num_warps"] == 4 and r["spill_bytes"] == 0 for r in ws), ws
    # The descriptor forward's 128x64 two-stage tiles fit twice on one SM: 8 warps capped at 128
    # registers (maxnreg) and 4 warps (255), each in 97 KiB; the 128x128 tiles fit once.
    tma128 = {(r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"], r["maxnreg"]): r for r in rows
              if r["kernel"] == "_flash_fwd_tma_kernel" and r["head_dim"] == 128 and r["dtype"] == "bfloat16"}
    assert tma128[(128, 64, 8, 2, 128)]["programs_per_sm"] == 2 and tma128[(128, 64, 8, 2, 128)]["spill_bytes"] == 0
    assert tma128[(128, 64, 4, 2, None)]["programs_per_sm"] == 2
    assert tma128[(128, 128, 8, 2, None)]["programs_per_sm"] == 1
    fwd128 = [r for r in rows if r["kernel"] == "_flash_fwd_kernel" and r["head_dim"] == 128]
    assert len({(r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]) for r in fwd128}) >= 4
    # Without autotuning (ATTNLIB_FLASH_AUTOTUNE=0, the GPU tests) each kernel runs its first kept
    # configuration: at the benchmark's head dims it must not spill.
    first = {}
    for r in rows:
        first.setdefault((r["case"], r["kernel"]), r)
    assert all(r["spill_bytes"] == 0 for r in first.values()), [r for r in first.values() if r["spill_bytes"]]
    # Hopper's warpgroup matmul (wgmma, HGMMA in the SASS) in every attention matmul kernel; decoding's
    # 16-row query tiles use mma.sync (HMMA), still tensor cores.
    for (case, kernel), r in first.items():
        if kernel in ("_flash_fwd_kernel", "_flash_fwd_tma_kernel", "_flash_bwd_dkdv_kernel", "_flash_bwd_dq_kernel",
                      "_block_sparse_fwd_kernel", "_flash_fwd_ws_kernel"):
            assert r["matrix_instructions"]["HGMMA"] > 0, (case, kernel, r["matrix_instructions"])
        if kernel == "_decode_split_kernel":
            assert r["matrix_instructions"]["HMMA"] + r["matrix_instructions"]["HGMMA"] > 0, (case, r)


def test_the_check_fails_on_configurations_that_do_not_fit(tmp_path):
    """Without pruning, the forward's large tiles at D=256 overflow sm_90's 227 KiB: caught."""
    done = _compile(tmp_path, "--no-prune", "--cases", r"^flash bfloat16 D=256 full fwd$")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "OVER SHARED LIMIT" in done.stdout and "PROBLEM" in done.stdout
