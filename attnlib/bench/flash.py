"""The FlashAttention benchmark: attnlib's Triton kernel against torch's SDPA backends, in one run.

Grid (the FlashAttention papers'): bfloat16, head dim 64 and 128, ``B * N = 16384``
tokens and ``H * D = 2048``, sequence length ``N`` from 1k to 16k, causal and not.
For each shape it times, with :func:`attnlib.bench.timing.bench_ms` (a
``triton.testing.do_bench`` median), the forward pass and forward+backward of

* ``attnlib_flash``: :func:`attnlib.kernels.flash_attention` (autotuned),
* ``sdpa_cudnn``, ``sdpa_flash``, ``sdpa_efficient``:
  ``torch.nn.functional.scaled_dot_product_attention`` with that backend pinned by
  ``torch.nn.attention.sdpa_kernel``,

and reports TFLOP/s (:func:`attnlib.bench.attention_flops`) and attnlib's ratio to each
backend. Before any timing it checks the kernel's output and gradients against SDPA's
math backend in float32 at odd lengths; a kernel that fails is not timed. Before the grid
it times the forward one change at a time (:data:`LADDER`: fixed 128x64 tiles as in a plain
kernel, 128x128 tiles, autotuning, each with and without tensor descriptors; tiles that fit
twice on one SM; the experimental warp-specialised and Gluon kernels) at head dim
128, N = 4k, 16k and 1k, against SDPA's cuDNN and flash backends (:func:`time_ladder`), and the
backward kernel by kernel, each with every tile its autotuner chooses from, against SDPA's
backward alone (:func:`time_backward`). For each mask (causal or not), an experimental forward
(:mod:`attnlib.kernels.experimental`) that beat attnlib's default one in the ladder at 4k and 16k
(:func:`best_experimental`) is timed over the grid's shapes of that mask as well, as
``attnlib_flash_experimental`` (with attnlib's backward), where it handles the shape: the evidence a
promotion into the production path needs. The experimental kernels run here only after a child
process has checked them (``screen``, :func:`attnlib.bench.canary.run_in_child` when the suite runs
from ``python -m attnlib.bench``); this module does not import the canary, nor the canary this module.

``run(quick=True)`` measures a smaller grid with shorter repetitions.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..kernels import experimental
from .compare import CHECK_TOL as _CHECK_TOL
from .compare import rel_error as _rel
from .env import require_bf16_gpu
from .flops import attention_flops
from .timing import attention_tflops, bench_ms, progress

__all__ = ["run", "grid", "check_correctness", "time_shape", "time_ladder", "ladder_lines", "time_backward",
           "backward_candidates", "backward_lines", "ratios", "autotuned_configs", "best_experimental",
           "IMPLS", "LADDER", "EXPERIMENTAL", "BACKWARD_PRODUCTS", "SCREENED"]

TOKENS = 16384
MODEL_DIM = 2048
IMPLS = ("attnlib_flash", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient")
OURS = {"attnlib_flash": "auto", "attnlib_flash_portable": "portable"}  # name -> flash_attention(kernel=...)
_BACKENDS = {"sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION"}


def grid(quick: bool = False) -> list[dict]:
    """Benchmark shapes, most informative first (a time budget may cut the tail)."""
    lengths = (4096, 1024, 16384) if quick else (4096, 1024, 16384, 2048, 8192)
    shapes = []
    for d in (128, 64):
        for n in lengths:
            for causal in (False, True):
                shapes.append({"batch": TOKENS // n, "heads": MODEL_DIM // d, "seq_len": n, "head_dim": d,
                               "causal": causal})
    return shapes


def _impl(name: str, experimental=None):
    """``(attend(q, k, v, causal), context)``: SDPA runs inside ``sdpa_kernel(backend)`` pinned for the timing;
    :data:`EXPERIMENTAL` is the experimental forward with attnlib's backward: ``experimental`` is
    ``{causal: (step name, kind, config) or None}`` (one forward per mask), or one ``(step name, kind,
    config)`` for both masks."""
    if name == EXPERIMENTAL:
        per_mask = experimental if isinstance(experimental, dict) else {False: experimental, True: experimental}

        def attend_experimental(q, k, v, causal):  # flash_attention's autograd Function, this forward in it
            from ..kernels import flash

            if per_mask.get(causal) is None:
                raise ValueError(f"no experimental forward beat the default one in the ladder with causal={causal}")
            _, kind, config = per_mask[causal]
            forward = _experimental_forward(kind, config, q, k, v, causal)
            return flash._FlashAttention.apply(q, k, v, causal, q.shape[-1] ** -0.5, forward)

        return attend_experimental, contextlib.nullcontext()
    if name in OURS:
        from ..kernels import flash_attention

        kernel = OURS[name]
        return (lambda q, k, v, causal: flash_attention(q, k, v, causal=causal, kernel=kernel)), \
            contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def attend(q, k, v, causal):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return attend, sdpa_kernel(getattr(SDPBackend, _BACKENDS[name]))



def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def check_correctness(device="cuda", dtype=torch.bfloat16, head_dims=(64, 128),
                      sizes=((4, 4, 1031, 1031), (4, 2, 517, 1100))) -> list[dict]:
    """Compare the kernel's output and gradients with SDPA's math backend on float32 copies.

    ``sizes`` holds ``(Hq, Hkv, Lq, Lk)``: odd lengths, and grouped-query K/V with ``Lq < Lk``.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..kernels import flash_attention

    results = []
    gen = torch.Generator(device=device).manual_seed(0)
    for d in head_dims:
        for causal in (False, True):
            for hq, hk, lq, lk in sizes:
                q = torch.randn(2, hq, lq, d, device=device, dtype=dtype, generator=gen).requires_grad_()
                k = torch.randn(2, hk, lk, d, device=device, dtype=dtype, generator=gen).requires_grad_()
                v = torch.randn(2, hk, lk, d, device=device, dtype=dtype, generator=gen).requires_grad_()
                dout = torch.randn(2, hq, lq, d, device=device, dtype=dtype, generator=gen)
                out = flash_attention(q, k, v, causal=causal)
                grads = torch.autograd.grad(out, (q, k, v), dout)
                leaves = [x.detach().float().requires_grad_() for x in (q, k, v)]
                group = hq // hk
                kr, vr = (x.repeat_interleave(group, 1) for x in leaves[1:])
                mask = None
                if causal:  # bottom-right aligned, as attnlib defines it
                    mask = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(lk - lq)
                with sdpa_kernel(SDPBackend.MATH):
                    ref = F.scaled_dot_product_attention(leaves[0], kr, vr, attn_mask=mask)
                ref_grads = torch.autograd.grad(ref, leaves, dout.float())
                errors = {"out": _rel(out, ref)}
                errors.update({f"d{n}": _rel(g, r) for n, g, r in zip("qkv", grads, ref_grads)})
                results.append({
                    "batch": 2, "heads": hq, "kv_heads": hk, "lq": lq, "lk": lk, "head_dim": d, "causal": causal,
                    "dtype": str(dtype).replace("torch.", ""), "rel_errors": errors,
                    "passed": all(math.isfinite(e) and e < _CHECK_TOL for e in errors.values()),
                })
    return results


