"""The benchmark harness on a CPU: entry point behaviour, ratios, FLOP rates, stored data and plots.

GPU timings cannot be tested here; what can: without CUDA the entry point says so and writes
nothing, ratios and TFLOP/s are computed correctly, the staff's reference baselines load
and say what they are, and the plots draw from rows of the documented shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bench_helpers import cpu_timer

from attnlib.bench import attention_flops
from attnlib.bench.__main__ import main
from attnlib.bench.flash import grid, ratios
from attnlib.bench.plot import (load_reference_baselines, load_results, plot_backward, plot_flash, plot_ladder,
                                plot_reference_baselines, plot_rows)
from attnlib.bench.timing import attention_tflops, tflops


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_entry_point_without_cuda_writes_nothing(tmp_path, capsys):
    assert main(["--suite", "all", "--out", str(tmp_path / "out")]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_a_flash_run_stopped_by_its_time_limit_leaves_what_it_measured(tmp_path, monkeypatch):
    """The flash suite writes its JSON after every phase: killed during the grid (``timeout`` in
    tools/gpu_check.sh), the file holds the check, the canary's verdicts, the ladder, the backward and
    every shape timed so far, marked incomplete. (Every phase stands in here: the real ones need CUDA.)"""
    import json

    from attnlib.bench import canary, env, flash

    class Stopped(BaseException):  # what SIGTERM is to the suite: nothing catches it
        pass

    timed = []

    def time_shape(shape, impls, **kwargs):
        if len(timed) == 2:
            raise Stopped
        timed.append(shape)
        return [{"impl": i, "mode": "fwd", "tflops": 1.0 + len(timed), "rel_error_vs_sdpa_cudnn": 1e-3,
                 **{k: shape[k] for k in ("seq_len", "head_dim", "causal")}} for i in impls]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(flash, "require_bf16_gpu", lambda suite: None)
    monkeypatch.setattr(env, "machine_info", lambda: {"gpu": "stand-in"})
    monkeypatch.setattr(flash, "check_correctness", lambda: [{"passed": True}])
    monkeypatch.setattr(flash, "_tma_on", lambda: True)
    budgets = []
    verdicts = {"gluon 128x128/8/2": None}
    monkeypatch.setattr(canary, "run_in_child", lambda budget_s: budgets.append(budget_s) or verdicts)  # main's screen
    monkeypatch.setattr(flash, "time_ladder", lambda *a, **k: [{"step": "TMA", "seq_len": 4096, "head_dim": 128,
                                                               "causal": False, "tflops": 500.0}])
    backward = [{"part": "dK/dV", "config": "autotuned", "seq_len": 4096, "head_dim": 128, "causal": False,
                 "ms": 2.5, "tflops": 400.0}]
    monkeypatch.setattr(flash, "time_backward", lambda *a, **k: backward)
    monkeypatch.setattr(flash, "time_shape", time_shape)
    monkeypatch.setenv("ATTNLIB_BENCH_FLASH_BUDGET_S", "100")
    with pytest.raises(Stopped):
        main(["--suite", "flash", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "flash.json").read_text())
    assert saved["complete"] is False and saved["machine"] == {"gpu": "stand-in"} and budgets == [40.0]
    assert saved["kernel_correct"] and saved["experimental_kernels"] == verdicts
    assert saved["ladder"][0]["tflops"] == 500.0 and saved["backward"] == backward
    assert len(saved["rows"]) == 2 * len(flash.IMPLS) + 2  # two shapes (with the portable kernel's rows)
    assert {r["seq_len"] for r in saved["ratios"]} == {timed[0]["seq_len"], timed[1]["seq_len"]}

    timed.clear()
    first_two = flash.grid()[:2]
    monkeypatch.setattr(flash, "grid", lambda quick: first_two)  # a run that ends: complete
    assert main(["--suite", "flash", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "flash.json").read_text())
    assert saved["complete"] is True and saved["forward_kernel"] == "tma" and len(saved["rows"]) == 10
    assert flash.SCREENED == verdicts  # what the grid's experimental forwards are gated by
    assert saved["experimental_in_grid"] == {"full": None, "causal": None}  # the stand-in ladder has none


def test_a_gpu_without_bfloat16_gets_a_clear_refusal(monkeypatch):
    """Colab's free T4 (compute capability 7.5) has no bfloat16 matrix units: each suite says so by name."""
    from attnlib.bench import block_sparse, decode, env, flash

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert not env.bf16_gpu()
    for suite, module in (("flash", flash), ("decode", decode), ("block-sparse", block_sparse)):
        with pytest.raises(RuntimeError, match=f"the {suite} benchmark runs in bfloat16.*Tesla T4 is 7.5"):
            module.run(quick=True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 9))  # an L4
    assert env.bf16_gpu()


