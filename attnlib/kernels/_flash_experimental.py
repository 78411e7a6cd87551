"""The experimental Hopper forwards behind one interface, and the slot that would make one the default.

Four forwards are written for Hopper GPUs and timed by the benchmark's ladder
(:data:`attnlib.bench.flash.LADDER`) but not used by :func:`attnlib.kernels.flash_attention`:

* ``"ws"``: Triton's own warp specialisation (:mod:`._flash_fwd_ws`; runs in the interpreter too);
* ``"gluon"``: the next tile's scores in flight during this tile's softmax (:mod:`._flash_fwd_gluon`);
* ``"gluon-ws"``: the same with a warp that only loads (:mod:`._flash_fwd_gluon_ws`);
* ``"gluon-pingpong"``: and two consumer warp groups taking turns (:mod:`._flash_fwd_gluon_pingpong`).

Each takes only some inputs (whole tiles, half precision, head dim 64 or 128; the Gluon ones causal
only with square tiles and Lk >= Lq): :func:`unhandled` says in words what a call asks for that a kernel lacks.

:data:`HOPPER_FORWARD` is empty: no measured run has yet shown one of them correct and faster than
the descriptor (TMA) kernel. If one does (the flash suite's ``experimental_in_grid``: for a mask, faster
than the TMA kernel at N = 4k and 16k, outputs agreeing with SDPA's, then timed over the grid's shapes
of that mask), naming it there as ``{causal: (kind, config)}`` (the suite prints the line to paste)
makes ``kernel="auto"`` run it on Hopper for every input of that mask it handles, the TMA kernel for
the rest, and the TMA kernel from then on if it ever raises. The two masks are chosen apart: a
forward that wins without a mask may lose with one (the warp-specialised kernel masks every tile).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch

__all__ = ["KINDS", "HOPPER_FORWARD", "hopper_forward", "unhandled", "forward", "gluon_forwards"]

KINDS = ("ws", "gluon", "gluon-ws", "gluon-pingpong")

# {causal: (kind, (BLOCK_M, BLOCK_N, num_warps, num_stages))}: the forward "auto" takes on Hopper for
# inputs without a causal mask (False) and with one (True); a mask not named keeps the TMA kernel.
HOPPER_FORWARD: dict = {}


def hopper_forward(causal: bool) -> Optional[tuple]:
    """``(kind, config)`` that :data:`HOPPER_FORWARD` names for this mask, or None; a malformed entry is a
    ``ValueError`` naming what was expected (it is edited by hand after a GPU run)."""
    if not isinstance(HOPPER_FORWARD, dict) or not all(isinstance(c, bool) for c in HOPPER_FORWARD):
        raise ValueError("HOPPER_FORWARD must be a dict {causal (bool): (kind, config)}, got "
                         f"{HOPPER_FORWARD!r}")
    choice = HOPPER_FORWARD.get(causal)
    if choice is None:
        return None
    if not (isinstance(choice, tuple) and len(choice) == 2 and isinstance(choice[1], tuple)):
        raise ValueError(f"HOPPER_FORWARD[{causal}] must be (kind, (BLOCK_M, BLOCK_N, num_warps, num_stages)), "
                         f"got {choice!r}")
    _check_kind(choice[0])
    return choice


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def unhandled(kind: str, config: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> list[str]:
    """What the forward ``kind`` at tile ``config`` does not handle for q/k/v ``(B, H, L, D)``, in words
    (empty: it handles them). Checks the inputs only: whether this machine can run the kernel is
    :func:`forward`'s caller's question (Hopper for every kind; the interpreter runs ``"ws"`` alone)."""
    _check_kind(kind)
    block_m, block_n = config[0], config[1]
    if kind == "ws":
        from ._flash_fwd_ws import unhandled as ws_unhandled

        return ws_unhandled(q, k, causal, block_m, block_n, v)
    from ._flash_fwd_gluon import unhandled as gluon_unhandled  # (imports Gluon: Triton 3.6 or newer)

    problems = gluon_unhandled(q, k, causal, block_m, block_n, v)
    if kind == "gluon-pingpong" and (block_m != 128 or config[2] != 8):
        problems.append(f"config {config} (two warp groups of 64 rows: BLOCK_M=128 and num_warps=8)")
    return problems


def forward(kind: str, config: tuple) -> Callable:
    """The forward ``kind`` at tile ``config``: ``(q, k, v, causal, scale) -> (o, lse2)`` with q/k/v
    ``(B, H, L, D)``, o like q and the base-2 log-sum-exp ``(B*H, Lq)`` in float32, as
    :func:`attnlib.kernels.flash._forward` returns them (so it fits flash_attention's backward)."""
    _check_kind(kind)
    if kind == "ws":
        from ._flash_fwd_ws import flash_fwd_ws

        return partial(flash_fwd_ws, config=config)
    return partial(gluon_forwards()[kind][0], config=config)


def gluon_forwards() -> dict:
    """``{kind: (forward, configurations)}`` of the Gluon forwards (imported on demand: Gluon needs Triton 3.6+)."""
    from ._flash_fwd_gluon import GLUON_CONFIGS, flash_fwd_gluon
    from ._flash_fwd_gluon_pingpong import GLUON_PINGPONG_CONFIGS, flash_fwd_gluon_pingpong
    from ._flash_fwd_gluon_ws import GLUON_WS_CONFIGS, flash_fwd_gluon_ws

    return {"gluon": (flash_fwd_gluon, GLUON_CONFIGS), "gluon-ws": (flash_fwd_gluon_ws, GLUON_WS_CONFIGS),
            "gluon-pingpong": (flash_fwd_gluon_pingpong, GLUON_PINGPONG_CONFIGS)}