def time_shape(shape: dict, impls=IMPLS, *, warmup: int = 25, rep: int = 100, device="cuda",
               dtype=torch.bfloat16, timer=bench_ms, experimental=None) -> list[dict]:
    """Rows of ms and TFLOP/s, forward and forward+backward, for each implementation at one shape
    (``experimental``: what :data:`EXPERIMENTAL` in ``impls`` runs, as :func:`_impl` takes it)."""
    rows = _measure(shape, impls, warmup, rep, device, dtype, timer, experimental)
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()  # this shape's tensors are gone: give their memory back before the next
    return rows


def _measure(shape, impls, warmup, rep, device, dtype, timer, experimental=None) -> list[dict]:
    b, h, n, d, causal = shape["batch"], shape["heads"], shape["seq_len"], shape["head_dim"], shape["causal"]
    gen = torch.Generator(device=device).manual_seed(n + d)
    q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype, generator=gen).requires_grad_()
               for _ in range(3))
    dout = torch.randn(b, h, n, d, device=device, dtype=dtype, generator=gen)
    rows, outputs = [], {}
    for name in impls:
        attend, pinned = _impl(name, experimental)
        row_base = {"impl": name, **shape}

        def fwd_bwd(attend=attend):  # bound now: the closure must not see a later loop's `attend`
            attend(q, k, v, causal).backward(dout)

        try:
            with pinned:
                with torch.no_grad():
                    outputs[name] = attend(q, k, v, causal)  # warm-up: compiles and autotunes
                _sync(device)
                fwd_ms = timer(lambda attend=attend: attend(q, k, v, causal), warmup=warmup, rep=rep)
                fwd_bwd()
                _sync(device)
                fb_ms = timer(fwd_bwd, warmup=warmup, rep=rep, grad_to_none=[q, k, v])
        except Exception as e:  # noqa: BLE001 - a backend that refuses a shape is reported, not fatal
            for mode in ("fwd", "fwd_bwd"):
                rows.append({**row_base, "mode": mode, "ms": None, "tflops": None, "error": f"{type(e).__name__}: {e}"})
            continue
        for mode, ms in (("fwd", fwd_ms), ("fwd_bwd", fb_ms)):
            rows.append({**row_base, "mode": mode, "ms": ms,
                         "tflops": attention_tflops(ms, b, h, n, n, d, causal=causal, mode=mode), "error": None})
    for ours in (o for o in (*OURS, EXPERIMENTAL) if o in outputs):
        for name in ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient"):
            if name in outputs:  # the timed kernel computes the same function as SDPA at this very shape
                err = _rel(outputs[ours], outputs[name])
                for row in rows:
                    if row["impl"] == ours:
                        row["rel_error_vs_" + name] = err
    return rows