def test_tflops_and_grid():
    assert tflops(2e12, 1000.0) == pytest.approx(2.0)
    # 4*B*H*N*N*D / 2 for causal, 1 ms
    assert attention_tflops(1.0, 4, 16, 4096, 4096, 128, causal=True) == pytest.approx(
        attention_flops(4, 16, 4096, 4096, 128, causal=True) / 1e9)
    with pytest.raises(ValueError):
        tflops(1.0, 0.0)
    for shape in grid():
        assert shape["batch"] * shape["seq_len"] == 16384 and shape["heads"] * shape["head_dim"] == 2048
    assert {s["seq_len"] for s in grid()} == {1024, 2048, 4096, 8192, 16384}


def _rows():
    rows = []
    for impl, tf in (("attnlib_flash", 300.0), ("sdpa_cudnn", 400.0), ("sdpa_flash", 200.0), ("sdpa_efficient", None)):
        for mode in ("fwd", "fwd_bwd"):
            rows.append({"impl": impl, "batch": 4, "heads": 16, "seq_len": 4096, "head_dim": 128, "causal": True,
                         "mode": mode, "ms": None if tf is None else 1.0, "tflops": tf})
    return rows


def test_ratios():
    out = ratios(_rows())
    assert len(out) == 2
    for entry in out:
        assert entry["vs_sdpa_cudnn"] == pytest.approx(0.75)
        assert entry["vs_sdpa_flash"] == pytest.approx(1.5)
        assert entry["vs_sdpa_efficient"] is None


def test_reference_baselines_are_labelled_and_match_the_source():
    ref = load_reference_baselines()
    assert "NOT results of attnlib" in ref["what"] and ref["gpu"] == "NVIDIA H200"
    best = {(r["impl"], r["head_dim"], r["seq_len"], r["causal"]): r for r in ref["rows"]}
    assert best[("sdpa_cudnn", 128, 4096, False)]["fwd_tflops"] == 595
    assert best[("sdpa_cudnn", 128, 4096, True)]["fwd_tflops"] == 514
    assert not best[("flex", 128, 16384, True)]["valid"]
    assert all(r["impl"] != "attnlib_flash" for r in ref["rows"])


def test_plots_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_flash({"rows": _rows(), "machine": {"gpu": "test rows", "date_utc": "2000-01-01"}})
    assert len(fig.axes) == 2 and fig.axes[0].get_lines()
    fig = plot_reference_baselines()
    assert len(fig.axes) == 8
    fig = plot_rows({"rows": [{"impl": "x", "kv_len": 8, "tb_s": 1.0}, {"impl": "x", "kv_len": 16, "tb_s": 2.0}]})
    assert fig.axes[0].get_lines()
    ladder = [{"step": step, "seq_len": n, "causal": c, "head_dim": 128, "tflops": t}
              for n in (4096, 16384) for c in (False, True)
              for step, t in (("portable 128x64", 400.0), ("TMA, autotuned", None), ("SDPA cuDNN", 590.0))]
    fig = plot_ladder({"ladder": ladder, "machine": {"gpu": "test rows"}})
    assert len(fig.axes) == 4 and len(fig.axes[0].patches) == 3
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["portable 128x64", "TMA, autotuned", "SDPA cuDNN"]
    backward = [{"part": part, "config": config, "seq_len": 4096, "causal": c, "head_dim": 128, "ms": ms, "tflops": t}
                for c in (False, True)
                for part, config, ms, t in (("delta", "-", 0.05, None),
                                            ("dK/dV", "16x128, 8 warps, 3 stages", 2.0, 300.0),
                                            ("dQ", "autotuned", None, None),
                                            ("SDPA flash backward", "-", 3.0, 250.0))]
    fig = plot_backward({"backward": backward, "machine": {"gpu": "test rows"}})
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 4
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "delta", "dK/dV 16x128, 8 warps, 3 stages", "dQ autotuned", "SDPA flash backward"]
    assert "  did not run" in [t.get_text() for t in fig.axes[0].texts]


