"""Autotuning search spaces of the FlashAttention kernels.

On a GPU, ``triton.autotune`` times each configuration once per new shape
(sequence lengths, padded head dim, causal) and keeps the fastest. The knobs:
``BLOCK_M``/``BLOCK_N`` (tile sizes: larger tiles reuse each load more but need
more registers and shared memory), ``num_warps`` (threads per program) and
``num_stages`` (how many K/V tiles the compiler prefetches while the current one
is being used). Configurations whose tiles cannot fit in shared memory or registers
for the head dimension are pruned before timing.

Under ``TRITON_INTERPRET=1`` (the CPU interpreter) there is one small
configuration: timing is meaningless there and each call is slow. With
``ATTNLIB_FLASH_AUTOTUNE=0`` a GPU uses the first configuration that fits instead of
timing them all (each configuration is compiled separately, which is what makes
autotuning slow on the first call of each shape; tests use this).
"""

from __future__ import annotations

import os

import triton

from ._interpreter_compat import interpreting, patch_interpreter

patch_interpreter()  # Triton < 3.7's interpreter with NumPy >= 2.4 (see the module)
INTERPRET = interpreting()
AUTOTUNE = os.environ.get("ATTNLIB_FLASH_AUTOTUNE", "1") not in ("", "0")

_INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16}


def _configs(space):
    """``triton.Config``s of ``(BLOCK_M, BLOCK_N, num_warps, num_stages[, maxnreg])`` tuples."""
    if INTERPRET:
        return [triton.Config(dict(_INTERPRET_CONFIG), num_warps=1, num_stages=1)]
    configs = [triton.Config({"BLOCK_M": c[0], "BLOCK_N": c[1]}, num_warps=c[2], num_stages=c[3],
                             maxnreg=c[4] if len(c) > 4 else None) for c in space]
    if not AUTOTUNE:  # the default and the smallest (which fits any head dim); pruning keeps one
        configs = [configs[0], configs[-1]]
    return configs


_FWD_SPACE = (
    (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (64, 64, 4, 3),
    (64, 32, 4, 2),  # fallback: used only where no other fits (head dims above 128)
)
_TWO_PER_SM = ((128, 64, 8, 2, 128), (128, 64, 4, 2))  # see tma_fwd_configs


def fwd_configs():
    """Forward: a query tile of BLOCK_M rows stays in registers; K/V tiles of BLOCK_N stream past."""
    return _configs(_FWD_SPACE)


def tma_fwd_configs():
    """The descriptor (TMA) forward's space: :func:`fwd_configs` plus tiles that fit twice on one SM.

    An H100/H200 SM has 228 KiB of shared memory and 65,536 registers. A 128x64 tile with two
    stages takes 97 KiB, so two programs fit if their threads need at most 65,536 registers
    together: 8 warps capped at 128 registers per thread (``maxnreg``; uncapped, the descriptor
    kernel takes 138-145 at D=128 in bfloat16 under Triton 3.9-3.6, and capped it spills
    nothing), or 4 warps at 255 (no spill under Triton 3.9, 64-104 bytes under 3.6). Two
    resident programs let the SM's warp schedulers run one program's softmax while the
    other's matrix multiplies use the tensor cores, the overlap FlashAttention-3 schedules by
    hand ("ping-pong"); ``attnlib.kernels.resources`` reports ``programs_per_sm``. The pointer
    kernel needs more registers for its addresses (184 at 8 warps), so it keeps
    :func:`fwd_configs`.
    """
    return _configs([*_FWD_SPACE[:-1], *_TWO_PER_SM, _FWD_SPACE[-1]])  # the same default and fallback


def bwd_dkdv_configs():
    """dK/dV: a key tile of BLOCK_N rows stays; query tiles of BLOCK_M stream past.

    Two fp32 accumulators (dK, dV) of BLOCK_N x D stay in registers with the K and V tiles, so
    this kernel spills first: at D=128 on sm_90, 16-row query tiles against 128-key tiles
    compile without spills under both Triton 3.6 and 3.9 while most wider query tiles spill
    (``tools/compile_kernels.py``), so they come first (the configuration used without
    autotuning); autotuning still tries the wider ones.
    """
    return _configs([
        (16, 128, 8, 3), (16, 128, 8, 2), (32, 64, 8, 3), (32, 128, 8, 3), (64, 128, 8, 3), (64, 64, 8, 3),
        (32, 32, 8, 2),  # fallback
    ])


def bwd_dq_configs():
    """dQ: a query tile of BLOCK_M rows stays; key tiles of BLOCK_N stream past."""
    return _configs([
        (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2),
        (32, 32, 4, 2),  # fallback
    ])


def _shared_memory_budget() -> int:
    """Bytes of shared memory one program may use on the current GPU (a safe guess if unknown)."""
    try:
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "shared_memory_per_block_optin", 0)) or 96 * 1024
    except Exception:  # noqa: BLE001 - no CUDA: the interpreter does not prune
        return 96 * 1024