# The forward, one change at a time (the path lab 16 walks), at the shapes of the performance target.
# (name, kernel, fixed (BLOCK_M, BLOCK_N, num_warps, num_stages) or None for autotuned)
LADDER = (
    ("portable 128x64, 8 warps, 3 stages", "portable", (128, 64, 8, 3)),  # the baselines' plain kernel's tile
    ("portable 128x128, 8 warps, 3 stages", "portable", (128, 128, 8, 3)),
    ("portable, autotuned", "portable", None),
    ("TMA 128x64, 8 warps, 3 stages", "tma", (128, 64, 8, 3)),
    ("TMA 128x128, 8 warps, 3 stages", "tma", (128, 128, 8, 3)),
    # Two programs per SM (97 KiB each; attnlib.kernels._flash_config.tma_fwd_configs): the hardware
    # overlaps one program's softmax with the other's matmuls. 8 warps need maxnreg=128 to fit twice.
    ("TMA 128x64, 8 warps, 2 st., 128 regs: 2/SM", "tma", (128, 64, 8, 2, 128)),
    ("TMA 128x64, 4 warps, 2 stages: 2/SM", "tma", (128, 64, 4, 2)),
    ("TMA, autotuned (the default on Hopper)", "tma", None),
    # Experimental, not used by flash_attention (attnlib.kernels.experimental.fwd_ws, its WS_CONFIGS): descriptors
    # made on the device and Triton's Hopper warp specialisation (4 warps become 12); whole tiles; causal with
    # the mask on every tile (the pass takes one loop).
    ("warp-specialized 128x64, 4(+8) warps, 3 stages", "ws", (128, 64, 4, 3)),
    ("warp-specialized 128x128, 4(+8) warps, 2 stages", "ws", (128, 128, 4, 2)),
    # Experimental, not used by flash_attention (attnlib.kernels.experimental.gluon, its GLUON_CONFIGS): written
    # in Gluon so that the next tile's QK^T and this tile's PV run during the softmax; whole tiles.
    ("Gluon: softmax during PV 128x128, 8 warps, 2 st", "gluon", (128, 128, 8, 2)),
    ("Gluon: softmax during PV 128x64, 8 warps, 3 st.", "gluon", (128, 64, 8, 3)),
    # ... and with one more warp that only loads (attnlib.kernels.experimental.gluon_ws, its GLUON_WS_CONFIGS)
    ("Gluon + loader warp 128x128, 8+1 warps, 2 st.", "gluon-ws", (128, 128, 8, 2)),
    ("Gluon + loader warp 128x128, 8+1 warps, 3 st.", "gluon-ws", (128, 128, 8, 3)),
    # ... and its two consumer warp groups taking turns (attnlib.kernels.experimental.gluon_pingpong)
    ("Gluon ping-pong 2x(64x128), 8+1 warps, 2 st.", "gluon-pingpong", (128, 128, 8, 2)),
    ("Gluon ping-pong 2x(64x128), 8+1 warps, 3 st.", "gluon-pingpong", (128, 128, 8, 3)),
)