def test_load_results_ignores_the_reference_file(tmp_path):
    (tmp_path / "h200-baselines-reference.json").write_text("{}")
    (tmp_path / "flash-h200.json").write_text(json.dumps({"rows": [], "machine": {"date_utc": "2030"}}))
    found = load_results("flash", tmp_path)
    assert [f["file"] for f in found] == ["flash-h200.json"]
    assert load_results("decode", tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the real harness in tools/gpu_check.sh")
def test_harness_logic_runs_in_the_interpreter():
    pytest.importorskip("triton")
    from attnlib.bench.flash import IMPLS, check_correctness, time_shape

    checks = check_correctness(device="cpu", dtype=torch.float32, head_dims=(16,), sizes=((2, 1, 9, 13),))
    assert len(checks) == 2 and all(c["passed"] for c in checks), checks
    shape = {"batch": 1, "heads": 2, "seq_len": 20, "head_dim": 16, "causal": True}
    rows = time_shape(shape, device="cpu", dtype=torch.float32, timer=cpu_timer)
    assert sorted((r["impl"], r["mode"]) for r in rows) == sorted((i, m) for i in IMPLS for m in ("fwd", "fwd_bwd"))
    ours = [r for r in rows if r["impl"] == "attnlib_flash"]
    assert all(r["error"] is None and r["ms"] > 0 and r["tflops"] > 0 for r in ours)
    for r in rows:  # a backend that refuses the shape (no cuDNN on a CPU) is reported, not fatal
        assert (r["tflops"] is None) == (r["error"] is not None)
    for key in (k for k in ours[0] if k.startswith("rel_error_vs_")):
        assert ours[0][key] < 1e-4


def test_autotuned_configs_are_recorded_as_text(monkeypatch):
    """flash.json keeps each tuner's choice per key (a GPU fills the caches; here one entry is planted)."""
    import triton

    from attnlib.bench.flash import autotuned_configs
    from attnlib.kernels import _flash_bwd

    chosen = triton.Config({"BLOCK_M": 16, "BLOCK_N": 128}, num_warps=8, num_stages=3)
    monkeypatch.setattr(_flash_bwd.flash_bwd_dkdv_kernel, "cache", {(4096, 4096, 128, True, 1): chosen})
    tuned = autotuned_configs()
    assert set(tuned) == {"forward (portable)", "forward (TMA)", "backward dK/dV", "backward dQ"}
    assert tuned["backward dK/dV"] == {"(4096, 4096, 128, True, 1)": str(chosen)}
    assert "BLOCK_N: 128" in tuned["backward dK/dV"]["(4096, 4096, 128, True, 1)"]
    json.dumps(tuned)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the real ladder in tools/gpu_check.sh")
def test_ladder_logic_runs_in_the_interpreter(monkeypatch):
    """Each step of the forward (fixed tiles, autotuned, TMA) computes SDPA's function; refusals are recorded."""
    pytest.importorskip("triton")
    from attnlib.bench.flash import LADDER, ladder_lines, time_ladder

    steps = [("portable 16x32, 4 warps, 2 stages", "portable", (16, 32, 4, 2)),
             ("portable, autotuned", "portable", None),
             ("TMA 32x16, 4 warps, 2 stages", "tma", (32, 16, 4, 2))]
    saved = []
    rows = time_ladder((24,), head_dim=16, dtype=torch.float32, timer=cpu_timer, device="cpu", steps=steps,
                       tokens=48, model_dim=32, progress=saved.append)  # B=2, H=2
    assert [r["step"] for r in rows] == [*(name for name, _, _ in steps), "SDPA cuDNN", "SDPA flash"] * 2
    assert [len(s) for s in saved] == [len(rows) // 2, len(rows)] and saved[-1] == rows  # after each mask
    assert {r["causal"] for r in rows} == {False, True} and {(r["batch"], r["heads"]) for r in rows} == {(2, 2)}
    for r in rows:
        assert (r["tflops"] is None) == (r["error"] is not None)
        if r["step"] != "SDPA cuDNN":  # no cuDNN on a CPU: recorded, not fatal
            assert r["error"] is None and r["rel_error_vs_sdpa_flash"] < 1e-4, r
    lines = ladder_lines(rows)
    assert len(lines) == len(rows) and "did not run (" in lines[len(steps)]  # SDPA cuDNN on a CPU
    assert not any("x SDPA-cuDNN" in line for line in lines)  # no cuDNN number to divide by
    measured = [{"step": "TMA 128x64", "seq_len": 4096, "causal": True, "head_dim": 128, "tflops": 450.0},
                {"step": "SDPA cuDNN", "seq_len": 4096, "causal": True, "head_dim": 128, "tflops": 500.0}]
    assert ladder_lines(measured)[0].endswith("450.0 TFLOP/s = 0.90x SDPA-cuDNN")
    assert "WRONG" not in "".join(lines)
    assert ladder_lines([{**measured[0], "rel_error_vs_sdpa_cudnn": 0.1}])[0].endswith(
        "450.0 TFLOP/s WRONG: relative error 0.1 against sdpa_cudnn")
    names = [name for name, _, _ in LADDER]
    assert "TMA, autotuned (the default on Hopper)" in names and names[0].startswith("portable 128x64")
    assert all(kernel in ("portable", "tma", "ws", "gluon", "gluon-ws", "gluon-pingpong") for _, kernel, _ in LADDER)
    assert all(len(name) <= 47 for name in names)  # the printed column
    # the two-programs-per-SM steps time configurations the TMA autotuner also tries
    from attnlib.kernels import _flash_config

    two_per_sm = [config for name, _, config in LADDER if name.endswith("2/SM")]
    assert len(two_per_sm) == 2 and all(c[:2] == (128, 64) and c[3] == 2 for c in two_per_sm)
    monkeypatch.setattr(_flash_config, "INTERPRET", False)
    monkeypatch.setattr(_flash_config, "AUTOTUNE", True)
    space = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, *([c.maxnreg] if c.maxnreg else []))
             for c in _flash_config.tma_fwd_configs()}
    assert set(two_per_sm) <= space
    from attnlib.kernels import experimental  # the ladder times exactly the experimental configurations

    for kind in experimental.KINDS:  # (the Gluon ones only where this Triton has Gluon)
        try:
            space = experimental.configs(kind)
        except ImportError:
            continue
        assert tuple(config for _, kernel, config in LADDER if kernel == kind) == space, kind


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the real ladder in tools/gpu_check.sh")
def test_ladder_times_the_warp_specialised_step_where_it_applies():
    """Whole tiles, causal or not: timed and compared with SDPA; a length off its tiles: recorded as not run,
    with the kernel's reason."""
    pytest.importorskip("triton")
    from attnlib.bench.flash import time_ladder

    steps = [("warp-specialized 16x16", "ws", (16, 16, 4, 2))]
    rows = time_ladder((32, 40), head_dim=64, dtype=torch.float16, timer=cpu_timer, device="cpu", steps=steps,
                       tokens=80, model_dim=128)  # H=2; B=2 at 32, B=2 at 40
    ws = {(r["seq_len"], r["causal"]): r for r in rows if r["step"] == steps[0][0]}
    for causal in (False, True):
        row = ws[32, causal]
        assert row["error"] is None and row["rel_error_vs_sdpa_flash"] < 1e-2, row
        assert ws[40, causal]["tflops"] is None and "Lq=40" in ws[40, causal]["error"]


