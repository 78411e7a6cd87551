r"""FlashAttention in Triton: exact attention without the :math:`L_q \times L_k` matrix, forward and backward.

.. math:: O = \operatorname{softmax}(\text{scale}\; Q K^\top + B)\, V

computed tile by tile with the online softmax (forward) and recomputed from the
saved log-sum-exp (backward), as in FlashAttention (Dao et al., 2022) and
FlashAttention-2 (Dao, 2023) (*background, not seeds*). The kernels are in
:mod:`attnlib.kernels._flash_fwd` (with a tensor-descriptor variant for Hopper GPUs in
:mod:`attnlib.kernels._flash_fwd_tma`) and :mod:`attnlib.kernels._flash_bwd`; this module
checks the arguments, lays the tensors out and wraps both passes in a
:class:`torch.autograd.Function`.

Shapes: ``q`` is ``(..., Hq, Lq, D)``, ``k`` and ``v`` are ``(..., Hkv, Lk, D)`` with the
same leading dims; ``Hkv`` must divide ``Hq`` (grouped-query attention: query head
``h`` reads K/V head ``h // (Hq // Hkv)``). 2-D ``(L, D)`` and 3-D ``(H, L, D)`` inputs
are accepted. Head dims 16..256 (any, padded to a power of two inside the kernel),
any lengths, ``Lq != Lk``. Causal masks are bottom-right aligned as everywhere in
attnlib; a query with no visible key gets zeros.

It runs on CUDA (float16, bfloat16, float32; float32 is multiplied in IEEE float32, not
TF32: float32 accuracy, at a fraction of the half-precision speed) and on a CPU under
``TRITON_INTERPRET=1`` (float16 and float32; set the variable before Triton is first
imported).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Optional

import torch
import triton

from ..validation import check_tensor, resolve_scale
from ._flash_bwd import flash_bwd_delta_kernel, flash_bwd_dkdv_kernel, flash_bwd_dq_kernel
from ._flash_config import INTERPRET
from ._flash_fwd import flash_fwd_kernel
from ._flash_fwd_tma import TensorDescriptor, descriptor, flash_fwd_tma_kernel
from ._interpreter_compat import check_launchable

__all__ = ["flash_attention", "flash_attention_forward"]

_LOG2E = 1.4426950408889634
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_KERNELS = ("auto", "portable", "tma")
_TMA_FAILURE: Optional[str] = None  # set once if the TMA kernel fails to compile here; then "auto" stops trying


def _triton_error(module: str, name: str):
    """``triton.<module>.<name>`` where this Triton has it (3.6 and 3.9 both do), else None."""
    try:
        return getattr(__import__(f"triton.{module}", fromlist=[name]), name, None)
    except ImportError:
        return None


# What means "this kernel cannot compile or run on this Triton/GPU" (Triton 3.6 and 3.9 raise these):
# a front-end error (CompilationError and its subclasses), a tile that needs more shared memory or
# registers than the GPU has (OutOfResources, raised at the first launch) and ptxas refusing the PTX
# (PTXASError).
_UNAVAILABLE = tuple(e for e in (_triton_error("compiler.errors", "CompilationError"),
                                 _triton_error("runtime.errors", "OutOfResources"),
                                 _triton_error("runtime.errors", "PTXASError")) if e is not None)


def _kernel_unavailable(e: BaseException) -> bool:
    """Whether ``e`` says a kernel cannot compile or run here (then "auto" falls back), not a user's error.

    Besides :data:`_UNAVAILABLE`, an MLIR pass that fails in Triton's backend raises a plain
    ``RuntimeError("PassManager::run failed")``. Everything else surfaces: out of memory
    (``torch.OutOfMemoryError``, a ``RuntimeError`` subclass), bad arguments (``ValueError``,
    ``TypeError``), a misaligned pointer or another CUDA error (``RuntimeError``/``AcceleratorError``).
    """
    if isinstance(e, _UNAVAILABLE):
        return True
    return type(e) is RuntimeError and "PassManager::run failed" in str(e)


def _check_inputs(q, k, v) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(x, name, min_dim=2)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"flash_attention supports float16, bfloat16 and float32, got q of dtype {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    check_launchable(q, "q", "flash_attention")
    if INTERPRET and q.dtype == torch.bfloat16:
        raise TypeError("Triton's CPU interpreter has no bfloat16: use float16 or float32 there")
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(
            f"q, k and v must have the same number of dimensions, got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    d = q.shape[-1]
    if k.shape[-1] != d or v.shape[-1] != d:
        raise ValueError(
            f"q, k and v must share the head dimension (last dim): got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not 16 <= d <= 256:
        raise ValueError(f"the head dimension (last dim of q) must be between 16 and 256, got {d}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length (dim -2), got shapes {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"k and v must have the same leading dims, got shapes {tuple(k.shape)}, {tuple(v.shape)}")
    if q.dim() >= 3:
        if q.shape[:-3] != k.shape[:-3]:
            raise ValueError(
                f"q and k must have the same batch dims (all but the last three), got shapes {tuple(q.shape)} "
                f"and {tuple(k.shape)}"
            )
        hq, hk = q.shape[-3], k.shape[-3]
        if hk == 0 or hq % hk != 0:
            raise ValueError(
                f"the number of K/V heads (dim -3 of k, got {hk}) must divide the number of query heads "
                f"(dim -3 of q, got {hq}) for grouped-query attention"
            )
    for name, x in (("q", q), ("k", k)):
        if x.shape[-2] == 0:
            raise ValueError(f"{name} must have a positive length (dim -2), got shape {tuple(x.shape)}")


def _check_call(q, k, v, causal, scale, kernel) -> float:
    """Every argument of :func:`flash_attention` and :func:`flash_attention_forward` checked; the scale to use."""
    _check_inputs(q, k, v)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    return resolve_scale(scale, q.shape[-1])


def _as_bhld(x: torch.Tensor) -> torch.Tensor:
    """View ``(..., H, L, D)`` as ``(B, H, L, D)`` with unit stride along D (copies only if needed)."""
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x[None]
    else:
        x = x.reshape(math.prod(x.shape[:-3]), *x.shape[-3:])  # (not -1: a dim of 0 heads leaves it ambiguous)
    return x if x.stride(-1) == 1 else x.contiguous()


def _precision(dtype: torch.dtype) -> str:
    """float32 inputs multiply in full IEEE float32 (not TF32), so float32 means float32."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _tma_available(q: torch.Tensor) -> bool:
    """Hopper (compute capability 9.x), a Triton with tensor descriptors, fp16/bf16, D a multiple of 8."""
    return (
        not INTERPRET and TensorDescriptor is not None and q.is_cuda
        and torch.cuda.get_device_capability(q.device)[0] == 9
        and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] % 8 == 0
        and os.environ.get("ATTNLIB_FLASH_TMA", "1") != "0"
    )