def time_ladder(seq_lens=(4096, 16384), head_dim: int = 128, *, warmup: int = 20, rep: int = 60,
                dtype=torch.bfloat16, timer=bench_ms, device="cuda", steps=LADDER, tokens: int = TOKENS,
                model_dim: int = MODEL_DIM, progress=None) -> list[dict]:
    """Forward TFLOP/s of each :data:`LADDER` step and of SDPA (cuDNN, flash), causal and not, in one run.

    Each output is compared with each SDPA backend's that ran (``rel_error_vs_sdpa_cudnn``,
    ``rel_error_vs_sdpa_flash``); a step that cannot run here (no TMA off Hopper, no cuDNN on a
    CPU) is recorded with its error. ``progress(rows)``, if given, gets the rows so far after each
    length and mask (the flash suite saves them: a step that hangs then costs only the rows after it).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []
    for n in seq_lens:
        b, h = tokens // n, model_dim // head_dim  # B*N tokens and H*D model width, as in the grid
        gen = torch.Generator(device=device).manual_seed(7 * n + head_dim)
        q, k, v = (torch.randn(b, h, n, head_dim, device=device, dtype=dtype, generator=gen) for _ in range(3))
        for causal in (False, True):
            timed = [(name, _ladder_step(kernel, config, q, k, v, causal), contextlib.nullcontext())
                     for name, kernel, config in steps]
            for name, backend in (("SDPA cuDNN", "CUDNN_ATTENTION"), ("SDPA flash", "FLASH_ATTENTION")):
                timed.append((name, partial(F.scaled_dot_product_attention, q, k, v, is_causal=causal),
                              sdpa_kernel(getattr(SDPBackend, backend))))
            outputs = {}
            for name, fn, pinned in timed:
                row = {"step": name, "seq_len": n, "head_dim": head_dim, "causal": causal, "batch": b, "heads": h}
                try:
                    with pinned:
                        outputs[name] = fn()  # warm-up: compiles, autotunes
                        _sync(device)
                        ms = timer(fn, warmup=warmup, rep=rep)
                    row.update(ms=ms, tflops=attention_tflops(ms, b, h, n, n, head_dim, causal=causal), error=None)
                except Exception as e:  # noqa: BLE001 - recorded: e.g. no TMA on this GPU
                    row.update(ms=None, tflops=None, error=f"{type(e).__name__}: {str(e)[:200]}")
                rows.append(row)
            for row in rows[-len(timed):]:
                for ref in ("SDPA cuDNN", "SDPA flash"):
                    if ref in outputs and row["step"] in outputs:
                        row["rel_error_vs_" + ref.lower().replace(" ", "_")] = _rel(outputs[row["step"]], outputs[ref])
            if progress is not None:
                progress(list(rows))
        del q, k, v
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return rows


def ladder_lines(ladder: list[dict]) -> list[str]:
    """One line per ladder row: TFLOP/s and the share of SDPA-cuDNN's in the same run (for printing)."""
    cudnn = {(r["seq_len"], r["causal"]): r["tflops"] for r in ladder if r["step"] == "SDPA cuDNN"}
    lines = []
    for r in ladder:
        base = cudnn.get((r["seq_len"], r["causal"]))
        speed = (f"{r['tflops']:6.1f} TFLOP/s" if r["tflops"]
                 else "did not run" + (f" ({r['error']})" if r.get("error") else ""))
        share = f" = {r['tflops'] / base:.2f}x SDPA-cuDNN" if r["tflops"] and base else ""
        lines.append(f"D={r['head_dim']} N={r['seq_len']:>5} {'causal' if r['causal'] else 'full  '} "
                     f"{r['step']:<47} {speed}{share}{_wrong(r)}")
    return lines


def _wrong(row: dict) -> str:
    """A warning for a printed row whose output disagrees with an SDPA backend's (empty if none does)."""
    errors = {k[len("rel_error_vs_"):]: v for k, v in row.items() if k.startswith("rel_error_vs_") and v is not None}
    bad = {k: v for k, v in errors.items() if not v < _CHECK_TOL}  # `not <` also catches NaN
    return "".join(f" WRONG: relative error {v:.3g} against {k}" for k, v in bad.items())


def _ladder_step(kernel: str, config, q, k, v, causal: bool):
    """The forward of one ladder step as a callable returning the output."""
    from ..kernels import flash

    scale = q.shape[-1] ** -0.5

    def step():
        if kernel == "tma" and flash._TMA_FAILURE is not None:  # failed to compile or the check: not timed
            raise RuntimeError(f"the TMA kernel is off: {flash._TMA_FAILURE[:150]}")
        if kernel in EXPERIMENTAL_KINDS:
            return _experimental_forward(kernel, config, q, k, v, causal)(q, k, v, causal, scale)[0]
        forward = {"tma": flash._forward_tma, "portable": flash._forward_portable}[kernel]
        return forward(q, k, v, causal, scale, config)[0]

    return step


EXPERIMENTAL_KINDS = experimental.KINDS  # the forwards flash_attention does not use

# experimental.key(kind, config) -> None (checked in a child process: it matched) or why it may not run in
# this process. :func:`run` fills it from its ``screen``; a kernel it does not name may run (the CPU tests
# run the warp-specialised forward in the interpreter, where a hang is no risk to a GPU run's results).
SCREENED: dict = {}


def _experimental_forward(kind: str, config, q, k, v, causal: bool):
    """The experimental forward of ``kind`` at ``config`` (``(q, k, v, causal, scale) -> (o, lse2)``), or an
    error saying why it does not run here: a shape it does not handle (causal, lengths off its tiles), or
    a failure in the child process that screened it (:data:`SCREENED`)."""
    problems = experimental.unhandled(kind, config, q, k, v, causal)
    if problems:
        raise ValueError(f"the experimental forward {kind} does not handle " + "; ".join(problems))
    reason = SCREENED.get(experimental.key(kind, config))
    if reason is not None:
        raise RuntimeError(f"not run in the benchmark's process: {reason}")
    return experimental.forward(kind, config)