def test_an_experimental_forward_joins_the_grid_only_if_it_beat_the_default_everywhere():
    from attnlib.bench.flash import best_experimental

    default = "TMA, autotuned (the default on Hopper)"
    gluon = "Gluon: softmax during PV 128x128, 8 warps, 2 st"
    loader = "Gluon + loader warp 128x128, 8+1 warps, 2 st."

    def row(step, n, tflops, causal=False, **extra):
        return {"step": step, "seq_len": n, "head_dim": 128, "causal": causal, "tflops": tflops, **extra}

    base = [row(default, 4096, 500.0), row(default, 16384, 520.0)]
    assert best_experimental(base) is None
    assert best_experimental(base + [row(gluon, 4096, 600.0), row(gluon, 16384, 510.0)]) is None  # slower at 16k
    assert best_experimental(base + [row(gluon, 4096, 600.0)]) is None  # did not run at 16k
    assert best_experimental(base + [row(gluon, 4096, 600.0, causal=True), row(gluon, 16384, 600.0)]) is None
    # faster at both: the largest smallest margin wins (1.077 over 1.058, though the other's best margin is larger)
    ladder = base + [row(gluon, 4096, 560.0), row(gluon, 16384, 560.0), row(loader, 4096, 600.0),
                     row(loader, 16384, 550.0)]
    assert best_experimental(ladder) == (gluon, "gluon", (128, 128, 8, 2))
    wrong = [{**r, "rel_error_vs_sdpa_cudnn": 0.5} if r["step"] == gluon and r["seq_len"] == 4096 else r
             for r in ladder]  # an output that disagrees with SDPA's: never timed in the grid
    assert best_experimental(wrong) == (loader, "gluon-ws", (128, 128, 8, 2))
    assert best_experimental([{**r, "tflops": None} if r["step"] == default else r for r in ladder]) is None
    # each mask is judged on its own rows: the causal winner may differ from the full one, or be none
    causal = [row(default, 4096, 400.0, causal=True), row(default, 16384, 450.0, causal=True),
              row(gluon, 4096, 390.0, causal=True), row(gluon, 16384, 500.0, causal=True),
              row(loader, 4096, 420.0, causal=True), row(loader, 16384, 460.0, causal=True)]
    assert best_experimental(ladder + causal, causal=True) == (loader, "gluon-ws", (128, 128, 8, 2))
    assert best_experimental(ladder + causal) == (gluon, "gluon", (128, 128, 8, 2))
    assert best_experimental(ladder, causal=True) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the real grid in tools/gpu_check.sh")