def _forward(q, k, v, causal: bool, scale: float, kernel: str = "auto"):
    """q (B, H, Lq, D), k/v (B, Hk, Lk, D) -> o (B, H, Lq, D), lse2 (B*H, Lq) float32 (base 2).

    ``kernel="auto"`` takes the TMA kernel where it is available (and falls back to the portable
    one, for good, if it cannot compile or run here: :func:`_kernel_unavailable`; any other error,
    out of memory for one, is raised); ``"tma"`` and ``"portable"`` force one of them; a callable
    ``(q, k, v, causal, scale) -> (o, lse2)`` is run as it is (how the benchmark runs an experimental
    forward, :mod:`attnlib.kernels.experimental`, under this module's backward).
    """
    global _TMA_FAILURE
    if callable(kernel):
        return kernel(q, k, v, causal, scale)
    if kernel == "tma" or (kernel == "auto" and _TMA_FAILURE is None and _tma_available(q)):
        try:
            return _forward_tma(q, k, v, causal, scale)
        except Exception as e:  # noqa: BLE001 - only a kernel that cannot run here falls back (see the test)
            if kernel == "tma" or not _kernel_unavailable(e):
                raise
            _TMA_FAILURE = f"{type(e).__name__}: {e}"
            warnings.warn(f"attnlib: the TMA FlashAttention kernel failed ({_TMA_FAILURE[:300]}); "
                          "using the portable kernel from now on", RuntimeWarning, stacklevel=3)
    return _forward_portable(q, k, v, causal, scale)


