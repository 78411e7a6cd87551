"""Run the experimental kernels once in a child process before the benchmark runs them in its own.

The experimental Hopper kernels (:mod:`attnlib.kernels._flash_fwd_ws`, :mod:`._flash_bwd_ws`,
:mod:`._flash_fwd_gluon`) are new code on new compiler paths (warp specialisation; Gluon's
explicit barriers). A deadlock, or a compiler assertion (an abort, not a Python exception),
inside the flash suite would cost the suite's whole result file. So :func:`run_in_child`
first runs each of them in a child Python, on random input, against SDPA's output or
attnlib's own kernels, with a time limit; :func:`gate` then lets the benchmark run only those
that passed (a kernel the child never tried, as in the interpreter tests, may run).

The Gluon forward has no interpreter to run in on a CPU: this child is the only place its
results are checked, so it gets several cases (causal, grouped K/V, head dim 64, float16,
its log-sum-exp), not one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

__all__ = ["run_in_child", "gate", "experimental_kernels", "key"]

_OUTCOME: dict = {}  # key -> None (ran in the child and matched) or why it may not run here


def key(kind: str, config, warp_specialize: bool) -> str:
    """``"<kind> BMxBN/warps/stages[/ws]"``, kind ``"ws"`` (forward), ``"dkdv-ws"`` or ``"gluon"``."""
    return f"{kind} {config[0]}x{config[1]}/{config[2]}/{config[3]}" + ("/ws" if warp_specialize else "")


def experimental_kernels() -> list[tuple[str, tuple, bool]]:
    """``(kind, config, warp_specialize)`` of every experimental kernel the flash suite times."""
    from ..kernels._flash_bwd_ws import DKDV_WS_CONFIGS
    from ..kernels._flash_fwd_gluon import GLUON_CONFIGS
    from ..kernels._flash_fwd_ws import WS_CONFIGS

    return ([("ws", config, True) for config in WS_CONFIGS] + [("dkdv-ws", c, ws) for _, c, ws in DKDV_WS_CONFIGS]
            + [("gluon", config, False) for config in GLUON_CONFIGS])


def gate(kind: str, config, warp_specialize: bool) -> None:
    """Raise if the child tried this kernel and it failed."""
    reason = _OUTCOME.get(key(kind, config, warp_specialize))
    if reason is not None:
        raise RuntimeError(f"not run in the benchmark's process: {reason}")


def child(device: str = "cuda", dtype=torch.bfloat16, seq_len: int = 1024) -> dict:
    """In the child: each experimental kernel once on random input (B=1, H=2, N=seq_len, D=128);
    ``{key: None or the reason it failed}``."""
    from ..kernels import flash
    from ..kernels._flash_bwd_ws import dkdv_ws
    from ..kernels._flash_fwd_ws import flash_fwd_ws
    from .flash import _CHECK_TOL, _rel  # the flash suite's comparison and its bfloat16 tolerance

    gen = torch.Generator(device=device).manual_seed(5)
    q, k, v, do = (torch.randn(1, 2, seq_len, 128, device=device, dtype=dtype, generator=gen) for _ in range(4))
    scale = 128 ** -0.5
    o, lse = flash._forward(q, k, v, False, scale)
    delta = flash._backward_delta(o, do)
    ref_o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ref_dkdv = flash._backward_dkdv(q, k, v, do, lse, delta, False, scale)
    result = {}
    for kind, config, ws in experimental_kernels():
        try:
            if kind == "ws":
                errors = [_rel(flash_fwd_ws(q, k, v, False, scale, config=config)[0], ref_o)]
            elif kind == "gluon":
                if device != "cuda":  # no interpreter for Gluon: nothing to learn off a GPU
                    result[key(kind, config, ws)] = "not run: Gluon kernels need a GPU (no interpreter)"
                    continue
                errors = gluon_errors(config, device, gen)
            else:
                got = dkdv_ws(q, k, v, do, lse, delta, False, scale, config=config, warp_specialize=ws)
                errors = [_rel(a, b) for a, b in zip(got, ref_dkdv)]
            if device == "cuda":
                torch.cuda.synchronize()  # a kernel that faults or hangs does it here, in the child
            result[key(kind, config, ws)] = None if max(errors) < _CHECK_TOL else f"relative error {max(errors):.3g}"
        except Exception as e:  # noqa: BLE001 - reported to the parent
            result[key(kind, config, ws)] = f"{type(e).__name__}: {str(e)[:200]}"
    return result


def gluon_errors(config, device: str = "cuda", gen=None) -> list[float]:
    """Relative errors (in norm) of the Gluon forward's output and log-sum-exp against attnlib's own
    forward (tested under the interpreter and on GPUs), in every case this ``config`` handles: bfloat16
    D=128 full and causal, grouped K/V (4 query heads on 2), float16 D=64 causal with more keys than
    queries (the diagonal offset), and one row of large logits (the online softmax must rescale)."""
    from ..kernels import flash
    from ..kernels._flash_fwd_gluon import flash_fwd_gluon, unhandled
    from .flash import _rel

    gen = gen or torch.Generator(device=device).manual_seed(11)
    block_m, block_n = config[0], config[1]
    cases = [  # (batch, heads, K/V heads, Lq, Lk, head dim, dtype, causal)
        (1, 2, 2, 1024, 1024, 128, torch.bfloat16, False),
        (1, 2, 2, 1024, 1024, 128, torch.bfloat16, True),
        (2, 4, 2, 512, 768, 128, torch.bfloat16, False),
        (1, 2, 2, 256, 768, 64, torch.float16, True),
    ]
    errors = []
    for b, h, hk, lq, lk, d, dtype, causal in cases:
        q = torch.randn(b, h, lq, d, device=device, dtype=dtype, generator=gen)
        k, v = (torch.randn(b, hk, lk, d, device=device, dtype=dtype, generator=gen) for _ in range(2))
        q[0, 0, 5] *= 30  # large logits in one row
        if unhandled(q, k, causal, block_m, block_n):
            continue
        o, lse = flash_fwd_gluon(q, k, v, causal, d ** -0.5, config=config)
        ref_o, ref_lse = flash._forward(q, k, v, causal, d ** -0.5)
        errors += [_rel(o, ref_o), _rel(lse, ref_lse)]
    return errors


def run_in_child(timeout_s: float = 180) -> dict:
    """Run :func:`child` in a child Python; remember (and return) which experimental kernels may run."""
    keys = [key(*kernel) for kernel in experimental_kernels()]
    code = "import json; from attnlib.bench.canary import child; print(json.dumps(child()))"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s)
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            result = json.loads(lines[-1])
        else:
            reason = f"the child process exited with status {done.returncode}: {done.stderr.strip()[-200:]}"
            result = {k: reason for k in keys}
    except subprocess.TimeoutExpired:
        result = {k: f"the child process did not finish in {timeout_s:.0f} s (a hang?)" for k in keys}
    _OUTCOME.clear()
    _OUTCOME.update({k: result.get(k, "not run by the child process") for k in keys})
    return dict(_OUTCOME)