def best_experimental(ladder: list[dict], steps=LADDER, lengths=(4096, 16384), causal: bool = False):
    """``(step name, kind, config)`` of the experimental ladder step that beat attnlib's default forward
    ("TMA, autotuned") at every one of ``lengths``, with the causal mask or without it as ``causal`` says,
    by the largest smallest margin, with outputs that agree with SDPA's; None if none did. The flash
    suite then times it over the grid's shapes of that mask too (:data:`EXPERIMENTAL`), so that one GPU
    run says how it compares with SDPA at every shape: what a promotion into the production path needs."""
    kinds = {name: (kernel, config) for name, kernel, config in steps if kernel in EXPERIMENTAL_KINDS}
    speed = {(r["step"], r["seq_len"]): r["tflops"] for r in ladder
             if r["causal"] == causal and r.get("tflops") and not _wrong(r)}
    best, best_margin = None, 1.0
    for name, (kind, config) in kinds.items():
        margins = [speed.get((name, n), 0.0) / speed[(_DEFAULT_STEP, n)] if speed.get((_DEFAULT_STEP, n)) else 0.0
                   for n in lengths]
        if min(margins) > best_margin:
            best, best_margin = (name, kind, config), min(margins)
    return best


_DEFAULT_STEP = "TMA, autotuned (the default on Hopper)"
EXPERIMENTAL = "attnlib_flash_experimental"  # in the grid: best_experimental's forward, attnlib's backward


# The backward, one kernel at a time (what lab 17 builds), at the forward ladder's first shape.
BACKWARD_PRODUCTS = {"dK/dV": 4, "dQ": 3}  # matmuls each kernel executes: S again, dV, dP, dK; S, dP, dQ


def backward_candidates(kernel: str, head_dim: int, dtype=torch.bfloat16, device="cuda") -> list[tuple]:
    """The ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` the autotuner of ``kernel`` ("dK/dV" or "dQ") times here.

    The search space after pruning for this head dim and dtype (on this device's shared memory),
    in the tuner's order: the first is what runs without autotuning.
    """
    from ..kernels import _flash_config
    from ..kernels.flash import _block_d

    space = {"dK/dV": _flash_config.bwd_dkdv_configs, "dQ": _flash_config.bwd_dq_configs}[kernel]()
    probe = torch.empty(0, device=device, dtype=dtype)  # pruning reads the element size from a tensor argument
    kept = _flash_config.prune_configs(space, {"Q": probe, "BLOCK_D": _block_d(head_dim)})
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept]