def _fixed(config: Optional[tuple]) -> dict:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages[, maxnreg])`` as launch keywords (the benchmark's steps).

    ``maxnreg`` caps the registers per thread (Triton's compile option; the compiler spills
    what does not fit), e.g. so that two programs share one SM.
    """
    if config is None:
        return {}
    if len(config) not in (4, 5) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                            for x in config):
        raise ValueError("config must be (BLOCK_M, BLOCK_N, num_warps, num_stages) or (..., maxnreg), positive "
                         f"ints, got {config!r}")
    fixed = dict(zip(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), config))
    if len(config) == 5:
        fixed["maxnreg"] = config[4]
    return fixed


def _forward_portable(q, k, v, causal: bool, scale: float, config: Optional[tuple] = None):
    """The portable forward, autotuned; ``config=(BLOCK_M, BLOCK_N, num_warps, num_stages)`` fixes one instead."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty((b * h, lq), device=q.device, dtype=torch.float32)
    block_d = _block_d(d)
    fixed = _fixed(config)

    def grid(meta):  # batch and heads folded into axis 0 (axis 1 stops at 65,535; see query_tile_and_head)
        return (triton.cdiv(lq, meta["BLOCK_M"]) * b * h,)

    kernel = flash_fwd_kernel.fn if fixed else flash_fwd_kernel  # the @triton.jit function under the autotuner
    kernel[grid](
        q, k, v, o, lse,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, h // hk, lq, lk, d, scale * _LOG2E,
        CAUSAL=causal, BLOCK_D=block_d, EVEN_D=(block_d == d), PRECISION=_precision(q.dtype), **fixed,
    )
    return o, lse


def _forward_tma(q, k, v, causal: bool, scale: float, config: Optional[tuple] = None):
    """The same forward with tiles moved by tensor descriptors (see :mod:`._flash_fwd_tma`); ``config`` as above."""
    if TensorDescriptor is None:
        raise RuntimeError("this Triton has no triton.tools.tensor_descriptor (TMA kernel unavailable)")
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    block_d = _block_d(d)
    fixed = _fixed(config)
    q3 = q.reshape(b * h, lq, d).contiguous()  # (B*H, Lq, D): a tile never crosses into the next head
    k3 = k.reshape(b * hk, lk, d).contiguous()
    v3 = v.reshape(b * hk, lk, d).contiguous()
    o3 = torch.empty_like(q3)
    lse = torch.empty((b * h, lq), device=q.device, dtype=torch.float32)
    # Tile shapes: the autotuner sets them per configuration (a pre-hook); a fixed one sets them here.
    rows = (fixed.get("BLOCK_M", 16), fixed.get("BLOCK_N", 16), fixed.get("BLOCK_N", 16), fixed.get("BLOCK_M", 16))
    descs = [descriptor(x, r, block_d) for x, r in zip((q3, k3, v3, o3), rows)]

    def grid(meta):  # batch and heads folded into axis 0 (axis 1 stops at 65,535; see query_tile_and_head)
        return (triton.cdiv(lq, meta["BLOCK_M"]) * b * h,)

    kernel = flash_fwd_tma_kernel.fn if fixed else flash_fwd_tma_kernel
    kernel[grid](
        *descs, lse, h, h // hk, lq, lk, scale * _LOG2E,
        CAUSAL=causal, BLOCK_D=block_d, PRECISION=_precision(q.dtype), **fixed,
    )
    return o3.reshape(b, h, lq, d), lse


def _backward(q, k, v, o, lse, do, causal: bool, scale: float):
    """dQ, dK, dV from the saved o and log-sum-exp: three kernels, none of which stores P."""
    do = do if do.stride(-1) == 1 else do.contiguous()
    delta = _backward_delta(o, do)
    dk, dv = _backward_dkdv(q, k, v, do, lse, delta, causal, scale)
    dq = _backward_dq(q, k, v, do, lse, delta, causal, scale)
    return dq, dk, dv


def _backward_delta(o, do):
    """delta = rowsum(dO * O), float32 (B*H, Lq): the one number per row the dS formula needs."""
    b, h, lq, d = o.shape
    delta = torch.empty((b * h, lq), device=o.device, dtype=torch.float32)
    block_m = 16 if INTERPRET else 64
    flash_bwd_delta_kernel[(triton.cdiv(lq, block_m) * b * h,)](
        o, do, delta, *o.stride(), *do.stride(), h, lq, d, BLOCK_M=block_m, BLOCK_D=_block_d(d),
    )
    return delta


def _backward_dkdv(q, k, v, do, lse, delta, causal: bool, scale: float, config: Optional[tuple] = None):
    """dK, dV: one program per key tile (autotuned; ``config`` fixes one, as for the forward)."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    fixed = _fixed(config)

    def grid(meta):
        return (triton.cdiv(lk, meta["BLOCK_N"]) * b * hk,)

    kernel = flash_bwd_dkdv_kernel.fn if fixed else flash_bwd_dkdv_kernel
    kernel[grid](
        q, k, v, do, dk, dv, lse, delta, dk,  # (the dQ buffer is read only by the one-pass backward)
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(), *dk.stride(),
        h, hk, h // hk, lq, lk, d, scale, scale * _LOG2E,
        CAUSAL=causal, BLOCK_D=_block_d(d), PRECISION=_precision(q.dtype), **fixed,
    )
    return dk, dv


def _backward_dq(q, k, v, do, lse, delta, causal: bool, scale: float, config: Optional[tuple] = None):
    """dQ: one program per query tile (autotuned; ``config`` fixes one)."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    dq = torch.empty_like(q)
    fixed = _fixed(config)

    def grid(meta):  # batch and heads folded into axis 0 (axis 1 stops at 65,535; see query_tile_and_head)
        return (triton.cdiv(lq, meta["BLOCK_M"]) * b * h,)

    kernel = flash_bwd_dq_kernel.fn if fixed else flash_bwd_dq_kernel
    kernel[grid](
        q, k, v, do, dq, lse, delta,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        h, h // hk, lq, lk, d, scale, scale * _LOG2E,
        CAUSAL=causal, BLOCK_D=_block_d(d), PRECISION=_precision(q.dtype), **fixed,
    )
    return dq


class _FlashAttention(torch.autograd.Function):
    """Saves q, k, v, o and the (B*H, Lq) log-sum-exp; nothing of size Lq x Lk."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, kernel: str):
        o, lse = _forward(q, k, v, causal, scale, kernel)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, do, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: Optional[float] = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """FlashAttention ``softmax(scale * q k^T) v`` with a Triton forward and backward.

    Args:
        q: ``(..., Hq, Lq, D)`` queries (or ``(Lq, D)``, ``(Hq, Lq, D)``).
        k: ``(..., Hkv, Lk, D)`` keys; ``Hkv`` divides ``Hq`` (grouped-query attention).
        v: ``(..., Hkv, Lk, D)`` values.
        causal: bottom-right aligned causal mask (query ``i`` sees key ``j <= i + Lk - Lq``).
        scale: score scale, default ``1/sqrt(D)``.
        kernel: forward kernel: ``"auto"`` (tensor-descriptor/TMA kernel on Hopper GPUs where
            Triton has it, else the portable one), ``"portable"`` or ``"tma"``.

    Returns:
        ``(..., Hq, Lq, D)`` in the dtype of ``q``; differentiable in q, k and v.

    Strides: the portable kernel reads any strides with the head dim contiguous, so a ``(B, L, H, D)``
    tensor viewed as ``(B, H, L, D)`` (``x.transpose(1, 2)``) is not copied; an input whose last dim
    is strided is copied once (``.contiguous()``), as are leading dims that cannot be merged into one
    batch dim without a copy (``reshape``). The TMA kernel copies every non-contiguous input to
    ``(B*H, L, D)`` (its descriptors need that layout). Batch and heads are folded into one grid axis:
    any ``B * H`` launches (the two-dimensional grid stopped at 65,535).
    """
    scale = _check_call(q, k, v, causal, scale, kernel)
    out = _FlashAttention.apply(_as_bhld(q), _as_bhld(k), _as_bhld(v), causal, scale, kernel)
    return out.reshape(q.shape)


def flash_attention_forward(q, k, v, *, causal: bool = False, scale: Optional[float] = None, kernel: str = "auto"):
    """Forward only, also returning the natural-log log-sum-exp ``(..., Hq, Lq)`` of the scaled scores.

    A query with no visible key has log-sum-exp ``-inf`` (and output zeros).
    """
    scale = _check_call(q, k, v, causal, scale, kernel)
    with torch.no_grad():
        o, lse2 = _forward(_as_bhld(q), _as_bhld(k), _as_bhld(v), causal, scale, kernel)
    lse = torch.where(torch.isinf(lse2), torch.full_like(lse2, -math.inf), lse2 / _LOG2E)
    return o.reshape(q.shape), lse.reshape(q.shape[:-1])
