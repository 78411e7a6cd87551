"""attnlib.kernels.resources: the flash kernels' tiles compiled for a GPU without one (labs 16, 17 show these).

The compiler's numbers change with the Triton version; the relations checked here do not:
more pipeline stages take more shared memory, the same tile on fewer warps takes more
registers per thread, and autotuning never keeps a tile the target cannot launch.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")
from pathlib import Path  # noqa: E402

from attnlib.kernels import resources  # noqa: E402

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
needs_tools = pytest.mark.skipif(not CUOBJDUMP.exists(), reason="this Triton has no NVIDIA backend tools")

TILES = [(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 128, 8, 4)]


@needs_tools
def test_forward_tiles_on_hopper():
    rows = resources.flash_report_in_subprocess(head_dim=128, dtype="float16", arch=90, configs=TILES)
    assert [(r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]) for r in rows] == TILES
    assert all(r["error"] is None and r["head_dim"] == 128 and r["kernel"] == "_flash_fwd_kernel" for r in rows)
    by_tile = {(r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]): r for r in rows}
    stages = [by_tile[(128, 128, 8, s)]["shared_bytes"] for s in (2, 3, 4)]
    assert stages[0] < stages[1] < stages[2]  # one more K/V tile pair in flight per stage
    assert stages[2] - stages[1] == pytest.approx(stages[1] - stages[0], rel=0.05)  # 2 x 128 x 128 x 2 bytes each
    assert stages[2] - stages[1] == pytest.approx(2 * 128 * 128 * 2, rel=0.05)
    assert not by_tile[(128, 128, 8, 4)]["fits_shared"] and stages[2] > resources.SHARED_LIMIT[90]
    assert by_tile[(128, 64, 8, 3)]["fits_shared"] and by_tile[(128, 64, 8, 3)]["spill_bytes"] == 0
    # the same 128x128 fp32 accumulator over 128 threads instead of 256
    assert by_tile[(128, 64, 4, 3)]["registers"] >= by_tile[(128, 64, 8, 3)]["registers"]
    assert all(r["fits_shared"] for r in rows if r["kept_by_pruning"])
    assert not by_tile[(128, 128, 8, 4)]["kept_by_pruning"]
    assert all(r["matrix_instructions"]["HGMMA"] > 0 for r in rows)  # wgmma: Hopper's warpgroup matmul


@needs_tools
def test_backward_kernels_are_reported_alone():
    """kernel="dq" (or "dkdv") compiles that backward kernel's tiles only, not delta's or the other one's."""
    tiles = [(64, 64, 8, 3), (64, 64, 4, 3)]
    rows = resources.flash_report_in_subprocess(kernel="dq", head_dim=128, dtype="bfloat16", arch=90, configs=tiles)
    assert [(r["kernel"], r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]) for r in rows] == [
        ("_flash_bwd_dq_kernel", *t) for t in tiles]
    assert all(r["error"] is None and r["case"] == "flash backward (dq)" for r in rows)
    assert rows[1]["registers"] >= rows[0]["registers"]  # the same tile over half the threads
    assert all(r["matrix_instructions"]["HGMMA"] > 0 for r in rows)


@needs_tools
def test_a_small_gpu_keeps_fewer_tiles():
    """On a T4 (sm_75, 64 KiB per block) the H200's default tile does not fit, and pruning knows it."""
    rows = resources.flash_report_in_subprocess(head_dim=128, dtype="float16", arch=75,
                                                  configs=[(128, 64, 8, 3), (64, 32, 4, 2)])
    big, small = rows
    assert not big["fits_shared"] and not big["kept_by_pruning"]
    assert small["fits_shared"] and small["kept_by_pruning"]


def test_compiling_in_the_interpreter_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET.*flash_report_in_subprocess"):
        resources.AheadOfTimeCompiler(90)


@pytest.mark.parametrize("kwargs, message", [
    ({"kernel": "fast"}, "kernel must be one of 'portable', 'tma', 'dkdv', 'dq'"),
    ({"kernel": "tma", "arch": 80}, "arch >= 90"),
    ({"dtype": "half-ish"}, "dtype must name a torch dtype"),
])
def test_bad_arguments_name_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resources.flash_report(**kwargs)


def test_bad_configs_on_the_command_line():
    with pytest.raises(Exception, match="BLOCK_M,BLOCK_N,num_warps,num_stages"):
        resources._parse_configs("128,64,8")
    assert resources._parse_configs("128,64,8,3;64,32,4,2") == [(128, 64, 8, 3), (64, 32, 4, 2)]
    assert resources._parse_configs("128,64,8,2,128") == [(128, 64, 8, 2, 128)]  # maxnreg


@pytest.mark.parametrize("shared, registers, warps, expected", [
    (99344, 128, 8, 2),   # 128x64 tiles, 2 stages, capped at 128 registers: two programs per SM
    (99344, 138, 8, 1),   # 138 registers round up to 144 per thread: 2 x 256 x 144 > 65,536
    (99344, 255, 4, 2),   # 4 warps at 255: 2 x 128 x 256 = 65,536 exactly
    (165888, 189, 8, 1),  # 128x128 tiles, 2 stages: 162 KiB, one fits in 228 KiB
    (232448, 32, 4, 1),   # the whole per-block limit (227 KiB) plus the 1 KiB reserve is exactly an SM
    (232449, 32, 4, 0),   # one byte more cannot launch
    (0, 32, 4, 16),       # tiny programs: the 64 warps of an SM are the limit
])
def test_programs_per_sm_is_the_least_of_three_limits(shared, registers, warps, expected):
    assert resources.programs_per_sm(shared, registers, warps, arch=90) == expected


def test_programs_per_sm_rejects_bad_input():
    with pytest.raises(ValueError, match="registers must be a non-negative int"):
        resources.programs_per_sm(1024, -1, 4)
    with pytest.raises(ValueError, match="warps must be at least 1"):
        resources.programs_per_sm(1024, 32, 0)


def test_matrix_instructions_are_counted_by_kind():
    sass = """
        /*0a40*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT ;
        /*0a50*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0b00*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0b10*/                   FFMA R1, R2, R3, R1 ;
        /*0b20*/                   MOV R5, 0x0 ;  // HMMA in a comment is not an instruction
    """
    assert resources.matrix_instructions(sass) == {"HGMMA": 2, "HMMA": 1}
    assert resources.matrix_instructions("") == {"HGMMA": 0, "HMMA": 0}


@needs_tools
def test_the_compiled_kernels_keep_each_stage_of_the_compiler_output():
    """``AheadOfTimeCompiler.kernels``: the TTGIR of attnlib's TMA forward has Hopper's async warpgroup matmul."""
    code = """
import torch
from attnlib.kernels import flash, resources
q = torch.empty(1, 2, 256, 128, dtype=torch.bfloat16)
compiler = resources.AheadOfTimeCompiler(90)
with compiler.catching_launches():
    flash._forward_tma(q, q, q, False, 0.1, (128, 64, 8, 2))
assert len(compiler.kernels) == len(compiler.rows) == 1, compiler.rows
ttgir = compiler.kernels[0].asm["ttgir"]
assert "ttng.warp_group_dot" in ttgir and "ttng.warp_group_dot_wait" in ttgir and "math.exp2" in ttgir
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
