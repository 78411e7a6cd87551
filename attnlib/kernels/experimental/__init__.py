"""Experimental Hopper kernels: written, compiled for sm_90, and never yet run on a GPU.

Nothing in :func:`attnlib.kernels.flash_attention`'s path imports this package. These kernels try the
ideas the production forward (:mod:`attnlib.kernels._flash_fwd_tma`) lacks: its loop is serialised
(each tile's softmax waits for that tile's :math:`QK^\\top`), and FlashAttention-3 (background, not a
seed) overlaps the two with warp specialisation and asynchronous matrix products. The benchmark
(:mod:`attnlib.bench.flash`'s ladder, ``tools/gpu_forward_target.py``) imports them itself, after a
child process has checked each one's output (:mod:`attnlib.bench.canary`). A kernel that a measured
run shows correct and faster than the TMA forward is *promoted*: moved into the production path,
with its tests, and dispatched there; none has been.

* ``"ws"`` (:mod:`.fwd_ws`): Triton's automatic warp specialisation, a producer warp group that
  only loads (it runs in the interpreter too);
* ``"gluon"`` (:mod:`.gluon`, with the helpers the Gluon kernels share): the next tile's
  :math:`QK^\\top` in flight during this tile's softmax, written in Gluon (explicit barriers, wgmma);
* ``"gluon-ws"`` (:mod:`.gluon_ws`): the same with one warp that only issues the copies;
* ``"gluon-pingpong"`` (:mod:`.gluon_pingpong`): and two consumer warp groups of 64 query rows
  taking turns at the tensor cores, FlashAttention-3's schedule.

The one-pass backward (FlashAttention-2's: dQ by atomic adds inside the dK/dV kernel) is
:mod:`.one_pass_bwd`. What the compiler says of each (registers, spills, shared memory, programs per
SM) is in ``attnlib/bench/NOTES.md``; every kernel here takes only some inputs (whole tiles, half
precision, head dim 64 or 128), and :func:`unhandled` says in words what a call asks for that a
kernel lacks.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

__all__ = ["KINDS", "candidates", "configs", "forward", "gluon_forwards", "key", "unhandled"]

KINDS = ("ws", "gluon", "gluon-ws", "gluon-pingpong")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def gluon_forwards() -> dict:
    """``{kind: (forward, configurations)}`` of the Gluon forwards (imported on demand: Gluon needs Triton 3.6+)."""
    from .gluon import GLUON_CONFIGS, flash_fwd_gluon
    from .gluon_pingpong import GLUON_PINGPONG_CONFIGS, flash_fwd_gluon_pingpong
    from .gluon_ws import GLUON_WS_CONFIGS, flash_fwd_gluon_ws

    return {"gluon": (flash_fwd_gluon, GLUON_CONFIGS), "gluon-ws": (flash_fwd_gluon_ws, GLUON_WS_CONFIGS),
            "gluon-pingpong": (flash_fwd_gluon_pingpong, GLUON_PINGPONG_CONFIGS)}


def configs(kind: str) -> tuple:
    """The ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` tiles the benchmark times for the forward ``kind``."""
    _check_kind(kind)
    if kind == "ws":
        from .fwd_ws import WS_CONFIGS

        return WS_CONFIGS
    return gluon_forwards()[kind][1]


def candidates() -> list[tuple[str, tuple]]:
    """``(kind, config)`` of every experimental forward the benchmark times (the Gluon ones only where this
    Triton has Gluon: 3.6 or newer)."""
    found = [("ws", config) for config in configs("ws")]
    try:
        found += [(kind, config) for kind, (_, space) in gluon_forwards().items() for config in space]
    except ImportError:  # a Triton without Gluon
        pass
    return found


def key(kind: str, config) -> str:
    """``"<kind> BMxBN/warps/stages"``: how the canary's verdicts and the benchmark's rows name a kernel."""
    _check_kind(kind)
    return f"{kind} {config[0]}x{config[1]}/{config[2]}/{config[3]}"


def unhandled(kind: str, config: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> list[str]:
    """What the forward ``kind`` at tile ``config`` does not handle for q/k/v ``(B, H, L, D)``, in words
    (empty: it handles them). Checks the inputs only: whether this machine can run the kernel is the
    caller's question (Hopper for every kind; the interpreter runs ``"ws"`` alone)."""
    _check_kind(kind)
    block_m, block_n = config[0], config[1]
    if kind == "ws":
        from .fwd_ws import unhandled as ws_unhandled

        return ws_unhandled(q, k, causal, block_m, block_n, v)
    from .gluon import unhandled as gluon_unhandled  # (imports Gluon: Triton 3.6 or newer)

    problems = gluon_unhandled(q, k, causal, block_m, block_n, v)
    if kind == "gluon-pingpong" and (block_m != 128 or config[2] != 8):
        problems.append(f"config {config} (two warp groups of 64 rows: BLOCK_M=128 and num_warps=8)")
    return problems


def forward(kind: str, config: tuple) -> Callable:
    """The forward ``kind`` at tile ``config``: ``(q, k, v, causal, scale) -> (o, lse2)`` with q/k/v
    ``(B, H, L, D)``, o like q and the base-2 log-sum-exp ``(B*H, Lq)`` in float32, as
    ``attnlib.kernels.flash._forward`` returns them (so that it fits flash_attention's backward)."""
    _check_kind(kind)
    if kind == "ws":
        from .fwd_ws import flash_fwd_ws

        return partial(flash_fwd_ws, config=config)
    return partial(gluon_forwards()[kind][0], config=config)