def time_backward(seq_lens=(4096,), head_dim: int = 128, *, warmup: int = 20, rep: int = 60,
                  dtype=torch.bfloat16, timer=bench_ms, device="cuda", tokens: int = TOKENS,
                  model_dim: int = MODEL_DIM, candidates: dict | None = None,
                  one_pass: Optional[Sequence] = None) -> list[dict]:
    """Where the backward's time goes: each of its kernels, each candidate configuration, against SDPA's.

    Rows (``part``, ``config``): ``delta`` (rowsum(dO * O), memory-bound: ms only), ``dK/dV`` and
    ``dQ`` with each configuration their autotuner chooses from (:func:`backward_candidates`,
    or ``candidates``) and autotuned, attnlib's whole backward (the three kernels, autotuned), and
    the backward alone of SDPA's cuDNN and flash backends (the graph of one forward, replayed).
    ``one_pass`` adds whole-backward rows of FlashAttention-2's single pass
    (:func:`attnlib.kernels.experimental.one_pass_bwd.backward_one_pass`: dQ by atomic adds in the dK/dV
    kernel), one per ``(BLOCK_M, BLOCK_N, num_warps, num_stages)``, default its ``ONE_PASS_CONFIGS``
    (``()`` for none), labelled "experimental: one pass ...".
    A kernel's TFLOP/s counts the products it executes (:data:`BACKWARD_PRODUCTS`, each
    ``2 * Lq * Lk * D`` per head, halved when causal); a whole backward's counts the papers'
    convention, 2.5x the forward. Each kernel's gradients are compared with each SDPA backend's.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..kernels import flash
    from ..kernels.experimental.one_pass_bwd import ONE_PASS_CONFIGS, backward_one_pass

    one_pass = ONE_PASS_CONFIGS if one_pass is None else one_pass
    rows = []
    for n in seq_lens:
        b, h = tokens // n, model_dim // head_dim
        gen = torch.Generator(device=device).manual_seed(11 * n + head_dim)
        q, k, v, do = (torch.randn(b, h, n, head_dim, device=device, dtype=dtype, generator=gen) for _ in range(4))
        scale = head_dim ** -0.5
        fwd_flops = attention_flops(b, h, n, n, head_dim, causal=False)
        for causal in (False, True):
            per_product = fwd_flops / 2 / (2 if causal else 1)  # one L x L x D product, in FLOPs
            o, lse = flash._forward(q, k, v, causal, scale)
            delta = flash._backward_delta(o, do)
            base = {"seq_len": n, "head_dim": head_dim, "causal": causal, "batch": b, "heads": h}
            timed = [("delta", "-", partial(flash._backward_delta, o, do), None, None)]
            for part, run_part in (("dK/dV", flash._backward_dkdv), ("dQ", flash._backward_dq)):
                configs = (candidates or {}).get(part) or backward_candidates(part, head_dim, dtype, device)
                for config in [*configs, None]:
                    label = "autotuned" if config is None else "{}x{}, {} warps, {} stages".format(*config)
                    fn = partial(run_part, q, k, v, do, lse, delta, causal, scale, config)
                    timed.append((part, label, fn, BACKWARD_PRODUCTS[part] * per_product, None))
            bwd_flops = 2.5 * fwd_flops / (2 if causal else 1)  # the convention's five products
            timed.append(("attnlib backward", "autotuned",
                          partial(flash._backward, q, k, v, o, lse, do, causal, scale), bwd_flops, None))
            for config in one_pass:  # (the zeroed float32 dQ buffer and its final cast are part of the time)
                timed.append(("attnlib backward", "experimental: one pass {}x{}, {} warps, {} st.".format(*config),
                              partial(backward_one_pass, q, k, v, o, lse, do, causal, scale, config),
                              bwd_flops, None))
            leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
            for name, backend in (("SDPA cuDNN backward", "CUDNN_ATTENTION"),
                                  ("SDPA flash backward", "FLASH_ATTENTION")):
                timed.append((name, "-", partial(_sdpa_backward, leaves, do, causal), bwd_flops,
                              sdpa_kernel(getattr(SDPBackend, backend))))
            grads = {}
            for part, label, fn, flops, pinned in timed:
                row = {**base, "part": part, "config": label}
                try:
                    with pinned or contextlib.nullcontext():
                        out = fn()  # warm-up: compiles, autotunes (and for SDPA, builds the graph once)
                        _sync(device)
                        ms = timer(out[-1] if part.startswith("SDPA") else fn, warmup=warmup, rep=rep)
                    grads[(part, label)] = out[:-1] if part.startswith("SDPA") else out
                    row.update(ms=ms, tflops=flops / ms / 1e9 if flops else None, error=None)
                except Exception as e:  # noqa: BLE001 - recorded: no cuDNN here, a tile that does not launch
                    row.update(ms=None, tflops=None, error=f"{type(e).__name__}: {str(e)[:200]}")
                rows.append(row)
            for row in rows[-len(timed):]:
                for ref in ("SDPA cuDNN backward", "SDPA flash backward"):
                    key = "rel_error_vs_" + ref.lower().replace(" backward", "").replace(" ", "_")
                    row[key] = _backward_error(row["part"], grads.get((row["part"], row["config"])),
                                               grads.get((ref, "-")))
        del q, k, v, do
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _sdpa_backward(leaves, do, causal):
    """SDPA forward once; returns (dq, dk, dv, replay) where replay() times the backward alone."""
    q, k, v = leaves
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def replay():
        return torch.autograd.grad(out, leaves, do, retain_graph=True)

    return (*replay(), replay)


def _backward_error(part: str, got, ref):
    """Largest relative error of a backward part's gradients against an SDPA backend's (None if either is missing)."""
    if got is None or ref is None or part == "delta" or part.startswith("SDPA"):
        return None
    ref_dq, ref_dk, ref_dv = ref
    pairs = {"dK/dV": zip(got, (ref_dk, ref_dv)), "dQ": [(got, ref_dq)],
             "attnlib backward": zip(got, (ref_dq, ref_dk, ref_dv))}[part]
    return max(_rel(a, b) for a, b in pairs)


def backward_lines(rows: list[dict]) -> list[str]:
    """One line per backward row: ms, TFLOP/s, and the autotuned kernels' shares of attnlib's backward."""
    total = {(r["seq_len"], r["causal"]): r["ms"] for r in rows
             if r["part"] == "attnlib backward" and r["config"] == "autotuned"}
    lines = []
    for r in rows:
        whole = total.get((r["seq_len"], r["causal"]))
        if r["ms"] is None:
            speed = "did not run" + (f" ({r['error']})" if r.get("error") else "")
        else:
            speed = f"{r['ms']:8.3f} ms" + (f" {r['tflops']:6.1f} TFLOP/s" if r["tflops"] else " " * 14)
            if whole and r["part"] in ("delta", "dK/dV", "dQ") and r["config"] in ("-", "autotuned"):
                speed += f" = {r['ms'] / whole:4.0%} of attnlib's backward"
        lines.append(f"D={r['head_dim']} N={r['seq_len']:>5} {'causal' if r['causal'] else 'full  '} "
                     f"{r['part']:<19} {r['config']:<26} {speed}{_wrong(r)}")
    return lines


def autotuned_configs() -> dict:
    """``{kernel: {autotuning key: chosen configuration}}`` of the FlashAttention kernels in this process."""
    from ..kernels import _flash_bwd, _flash_fwd, _flash_fwd_tma

    tuners = {"forward (portable)": _flash_fwd.flash_fwd_kernel, "forward (TMA)": _flash_fwd_tma.flash_fwd_tma_kernel,
              "backward dK/dV": _flash_bwd.flash_bwd_dkdv_kernel, "backward dQ": _flash_bwd.flash_bwd_dq_kernel}
    return {name: {str(key): str(config) for key, config in getattr(tuner, "cache", {}).items()}
            for name, tuner in tuners.items()}


def ratios(rows: list[dict]) -> list[dict]:
    """attnlib's TFLOP/s over each SDPA backend's, per shape and mode (None where one is missing).

    ``vs_<backend>`` is for ``attnlib_flash`` (what ``flash_attention`` runs by default);
    ``portable_vs_<backend>`` for the portable kernel, where it was timed separately, and
    ``experimental_vs_<backend>`` for :data:`EXPERIMENTAL`, where the grid timed one.
    """
    key = ("seq_len", "head_dim", "causal", "mode")
    by_key: dict = {}
    for row in rows:
        by_key.setdefault(tuple(row[k] for k in key), {})[row["impl"]] = row["tflops"]
    out = []
    for values, tf in by_key.items():
        entry = dict(zip(key, values))
        for impl, prefix in (("attnlib_flash", ""), ("attnlib_flash_portable", "portable_"),
                             (EXPERIMENTAL, "experimental_")):
            if impl == "attnlib_flash" or impl in tf:
                ours = tf.get(impl)
                for name in ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient"):
                    theirs = tf.get(name)
                    entry[prefix + "vs_" + name] = ours / theirs if ours and theirs else None
        out.append(entry)
    return out


def run(quick: bool = False, checkpoint=None, screen=None) -> dict:
    """Check, then time, the grid; return JSON-able results (needs CUDA).

    ``screen(budget_s) -> {experimental.key(kind, config): None or why not}`` checks the experimental
    forwards outside this process first (``python -m attnlib.bench`` passes
    :func:`attnlib.bench.canary.run_in_child`); only those it passed are timed. Without one, none is.

    ``checkpoint(results)``, if given, is called with the results so far after each phase (correctness,
    experimental kernels, ladder, backward, each grid shape), ``results["complete"]`` False until the end:
    a run stopped by a time limit still leaves what it measured (``python -m attnlib.bench`` writes each
    checkpoint to the suite's JSON file).
    """
    require_bf16_gpu("flash")
    budget_s = float(os.environ.get("ATTNLIB_BENCH_FLASH_BUDGET_S", "120" if quick else "220"))
    warmup, rep = (10, 30) if quick else (20, 60)
    start = time.perf_counter()
    from ..kernels import flash as flash_module

    results = {
        "suite": "flash",
        "dtype": "bfloat16",
        "quick": quick,
        "complete": False,
        "flops": "forward 4*B*H*N*N*D (halved when causal); forward+backward 3.5x forward",
        "timing": f"triton.testing.do_bench median, warmup {warmup} ms, rep {rep} ms",
    }

    def save(**phase):
        results.update(phase, elapsed_s=time.perf_counter() - start)
        if checkpoint is not None:
            checkpoint(dict(results))

    correctness = check_correctness()
    correct = all(c["passed"] for c in correctness)
    if not correct and _tma_on():
        # the TMA forward compiled but failed the check: record that, and check the portable kernel instead
        flash_module._TMA_FAILURE = "compiled, but failed the correctness check (see 'correctness')"
        correctness += [{**c, "kernel": "portable"} for c in check_correctness()]
        correct = all(c["passed"] for c in correctness if c.get("kernel") == "portable")
    tma = _tma_on()
    impls = (IMPLS + ("attnlib_flash_portable",) if tma else IMPLS) if correct else IMPLS[1:]
    save(kernel_correct=correct, forward_kernel="tma" if tma else "portable", tma_failure=flash_module._TMA_FAILURE,
         correctness=correctness)
    # The experimental kernels run once in child processes first (side by side, at most 40% of the budget):
    # a hang or an abort costs a child only.
    if not correct:
        tried = {}
    elif screen is None:
        tried = {experimental.key(kind, config): "not screened in a child process (run() got no screen)"
                 for kind, config in experimental.candidates()}
    else:
        tried = screen(0.4 * budget_s)
    SCREENED.clear()
    SCREENED.update(tried)
    print("[attnlib.bench] experimental kernels in a child process:", tried or "not tried", flush=True)
    save(experimental_kernels=tried)
    # First the ladder (a few seconds): how each step of the forward moves it, at the target's shapes, and at
    # N=1024, where the first run's grid had the TMA kernel at 0.76x the portable one (a row to re-measure).
    ladder = time_ladder((4096,) if quick else (4096, 16384, 1024), warmup=warmup, rep=rep,
                         progress=lambda rows: save(ladder=rows)) if correct else []
    for line in ladder_lines(ladder):
        print("[attnlib.bench] ladder", line, flush=True)
    # For each mask, an experimental forward that beat the default one in the ladder (correct, at 4k and 16k)
    # is timed over the grid's shapes of that mask too: one run then says how it compares with SDPA everywhere.
    winners = {mask: best_experimental(ladder, causal=mask == "causal") if correct else None
               for mask in ("full", "causal")}
    per_mask = {False: winners["full"], True: winners["causal"]}
    if any(winners.values()):
        impls = impls + (EXPERIMENTAL,)
        for mask, winner in winners.items():
            print(f"[attnlib.bench] {mask}: the grid also times the experimental forward "
                  f"{winner[0] if winner else None!r}", flush=True)
        print("[attnlib.bench] a forward to promote into attnlib.kernels' production path if the grid agrees: "
              f"{winners}", flush=True)
    save(ladder=ladder, experimental_in_grid=winners)
    # Then the backward kernel by kernel and tile by tile (a few seconds): where forward+backward's time goes.
    backward = time_backward((4096,), warmup=warmup, rep=rep) if correct else []
    save(backward=backward)
    rows, skipped = [], []
    for shape in progress(grid(quick), "flash grid", describe=lambda s: " ".join(f"{k}={v}" for k, v in s.items())):
        if time.perf_counter() - start > budget_s:
            skipped.append({**shape, "reason": f"time budget of {budget_s:.0f} s spent"})
            continue
        rows.extend(time_shape(shape, impls, warmup=warmup, rep=rep, experimental=per_mask))
        save(**_grid_summary(rows), skipped=skipped)
    return {
        "suite": "flash",
        "dtype": "bfloat16",
        "quick": quick,
        "complete": True,
        "flops": results["flops"],
        "timing": results["timing"],
        "kernel_correct": correct,
        # (the TMA kernel may have been switched off since the check: a launch that failed falls back)
        "forward_kernel": "tma" if _tma_on() else "portable",
        "tma_failure": flash_module._TMA_FAILURE,
        # the forward output at every timed shape against each SDPA backend's, relative error in norm
        "max_rel_error_vs_sdpa": _max_error(rows),
        "correctness": correctness,
        # None (ran in a child process and matched) or why not, per experimental kernel (experimental.key)
        "experimental_kernels": tried,
        # {"full", "causal"}: (ladder step, kind, config) of the experimental forward the grid timed as
        # EXPERIMENTAL at the shapes of that mask, or None
        "experimental_in_grid": winners,
        "rows": rows,
        "ratios": ratios(rows),
        # the forward step by step (LADDER) against SDPA, D=128: TFLOP/s and error vs SDPA-cuDNN
        "ladder": ladder,
        # the backward's kernels (each candidate tile and autotuned) and SDPA's backward alone, D=128, N=4k
        "backward": backward,
        "skipped": skipped,
        # what each kernel's autotuner chose, per (LQ, LK, BLOCK_D, CAUSAL[, GROUP], dtypes...) key
        "autotuned_configs": autotuned_configs(),
        "elapsed_s": time.perf_counter() - start,
    }


def _tma_on() -> bool:
    """Whether flash_attention's default forward is the TMA kernel here (this GPU has it, and it is not off)."""
    from ..kernels import flash as flash_module

    probe = torch.empty(1, 1, 1, 128, device="cuda", dtype=torch.bfloat16)
    return flash_module._tma_available(probe) and flash_module._TMA_FAILURE is None


def _grid_summary(rows: list[dict]) -> dict:
    """The grid's keys of the results so far (for a checkpoint)."""
    return {"max_rel_error_vs_sdpa": _max_error(rows), "rows": rows, "ratios": ratios(rows),
            "autotuned_configs": autotuned_configs()}


def _max_error(rows: list[dict]):
    """The largest relative error of attnlib's output against any SDPA backend's over ``rows`` (None if none)."""
    errors = [v for r in rows if r["impl"] == "attnlib_flash" for k, v in r.items()
              if k.startswith("rel_error_vs_") and v is not None]
    return max(errors) if errors else None
