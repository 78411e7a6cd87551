"""The cells that plot the latest stored GPU results run on any run in each suite's layout.

Labs 16-18 and chapter 08 show the newest file in ``attnlib/bench/results/`` (ratios, plots,
forward ladder, backward breakdown), whatever GPU wrote it: the committed H200 run is one
such file (``test_committed_results.py`` checks it), a student's own run on Colab another.
Here result files of each suite's exact layout are written to a temporary
folder (``ATTNLIB_BENCH_RESULTS`` points the notebooks at it) and every code cell of the four
notebooks runs. The numbers are made up and labelled so; the flash suite's correctness
checks, ladder and backward breakdown are real, measured by the harness on this CPU in the
interpreter at tiny sizes, so their rows have exactly the fields a GPU run writes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bench_helpers import cpu_timer

ROOT = Path(__file__).resolve().parent.parent
LABEL = "synthetic test rows, not a measurement"
NOTEBOOKS = ["solutions/lab16_flash_forward.md", "solutions/lab17_flash_backward.md",
             "solutions/lab18_decoding_and_sparse_kernels.md", "chapters/08_gpu_profiling.md"]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path of the stored-results cells")


def _run_keys(module_file: str) -> set:
    """The keys of the dict literal that ``run()`` in ``attnlib/bench/<module_file>`` returns last."""
    tree = ast.parse((ROOT / "attnlib" / "bench" / module_file).read_text())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    returned = [n for n in ast.walk(run) if isinstance(n, ast.Return) and isinstance(n.value, ast.Dict)]
    return {k.value for k in max(returned, key=lambda n: n.lineno).value.keys}


def _machine() -> dict:
    from attnlib.bench.env import machine_info

    return {**machine_info(), "gpu": LABEL, "date_utc": "2000-01-01T00:00:00+00:00"}


def _flash_results() -> dict:
    from attnlib.bench import attention_flops
    from attnlib.bench import flash as fb

    correctness = fb.check_correctness(device="cpu", dtype=torch.float32, head_dims=(16,), sizes=((2, 1, 9, 13),))
    steps = [("portable 16x32, 4 warps, 2 stages", "portable", (16, 32, 4, 2)),
             ("portable, autotuned", "portable", None)]
    ladder = fb.time_ladder((24,), head_dim=16, dtype=torch.float32, timer=cpu_timer, device="cpu", steps=steps,
                            tokens=48, model_dim=32)
    backward = fb.time_backward((24,), head_dim=16, dtype=torch.float32, timer=cpu_timer, device="cpu", tokens=48,
                                model_dim=32, candidates={"dK/dV": [(16, 32, 4, 2)], "dQ": [(32, 16, 4, 2)]},
                                one_pass=[(16, 32, 4, 2)])
    speed = {"attnlib_flash": 500.0, "attnlib_flash_portable": 450.0, "sdpa_cudnn": 550.0, "sdpa_flash": 330.0,
             "sdpa_efficient": 160.0}
    rows = []
    for shape in fb.grid():
        for impl, tflops in speed.items():
            for mode in ("fwd", "fwd_bwd"):
                if impl == "sdpa_efficient" and shape["seq_len"] == 16384:  # a refusal, recorded as a real run would
                    rows.append({"impl": impl, **shape, "mode": mode, "ms": None, "tflops": None, "error": "refused"})
                    continue
                tf = tflops * (0.8 if mode == "fwd_bwd" else 1.0)
                flops = attention_flops(shape["batch"], shape["heads"], shape["seq_len"], shape["seq_len"],
                                        shape["head_dim"], causal=shape["causal"], mode=mode)
                rows.append({"impl": impl, **shape, "mode": mode, "ms": flops / tf / 1e9, "tflops": tf, "error": None})
    return {
        "suite": "flash", "dtype": "bfloat16", "quick": False, "complete": True, "flops": "(as a real run)",
        "timing": LABEL, "kernel_correct": all(c["passed"] for c in correctness), "forward_kernel": "tma",
        "tma_failure": None,
        "max_rel_error_vs_sdpa": 0.004, "correctness": correctness,
        "experimental_kernels": {"gluon 128x128/8/2": None}, "experimental_in_grid": None, "rows": rows,
        "ratios": fb.ratios(rows),
        "ladder": ladder, "backward": backward, "skipped": [], "autotuned_configs": fb.autotuned_configs(),
        "elapsed_s": 1.0, "machine": _machine(),
    }


def _decode_results() -> dict:
    from attnlib.bench import decode

    rows = []
    for shape in decode.grid():
        nbytes = 2 * shape["batch"] * shape["kv_heads"] * shape["kv_len"] * shape["head_dim"] * 2
        for impl, tb_s in (("attnlib_decode", 3.9), ("attnlib_decode_bn128", 3.7), ("sdpa_cudnn", 4.2),
                           ("sdpa_flash", 2.5), ("sdpa_efficient", None)):
            ms = None if tb_s is None else nbytes / (tb_s * 1e12) * 1e3
            rows.append({"impl": impl, **shape, "bytes": nbytes, "ms": ms, "tb_s": tb_s,
                         **({"error": "refused"} if tb_s is None else {})})
    return {"dtype": "bfloat16", "copy_tb_s": 4.25, "kernel_correct": True, "checks": [], "rows": rows,
            "ratios": decode.ratios(rows, 4.25), "note": LABEL, "machine": _machine()}


def _block_sparse_results() -> dict:
    from attnlib.bench.block_sparse import SHAPE

    rows = [{"impl": "attnlib_block_sparse", **SHAPE, "fraction": f, "ms": 2.8 * f + 0.05, "tflops_on_active": 700.0}
            for f in (1.0, 0.5, 0.25, 0.1, 0.05)]
    rows += [{"impl": "attnlib_block_sparse_causal", **SHAPE, "fraction": 0.5, "ms": 1.5, "tflops_on_active": 650.0},
             {"impl": "sdpa_cudnn_dense", **SHAPE, "fraction": 1.0, "ms": 2.5, "tflops_on_active": 780.0},
             {"impl": "sdpa_flash_dense", **SHAPE, "fraction": 1.0, "ms": None, "error": "refused"}]
    for r in rows:
        r["time_vs_all_blocks"] = r["ms"] / rows[0]["ms"] if r.get("ms") else None
    return {"kernel_correct": True, "checks": [], "rows": rows, "shape": SHAPE, "note": LABEL, "machine": _machine()}


@pytest.mark.slow
def test_stored_results_cells_run(tmp_path):
    pytest.importorskip("triton")
    results = {"flash": _flash_results(), "decode": _decode_results(), "block_sparse": _block_sparse_results()}
    for suite, data in results.items():  # the layout a real run writes: run()'s keys plus the machine
        assert set(data) == _run_keys(f"{suite}.py") | {"machine"}, suite
        (tmp_path / f"{suite}-synthetic.json").write_text(json.dumps(data, default=str))
    env = {**os.environ, "ATTNLIB_BENCH_RESULTS": str(tmp_path), "TRITON_INTERPRET": "1", "ATTN_FAST": "1",
           "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "tools/run_md_cells.py", *NOTEBOOKS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert out.count(LABEL) >= 4, out[-3000:]  # each notebook printed the stored run's machine
    assert "portable, autotuned" in out and "attnlib backward" in out  # ladder and backward lines
    assert "Hkv=32 KV=  8192" in out and "WRONG" not in out
    assert "No stored" not in out and "no measured results" not in out