def test_the_grid_times_an_experimental_forward_with_attnlibs_backward():
    """The experimental forward (here the warp-specialised one, which the interpreter runs) in the grid: timed
    forward and forward+backward, compared with SDPA, its gradients attnlib's; shapes it refuses recorded."""
    pytest.importorskip("triton")
    from attnlib.bench.flash import EXPERIMENTAL, _impl, ratios, time_shape

    choice = ("warp-specialized 16x16", "ws", (16, 16, 4, 2))
    shape = {"batch": 1, "heads": 2, "seq_len": 32, "head_dim": 64, "causal": False}
    rows = time_shape(shape, ("attnlib_flash", "sdpa_flash", EXPERIMENTAL), device="cpu", dtype=torch.float16,
                      timer=cpu_timer, experimental=choice)
    timed = {r["mode"]: r for r in rows if r["impl"] == EXPERIMENTAL}
    assert set(timed) == {"fwd", "fwd_bwd"} and all(r["error"] is None and r["tflops"] > 0 for r in timed.values())
    assert timed["fwd"]["rel_error_vs_sdpa_flash"] < 1e-2
    assert ratios(rows)[0]["experimental_vs_sdpa_flash"] > 0
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 32, 64, generator=gen, dtype=torch.float16).requires_grad_() for _ in range(3))
    do = torch.randn(1, 2, 32, 64, generator=gen, dtype=torch.float16)
    grads = torch.autograd.grad(_impl(EXPERIMENTAL, choice)[0](q, k, v, False), (q, k, v), do)
    leaves = [x.detach().float().requires_grad_() for x in (q, k, v)]
    ref = torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(*leaves), leaves, do.float())
    for got, want in zip(grads, ref):
        assert ((got.float() - want).norm() / want.norm()) < 1e-2
    refused = time_shape({**shape, "seq_len": 40}, (EXPERIMENTAL,), device="cpu", dtype=torch.float16,
                         timer=cpu_timer, experimental=choice)
    assert len(refused) == 2 and all(r["tflops"] is None and "Lq=40" in r["error"] for r in refused)
    # one forward per mask: a mask with no winner is recorded as such, the other is timed
    per_mask = {False: None, True: choice}
    rows = [r for causal in (False, True)
            for r in time_shape({**shape, "causal": causal}, (EXPERIMENTAL,), device="cpu", dtype=torch.float16,
                                timer=cpu_timer, experimental=per_mask)]
    assert [r["causal"] for r in rows if r["error"] is None] == [True, True]
    assert all("no experimental forward beat the default one in the ladder with causal=False" in r["error"]
               for r in rows if not r["causal"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the real breakdown in tools/gpu_check.sh")
def test_backward_breakdown_runs_in_the_interpreter():
    """Each backward kernel with each candidate tile computes SDPA's gradients; shares add up; refusals recorded."""
    pytest.importorskip("triton")
    from attnlib.bench.flash import (BACKWARD_PRODUCTS, _backward_error, backward_candidates, backward_lines,
                                     time_backward)

    assert backward_candidates("dK/dV", 128, device="cpu") == [(16, 16, 1, 1)]  # the interpreter's one config
    candidates = {"dK/dV": [(16, 32, 4, 2)], "dQ": [(32, 16, 4, 1), (16, 16, 4, 2)]}
    rows = time_backward((24,), head_dim=16, dtype=torch.float32, timer=cpu_timer, device="cpu",
                         tokens=48, model_dim=32, candidates=candidates,
                         one_pass=[(16, 32, 4, 2)])  # B=2, H=2
    expected = [("delta", "-"), ("dK/dV", "16x32, 4 warps, 2 stages"), ("dK/dV", "autotuned"),
                ("dQ", "32x16, 4 warps, 1 stages"), ("dQ", "16x16, 4 warps, 2 stages"), ("dQ", "autotuned"),
                ("attnlib backward", "autotuned"), ("attnlib backward", "experimental: one pass 16x32, 4 warps, 2 st."),
                ("SDPA cuDNN backward", "-"), ("SDPA flash backward", "-")]
    assert [(r["part"], r["config"]) for r in rows] == expected * 2
    assert [r["causal"] for r in rows] == [False] * 10 + [True] * 10
    for r in rows:
        if r["part"] == "SDPA cuDNN backward":  # no cuDNN on a CPU: recorded, not fatal
            assert r["ms"] is None and r["error"]
            continue
        assert r["error"] is None and r["ms"] > 0, r
        assert (r["tflops"] is None) == (r["part"] == "delta")
        if r["part"] in BACKWARD_PRODUCTS or r["part"] == "attnlib backward":
            assert r["rel_error_vs_sdpa_flash"] < 1e-4, r
            assert r["rel_error_vs_sdpa_cudnn"] is None
    full = {(r["part"], r["config"]): r for r in rows if not r["causal"]}
    # a kernel's rate counts the products it executes: dK/dV 4 per head, dQ 3; the whole backward 5 (2.5x forward)
    per_product = 2 * 2 * 2 * 24 * 24 * 16
    assert full[("dQ", "autotuned")]["tflops"] == pytest.approx(3 * per_product / full[("dQ", "autotuned")]["ms"] / 1e9)
    whole = full[("attnlib backward", "autotuned")]
    assert whole["tflops"] == pytest.approx(5 * per_product / whole["ms"] / 1e9)
    lines = backward_lines(rows)
    assert len(lines) == len(rows) and "did not run (" in lines[8]
    # the kernels' shares are of attnlib's (autotuned) backward, not of an experimental one's
    share = full[("dQ", "autotuned")]["ms"] / whole["ms"]
    assert lines[5].endswith(f"= {share:4.0%} of attnlib's backward")
    # each part is compared with the right ones of SDPA's (dq, dk, dv)
    gq, gk, gv = torch.ones(3), 2 * torch.ones(3), 3 * torch.ones(3)
    assert _backward_error("dK/dV", (gk, gv), (gq, gk, gv)) == 0 and _backward_error("dQ", gq, (gq, gk, gv)) == 0
    assert _backward_error("dK/dV", (gv, gk), (gq, gk, gv)) == pytest.approx(0.5)  # |3-2|/2
    assert _backward_error("attnlib backward", (gq, gk, 2 * gv), (gq, gk, gv)) == pytest.approx(1.0)
    measured = [{"part": p, "config": c, "seq_len": 4096, "causal": False, "head_dim": 128, "ms": ms, "tflops": tf}
                for p, c, ms, tf in (("dK/dV", "autotuned", 3.0, 300.0), ("attnlib backward", "autotuned", 4.0, 350.0))]
    assert backward_lines(measured)[0].endswith("3.000 ms  300.0 TFLOP/s =  75% of attnlib's backward")
    measured[0]["rel_error_vs_sdpa_flash"] = 0.5  # a tile that computes something else is flagged, not hidden
    measured[1]["rel_error_vs_sdpa_flash"] = float("nan")
    lines = backward_lines(measured)
    assert lines[0].endswith("of attnlib's backward WRONG: relative error 0.5 against sdpa_flash")
    assert lines[1].endswith("WRONG: relative error nan against sdpa_flash")
    assert "WRONG" not in "".join(backward_lines(rows))


def _fake_children(monkeypatch, behaviour, events=None):
    """Stand in for the canary's child processes: ``behaviour(code) -> (returncode or None for a hang, stdout,
    stderr)``; ``events`` records each start and wait, and each child's environment."""
    import subprocess

    class Child:
        def __init__(self, args, stdout, stderr, text, env):
            self.code, self.returncode = args[-1], None
            code, out, err = behaviour(self.code)
            stdout.write(out)
            stderr.write(err)
            self.exit_code = code
            if events is not None:
                events.append(("start", env.get("ATTNLIB_FLASH_AUTOTUNE"), env["PYTHONPATH"], self.code))

        def wait(self, timeout=None):
            if events is not None:
                events.append(("wait", timeout))
            if self.exit_code is None and self.returncode is None:
                raise subprocess.TimeoutExpired(cmd="python", timeout=timeout)
            return self.returncode

        def kill(self):
            self.returncode = -9

    def popen(args, **kwargs):
        child = Child(args, **kwargs)
        if child.exit_code is not None:
            child.returncode = child.exit_code
        return child

    monkeypatch.setattr(subprocess, "Popen", popen)


def test_experimental_kernels_are_gated_by_a_child_process(monkeypatch):
    """A hang or an abort of an experimental kernel must cost a child process, not the benchmark's results."""
    import json

    from attnlib.bench import canary
    from attnlib.kernels import experimental

    pytest.importorskip("triton.experimental.gluon")
    keys = [experimental.key(*kernel) for kernel in experimental.candidates()]
    assert keys == ["ws 128x64/4/3", "ws 128x128/4/2", "gluon 128x128/8/2", "gluon 128x64/8/3",
                    "gluon-ws 128x128/8/2", "gluon-ws 128x128/8/3", "gluon-pingpong 128x128/8/2",
                    "gluon-pingpong 128x128/8/3"]

    events = []
    _fake_children(monkeypatch, lambda code: (None, "", ""), events)
    outcome = canary.run_in_child(timeout_s=1)
    assert set(outcome) == set(keys) and all("did not finish in 1 s" in why for why in outcome.values())
    # the children run side by side (all started before the first wait), their references untuned
    n = len(canary.GROUPS)
    assert [e[0] for e in events[:n]] == ["start"] * n and {e[0] for e in events[n:]} == {"wait"}
    assert all(e[1] == "0" for e in events if e[0] == "start")
    assert all(e[1] is None or 0 <= e[1] <= 1 for e in events if e[0] == "wait")  # (None: reaping a killed child)

    # no child outlives the flash suite's share of its budget, whatever the group's own limit
    outcome = canary.run_in_child(budget_s=2)
    assert all("did not finish in 2 s" in why for why in outcome.values())

    _fake_children(monkeypatch, lambda code: (-6, "", "Assertion `false' failed."))
    outcome = canary.run_in_child()
    assert all("exited with status -6" in why and "Assertion" in why for why in outcome.values())

    ran = "compiling...\n" + json.dumps({keys[0]: None, keys[1]: "relative error 0.5"})
    _fake_children(monkeypatch, lambda code: (0, ran, ""))
    outcome = canary.run_in_child()
    assert outcome[keys[0]] is None and "0.5" in outcome[keys[1]] and outcome[keys[2]] == "not run by the child process"

    # Each group has a child of its own: a Gluon kernel that hangs costs only the Gluon rows.
    def gluon_hangs(code):
        if "gluon" in code:  # the child names each case before it runs it: the last one hung
            return None, "", "compiling\n[canary] gluon (128, 128, 8, 2): x causal\n"
        return 0, ran, ""

    _fake_children(monkeypatch, gluon_hangs)
    outcome = canary.run_in_child(timeout_s=2)
    assert outcome[keys[0]] is None and "0.5" in outcome[keys[1]]
    gluon = [outcome[k] for k in keys if k.startswith("gluon")]
    assert gluon and all("did not finish in 2 s" in why and why.endswith("(128, 128, 8, 2): x causal") for why in gluon)

    # A notebook checks only the kernels it is about to run: one child per group asked for, the other verdicts
    # kept; the child finds this attnlib even if the notebook put it on sys.path rather than installing it.
    events.clear()
    _fake_children(monkeypatch, lambda code: (0, json.dumps({"gluon-ws 128x128/8/2": None}), ""), events)
    outcome = canary.run_in_child(kinds=("gluon-ws",))
    assert outcome == {"gluon-ws 128x128/8/2": None, "gluon-ws 128x128/8/3": "not run by the child process"}
    assert len(events) == 2 and "kinds=('gluon-ws',)" in events[0][3]
    assert events[0][2].split(os.pathsep)[0] == str(Path(canary.__file__).resolve().parents[2])


def test_the_benchmark_runs_only_the_experimental_kernels_its_screen_passed(monkeypatch):
    """flash.SCREENED (the verdicts of the suite's screen) gates every experimental forward the suite runs:
    one that failed in its child process is refused with the child's reason; one never tried may run."""
    pytest.importorskip("triton")
    from attnlib.bench import flash

    q = torch.zeros(1, 2, 256, 128, dtype=torch.float16)
    monkeypatch.setattr(flash, "SCREENED", {"ws 128x64/4/3": None, "ws 128x128/4/2": "relative error 0.5"})
    assert callable(flash._experimental_forward("ws", (128, 64, 4, 3), q, q, q, False))  # passed: no error
    with pytest.raises(RuntimeError, match="not run in the benchmark's process: relative error 0.5"):
        flash._experimental_forward("ws", (128, 128, 4, 2), q, q, q, False)
    monkeypatch.setattr(flash, "SCREENED", {})
    assert callable(flash._experimental_forward("ws", (128, 128, 4, 2), q, q, q, False))  # never tried: allowed
    with pytest.raises(ValueError, match="does not handle"):  # a shape it refuses, before any verdict
        flash._experimental_forward("ws", (128, 128, 4, 2), q[:, :, :200], q, q, False)


def test_the_flash_suite_and_the_canary_do_not_import_each_other():
    """Each imports attnlib.kernels.experimental, neither the other: run() is handed its screen."""
    code = ("import sys; import attnlib.bench.{a}; print('attnlib.bench.{b}' in sys.modules)")
    for a, b in (("flash", "canary"), ("canary", "flash")):
        done = subprocess.run([sys.executable, "-c", code.format(a=a, b=b)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "False", (a, b, done.stdout, done.stderr[-1000:])


def test_the_gluon_check_compares_every_case_and_locates_a_wrong_quarter(monkeypatch):
    """gluon_errors on the CPU, with plain-torch stand-ins for both kernels (the real ones need a GPU)."""
    import math

    from attnlib.bench import canary
    from attnlib.kernels import flash
    from attnlib.kernels.experimental import gluon

    def attention(q, k, v, causal, scale, config=None):  # -> (o, base-2 lse (B*H, Lq)), bottom-right causal
        group = q.shape[1] // k.shape[1]
        k, v = (x.float().repeat_interleave(group, 1) for x in (k, v))
        s = q.float() @ k.transpose(-1, -2) * scale
        if causal:
            lq, lk = s.shape[-2:]
            s = s.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(lk - lq + 1), float("-inf"))
        lse = torch.logsumexp(s, -1)
        return (torch.softmax(s, -1) @ v).to(q.dtype), (lse / math.log(2)).flatten(0, 1)

    def broken(q, k, v, causal, scale, config=None):  # wrong in the lower rows of the first tile's left columns
        o, lse = attention(q, k, v, causal, scale)
        o[0, 0, 64:128, : q.shape[-1] // 2] += 1.0
        return o, lse

    monkeypatch.setattr(flash, "_forward", attention)
    monkeypatch.setattr(gluon, "flash_fwd_gluon", attention)
    right = canary.gluon_errors((128, 128, 8, 2), device="cpu")
    assert len(right) == 7 and all(o < 1e-2 and lse < 1e-5 for o, lse, _ in right.values()), right
    assert canary.gluon_verdict(right, 2e-2) is None
    assert len(canary.gluon_errors((128, 64, 8, 3), device="cpu")) == 5  # causal needs a square tile
    monkeypatch.setattr(gluon, "flash_fwd_gluon", broken)
    verdict = canary.gluon_verdict(canary.gluon_errors((128, 128, 8, 2), device="cpu"), 2e-2)
    upper_left, upper_right, lower_left, lower_right = (float(x) for x in verdict.split(": ")[-1].replace("/", "")
                                                       .split())
    assert "first wrong case (bfloat16 D=128 1:1 heads Lq=128 Lk=128)" in verdict
    assert lower_left > 0.5 and max(upper_left, upper_right, lower_right) < 1e-2, verdict


def test_a_failed_gluon_check_names_its_cases():
    from attnlib.bench.canary import gluon_verdict

    fine = {"bfloat16 D=128 2:2 heads Lq=1024 Lk=1024": (3e-3, 1e-6), "x causal": (4e-3, 2e-6)}
    assert gluon_verdict(fine, 2e-2) is None
    wrong = {**fine, "x causal": (0.4, 1e-6)}
    assert gluon_verdict(wrong, 2e-2) == ("relative error 0.4; (output/LSE) by case: "
                                         "bfloat16 D=128 2:2 heads Lq=1024 Lk=1024 0.003/1e-06, x causal 0.4/1e-06")
    assert gluon_verdict({"x": (float("nan"), 0.0)}, 2e-2).startswith("relative error nan")
    assert gluon_verdict({}, 2e-2) == "no case of the check applies to this configuration"
    # with the quarters of the first query tile, the first wrong case says which quarter is wrong
    quartered = {"one tile": (1e-3, 1e-6, (1e-3,) * 4), "two tiles": (0.3, 1e-6, (1e-3, 1e-3, 0.6, 0.5))}
    assert gluon_verdict(quartered, 2e-2).endswith(
        "first wrong case (two tiles), its first query tile's quarters (rows upper/lower x columns left/right): "
        "0.001 0.001 / 0.6 0.5")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the child process")
def test_the_child_checks_each_experimental_kernel_in_the_interpreter():
    pytest.importorskip("triton")
    from attnlib.bench import canary

    outcome = canary.child(device="cpu", dtype=torch.float16, seq_len=128)
    # every kernel the interpreter can run matched; the Gluon kernel is recorded as not run, with why
    from attnlib.kernels import experimental

    assert outcome == {experimental.key(*kernel): None if not kernel[0].startswith("gluon") else
                       "not run: Gluon kernels need a GPU (no interpreter)" for kernel in experimental.candidates()}
    # a group's child runs its own kinds only
    only = canary.child(device="cpu", dtype=torch.float16, seq_len=128, kinds=("gluon-ws",))
    assert set(only) == {k for k in outcome if k.startswith("gluon-ws ")}


def test_progress_prints_a_line_per_item_and_a_summary():
    import io

    from attnlib.bench.timing import progress

    out = io.StringIO()
    assert list(progress([{"N": 4096}, {"N": 16384}], "flash grid", describe=lambda s: f"N={s['N']}",
                         stream=out)) == [{"N": 4096}, {"N": 16384}]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[attnlib.bench] flash grid 1/2: N=4096 (")
    assert lines[1].startswith("[attnlib.bench] flash grid 2/2: N=16384 (")
    assert lines[2].startswith("[attnlib.bench] flash grid: 2 items in ")