def _element_size(args) -> int:
    """Bytes per input element: of the first tensor argument (or a tensor descriptor's tensor)."""
    for value in args.values():
        tensor = getattr(value, "base", value)  # TensorDescriptor.base is the tensor it describes
        if hasattr(tensor, "element_size"):
            return int(tensor.element_size())
    return 2


def prune_configs(configs, named_args, **kwargs):
    """Drop configurations whose tiles do not fit the padded head dimension ``BLOCK_D`` and dtype.

    Estimate, with ``e`` bytes per input element (2 for fp16/bf16, 4 for fp32): the resident
    tile (BLOCK_M or BLOCK_N rows) plus ``num_stages`` copies of the two streamed tiles must fit
    in 85% of the shared memory, and the resident tile's accumulator (rows x BLOCK_D, scaled by
    ``e / 2``: fp32 inputs also multiply without tensor cores) must stay at most 128 registers
    per thread (half its ``maxnreg`` where a configuration caps the registers: at D=256 a
    128-register cap leaves the accumulator nothing, and ptxas refuses it). The last
    configuration of each list is a small fallback, used only when none of the others fits.
    Each configuration is compiled separately, so fewer candidates also means a faster first
    call. ``tools/compile_kernels.py`` checks the estimate against what
    the compiler really allocates for an H100/H200.
    """
    return _prune(configs, {**named_args, **kwargs}, tuning_margin=0.85)


def prune_forward_configs(configs, named_args, **kwargs):
    """:func:`prune_configs` for the forward kernels, which also time half-precision tiles up to 100%.

    The forward estimate is close (at D=128 the 128x128 three-stage tile is estimated at 224 KiB
    and Triton allocates 225 KiB of an H100/H200's 227 KiB, ``tools/compile_kernels.py``), and
    such a tile may be the fastest, so when autotuning (where a configuration that does not fit
    after all is skipped by the tuner) those between 85% and 100% are timed too, after the
    others. The backward kernels hold more tiles than the estimate counts (at D=256 Triton
    allocates 15% more than it), and float32 tiles that large spill: both keep the margin.
    """
    args = {**named_args, **kwargs}
    return _prune(configs, args, tuning_margin=1.0 if _element_size(args) == 2 else 0.85)


def _prune(configs, args, tuning_margin: float):
    block_d = int(args.get("BLOCK_D", 64))
    elem = _element_size(args)
    budget = _shared_memory_budget()
    safe, borderline = [], []  # estimated within 85% of the budget; within tuning_margin of it
    for c in configs[:-1] if len(configs) > 1 else configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        stages = max(c.num_stages, 1)
        smem = elem * block_d * (max(bm, bn) + 2 * stages * min(bm, bn))
        regs_per_thread = max(bm, bn) * block_d * (elem / 2) / (32 * c.num_warps)
        # the accumulator may take half the registers; a capped configuration (maxnreg) half its cap
        if regs_per_thread > (128 if c.maxnreg is None else c.maxnreg / 2):
            continue
        if smem <= 0.85 * budget:  # a margin: the estimate is rough
            safe.append(c)
        elif smem <= tuning_margin * budget:
            borderline.append(c)
    kept = safe or configs[-1:]
    return kept + borderline if AUTOTUNE else kept[:1]  # without tuning, the one kept must launch
