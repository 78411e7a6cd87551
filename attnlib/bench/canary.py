"""Run the experimental kernels once in a child process before the benchmark runs them in its own.

The experimental Hopper kernels (:mod:`attnlib.kernels._flash_fwd_ws`, :mod:`._flash_bwd_ws`)
are new code on a new compiler path (warp specialisation). A deadlock in warp-specialised
code, or a compiler assertion (an abort, not a Python exception), inside the flash suite
would cost the suite's whole result file. So :func:`run_in_child` first runs each of them
once in a child Python, on random input, against SDPA's output or attnlib's own dK/dV, with
a time limit; :func:`gate` then lets the benchmark run only those that passed (a kernel the
child never tried, as in the interpreter tests, may run).
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

__all__ = ["run_in_child", "gate", "experimental_kernels", "key"]

_OUTCOME: dict = {}  # key -> None (ran in the child and matched) or why it may not run here


def key(kind: str, config, warp_specialize: bool) -> str:
    """``"<kind> BMxBN/warps/stages[/ws]"``, kind ``"ws"`` (forward) or ``"dkdv-ws"``."""
    return f"{kind} {config[0]}x{config[1]}/{config[2]}/{config[3]}" + ("/ws" if warp_specialize else "")


def experimental_kernels() -> list[tuple[str, tuple, bool]]:
    """``(kind, config, warp_specialize)`` of every experimental kernel the flash suite times."""
    from ..kernels._flash_bwd_ws import DKDV_WS_CONFIGS
    from ..kernels._flash_fwd_ws import WS_CONFIGS

    return [("ws", config, True) for config in WS_CONFIGS] + [("dkdv-ws", c, ws) for _, c, ws in DKDV_WS_CONFIGS]


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
            else:
                got = dkdv_ws(q, k, v, do, lse, delta, False, scale, config=config, warp_specialize=ws)
                errors = [_rel(a, b) for a, b in zip(got, ref_dkdv)]
            if device == "cuda":
                torch.cuda.synchronize()  # a kernel that faults or hangs does it here, in the child
            result[key(kind, config, ws)] = None if max(errors) < _CHECK_TOL else f"relative error {max(errors):.3g}"
        except Exception as e:  # noqa: BLE001 - reported to the parent
            result[key(kind, config, ws)] = f"{type(e).__name__}: {str(e)[:200]}"
    return result


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
