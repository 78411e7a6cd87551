"""Run the experimental kernels once in a child process before a benchmark runs them in its own.

The experimental Hopper forwards (:mod:`attnlib.kernels.experimental`) are new code on new
compiler paths (warp specialisation; Gluon's explicit barriers). A deadlock, or a compiler
assertion (an abort, not a Python exception), inside the flash suite would cost the suite's whole
result file. So :func:`run_in_child` first runs each of them in a child Python, on random input,
against SDPA's output or attnlib's own forward, with a time limit, and returns the verdicts
(``{experimental.key(kind, config): None or why not}``); the caller (the flash suite's ``screen``,
``tools/gpu_forward_target.py``) times only those that passed. This module imports no benchmark suite.

The Gluon forward has no interpreter to run in on a CPU: this child is the only place its
results are checked, so it gets several cases (causal, grouped K/V, head dim 64, float16,
its log-sum-exp), not one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["run_in_child", "gluon_errors", "gluon_verdict", "GROUPS"]


# Each group runs in a child of its own, with its own time limit in seconds: a hang of one Gluon kernel
# (a barrier waited on with the wrong phase never completes) must not cost the other kernels their
# measurements. The children run side by side: a hang costs the flash suite its child's limit, no more.
GROUPS = ((("ws",), 120), (("gluon",), 60), (("gluon-ws",), 60), (("gluon-pingpong",), 60))


def child(device: str = "cuda", dtype=torch.bfloat16, seq_len: int = 1024, kinds=None) -> dict:
    """In the child: each experimental forward (of ``kinds``, default all) once on random input
    (B=1, H=2, N=seq_len, D=128); ``{experimental.key: None or the reason it failed}``."""
    from ..kernels import experimental, flash
    from ..kernels.experimental.fwd_ws import flash_fwd_ws
    from .compare import CHECK_TOL as _CHECK_TOL  # the flash suite's comparison and its bfloat16 tolerance
    from .compare import rel_error as _rel

    gen = torch.Generator(device=device).manual_seed(5)
    q, k, v = (torch.randn(1, 2, seq_len, 128, device=device, dtype=dtype, generator=gen) for _ in range(3))
    scale = 128 ** -0.5
    if kinds is None or "ws" in kinds:  # the references the warp-specialised forward needs
        ref_o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        ref_causal_o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # square: same
        # causal with 256 more keys than queries: the diagonal moves right (attnlib's own forward as the reference)
        k_long, v_long = torch.cat([k, k[:, :, :256]], 2), torch.cat([v, v[:, :, :256]], 2)
        ref_long_o = flash._forward(q, k_long, v_long, True, scale)[0]
    result = {}
    for kind, config in experimental.candidates():
        if kinds is not None and kind not in kinds:
            continue
        name = experimental.key(kind, config)
        try:
            if kind == "ws":
                errors = [_rel(flash_fwd_ws(q, k, v, False, scale, config=config)[0], ref_o),
                          _rel(flash_fwd_ws(q, k, v, True, scale, config=config)[0], ref_causal_o),
                          _rel(flash_fwd_ws(q, k_long, v_long, True, scale, config=config)[0], ref_long_o)]
            else:
                if device != "cuda":  # no interpreter for Gluon: nothing to learn off a GPU
                    result[name] = "not run: Gluon kernels need a GPU (no interpreter)"
                    continue
                result[name] = gluon_verdict(gluon_errors(config, device, gen, kind=kind), _CHECK_TOL)
                continue
            if device == "cuda":
                torch.cuda.synchronize()  # a kernel that faults or hangs does it here, in the child
            result[name] = None if max(errors) < _CHECK_TOL else f"relative error {max(errors):.3g}"
        except Exception as e:  # noqa: BLE001 - reported to the parent
            result[name] = f"{type(e).__name__}: {str(e)[:200]}"
    return result


def gluon_errors(config, device: str = "cuda", gen=None, kind: str = "gluon") -> dict:
    """``{case: (error of the output, error of the log-sum-exp, errors of the first query tile's quarters)}``,
    each relative (in norm), of the Gluon
    forward of ``kind`` (``experimental.gluon_forwards``) against attnlib's own forward
    (tested under the interpreter and on GPUs), in every case this
    ``config`` handles: one, two and five key tiles, then bfloat16 D=128 full and causal, grouped K/V
    (4 query heads on 2), float16 D=64 causal with more keys than queries (the diagonal offset), each
    with one row of large logits (the online softmax must rescale)."""
    from ..kernels import flash
    from ..kernels.experimental import gluon, gluon_forwards
    from .compare import rel_error as _rel

    # (the plain kernel looked up on its module at call time, so that a test may stand in for it)
    forward = gluon.flash_fwd_gluon if kind == "gluon" else gluon_forwards()[kind][0]
    unhandled = gluon.unhandled
    gen = gen or torch.Generator(device=device).manual_seed(11)
    block_m, block_n = config[0], config[1]
    cases = [  # (batch, heads, K/V heads, Lq, Lk, head dim, dtype, causal)
        # smallest first, so that the first wrong (or hung) case says which part is wrong: one key tile (no
        # loop: copies, products, epilogue), two (one loop step), five (each slot refilled, phases flip twice)
        (1, 1, 1, 128, 128, 128, torch.bfloat16, False),
        (1, 1, 1, 128, 256, 128, torch.bfloat16, False),
        (1, 1, 1, 128, 640, 128, torch.bfloat16, False),
        (1, 2, 2, 1024, 1024, 128, torch.bfloat16, False),
        (1, 2, 2, 1024, 1024, 128, torch.bfloat16, True),
        (2, 4, 2, 512, 768, 128, torch.bfloat16, False),
        (1, 2, 2, 256, 768, 64, torch.float16, True),
    ]
    errors = {}
    for b, h, hk, lq, lk, d, dtype, causal in cases:
        q = torch.randn(b, h, lq, d, device=device, dtype=dtype, generator=gen)
        k, v = (torch.randn(b, hk, lk, d, device=device, dtype=dtype, generator=gen) for _ in range(2))
        q[0, 0, 5] *= 30  # large logits in one row
        if unhandled(q, k, causal, block_m, block_n):
            continue
        case = f"{str(dtype)[6:]} D={d} {h}:{hk} heads Lq={lq} Lk={lk}{' causal' if causal else ''}"
        print(f"[canary] {forward.__name__} {config}: {case}", file=sys.stderr, flush=True)  # names a hang
        o, lse = forward(q, k, v, causal, d ** -0.5, config=config)
        ref_o, ref_lse = flash._forward(q, k, v, causal, d ** -0.5)
        rows, cols = min(128, lq) // 2, d // 2  # the first query tile's two warp groups' rows x two column halves
        quarters = tuple(_rel(o[0, 0, r:r + rows, c:c + cols], ref_o[0, 0, r:r + rows, c:c + cols])
                         for r in (0, rows) for c in (0, cols))
        errors[case] = (_rel(o, ref_o), _rel(lse, ref_lse), quarters)
    return errors


def gluon_verdict(by_case: dict, tol: float):
    """None if every error of :func:`gluon_errors` is below ``tol``; else the worst, every case's
    (output/LSE) errors, and for the first wrong case the errors of its first query tile's quarters
    (upper/lower rows: the two warp groups; left/right columns: the two halves each tile copy is split
    into), so that a failed GPU run says where to look (one tile or many? causal? one warp group?)."""
    worst_of = lambda values: max(values, key=lambda e: float("inf") if e != e else e)  # noqa: E731 - NaN worst
    errors = [e for found in by_case.values() for e in found[:2]]
    if not errors:
        return "no case of the check applies to this configuration"
    worst = worst_of(errors)
    if worst < tol:
        return None
    text = f"relative error {worst:.3g}; (output/LSE) by case: " + ", ".join(
        f"{case} {found[0]:.2g}/{found[1]:.2g}" for case, found in by_case.items())
    wrong = [(case, found) for case, found in by_case.items() if not worst_of(found[:2]) < tol]
    if len(wrong[0][1]) > 2:
        upper_left, upper_right, lower_left, lower_right = wrong[0][1][2]
        text += (f"; first wrong case ({wrong[0][0]}), its first query tile's quarters (rows upper/lower x "
                 f"columns left/right): {upper_left:.2g} {upper_right:.2g} / {lower_left:.2g} {lower_right:.2g}")
    return text


def run_in_child(timeout_s: float | None = None, budget_s: float | None = None, kinds=None) -> dict:
    """Run :func:`child` in a child Python per group of :data:`GROUPS`, all side by side, each with its time
    limit (or ``timeout_s``) and none longer than ``budget_s``; return ``{experimental.key(kind, config):
    None (matched) or why not}`` for every experimental forward (of ``kinds``, default all).

    The children only check results, so they may share the GPU (a kernel that hangs in one leaves the others
    their time slices) and the CPU (each compiles its own kernels): the whole check takes as long as its
    slowest child, not the sum. Their references run one configuration each (``ATTNLIB_FLASH_AUTOTUNE=0``):
    a tuning run per new shape would cost a child its time limit and teach nothing about correctness.
    """
    from ..kernels import experimental

    kernels = [kernel for kernel in experimental.candidates() if kinds is None or kernel[0] in kinds]
    # (the child imports this attnlib, whether it was installed or put on sys.path by a notebook)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "ATTNLIB_FLASH_AUTOTUNE": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    children = []
    for group, limit in GROUPS:
        limit = limit if timeout_s is None else timeout_s
        limit = limit if budget_s is None else min(limit, budget_s)
        keys = [experimental.key(*kernel) for kernel in kernels if kernel[0] in group]
        if not keys:
            continue
        code = f"import json; from attnlib.bench.canary import child; print(json.dumps(child(kinds={group!r})))"
        stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # no pipe to fill and block
        process = subprocess.Popen([sys.executable, "-c", code], stdout=stdout, stderr=stderr, text=True, env=env)
        children.append((keys, limit, process, stdout, stderr))
    started = time.monotonic()
    result = {}
    for keys, limit, process, stdout, stderr in children:
        try:
            process.wait(timeout=max(0.0, started + limit - time.monotonic()))
            finished = True
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            finished = False
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().strip(), stderr.read().strip()
        stdout.close()
        stderr.close()
        lines = out.splitlines()
        if not finished:
            last = err.splitlines()[-1][:200] if err else "nothing"
            result.update({k: f"the child process did not finish in {limit:.0f} s (a hang?); its last line: {last}"
                           for k in keys})
        elif process.returncode == 0 and lines:
            found = json.loads(lines[-1])
            result.update({k: found[k] for k in keys if k in found})
        else:
            reason = f"the child process exited with status {process.returncode}: {err[-200:]}"
            result.update({k: reason for k in keys})
    return {experimental.key(*kernel): result.get(experimental.key(*kernel), "not run by the child process")
            for kernel in kernels}
