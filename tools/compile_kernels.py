"""Compile every attnlib Triton kernel for a GPU, on a machine without one, and check what it needs.

    python tools/compile_kernels.py [--arch 90] [--quick] [--json report.json] [--all-configs]
                                    [--cases REGEX] [--no-prune] [--set course|bench]

Triton compiles ahead of time for a named target (``GPUTarget("cuda", 90, 32)`` is Hopper:
H100/H200) with no GPU and no driver: Python -> Triton IR -> PTX -> a cubin from the
``ptxas`` that ships with Triton (:mod:`attnlib.kernels.resources` does the compiling and
reading). This tool calls attnlib's own launch code (the
FlashAttention forward, portable and tensor-descriptor, and backward; split-KV decoding;
block-sparse attention) with CPU tensors of the benchmark's shapes, but every launch is
caught and compiled for the target instead of run; an autotuned kernel is compiled once for
each configuration its pruning keeps (``--all-configs``: also for those it drops). For
each compiled kernel it reports shared memory (Triton's allocation, against the target's
per-block limit), registers per thread and local-memory bytes (register spills), read from
the cubin by the ``cuobjdump`` that ships with Triton, and how many programs of it one SM
holds at once (``/SM``, :func:`attnlib.kernels.resources.programs_per_sm`).

It fails (exit status 1) if a kept configuration does not compile, if one needs more
shared memory than the target has, if a kernel has no configuration that compiles, or
if every kept configuration of a kernel spills registers in half precision at a head dim
up to 128 (the autotuner would have no good choice), or if on sm_90 a half-precision
attention kernel's first kept configuration has no ``HGMMA`` (``wgmma``) instruction in its
disassembly (the matmuls fell back to the older ``mma.sync``). Other spills are reported: the tiles
of a large head dim may spill, and float32 (IEEE products without tensor cores) does.

What it cannot tell: speed, and whether results are right (the interpreter tests and
``tools/gpu_check.sh`` on a real GPU do that). Must run without ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from functools import partial
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("compile_kernels.py compiles for a GPU: unset TRITON_INTERPRET")

import torch  # noqa: E402
import triton  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnlib.kernels.resources import AheadOfTimeCompiler  # noqa: E402


def flash_cases(quick: bool):
    """(case name, thunk) for the FlashAttention kernels at the benchmark's shapes."""
    from attnlib.kernels import flash

    dtypes = (torch.bfloat16,) if quick else (torch.bfloat16, torch.float16, torch.float32)
    head_dims = (64, 128) if quick else (64, 128, 256, 80)
    for dtype in dtypes:
        for d in head_dims:
            for causal in (False, True):
                b, h, hk, n = 2, 2048 // d, 2048 // d // 4, 1024  # grouped-query K/V, 4 query heads per K/V head
                q = torch.empty(b, h, n, d, dtype=dtype)
                k, v = torch.empty(b, hk, n, d, dtype=dtype), torch.empty(b, hk, n, d, dtype=dtype)
                name = f"flash {str(dtype)[6:]} D={d} {'causal' if causal else 'full'}"
                yield name + " fwd", lambda q=q, k=k, v=v, c=causal: flash._forward_portable(q, k, v, c, 0.1)
                if dtype != torch.float32 and d % 8 == 0 and flash.TensorDescriptor is not None:
                    yield name + " fwd-tma", lambda q=q, k=k, v=v, c=causal: flash._forward_tma(q, k, v, c, 0.1)
                if dtype != torch.float32 and d in (64, 128):
                    yield from _ws_cases(name, q, k, v, causal)
                if dtype != torch.float32 and d in (64, 128):
                    yield from _gluon_cases(name, q, k, v, causal)
                o, lse = torch.empty_like(q), torch.empty(b * h, n)
                yield name + " bwd", lambda q=q, k=k, v=v, o=o, lse=lse, c=causal: flash._backward(
                    q, k, v, o, lse, torch.empty_like(q), c, 0.1)


def bench_cases(quick: bool):
    """The FlashAttention kernels exactly as ``python -m attnlib.bench --suite flash`` launches them.

    Its correctness check (4 heads, odd lengths, grouped K/V) and its timed grid (``H*D = 2048``,
    one K/V head per query head) specialize differently (Triton specializes integers equal to 1
    or divisible by 16), so each is compiled: on a GPU machine, ``tools/gpu_check.sh`` runs this
    in parallel processes first, and the benchmark then finds every kernel in Triton's cache
    instead of compiling ~80 of them one after another while it autotunes.
    """
    from attnlib.kernels import flash

    dtype = torch.bfloat16
    for d in (128, 64):
        for causal in (False, True):
            shapes = {"grid": (2, 2048 // d, 2048 // d, 1024, 1024), "check": (2, 4, 4, 1031, 1031),
                      "check-gqa": (2, 4, 2, 517, 1100)}
            for label, (b, h, hk, lq, lk) in shapes.items():
                q, o = torch.empty(b, h, lq, d, dtype=dtype), torch.empty(b, h, lq, d, dtype=dtype)
                k, v = torch.empty(b, hk, lk, d, dtype=dtype), torch.empty(b, hk, lk, d, dtype=dtype)
                lse = torch.empty(b * h, lq)
                name = f"bench bf16 D={d} {'causal' if causal else 'full'} {label}"
                if label == "grid":  # the portable forward is timed too; the check runs the default (TMA)
                    yield name + " fwd", lambda q=q, k=k, v=v, c=causal: flash._forward_portable(q, k, v, c, 0.1)
                if flash.TensorDescriptor is not None:
                    yield name + " fwd-tma", lambda q=q, k=k, v=v, c=causal: flash._forward_tma(q, k, v, c, 0.1)
                if label == "grid":  # the ladder's warp-specialised steps
                    yield from _ws_cases(name, q, k, v, causal)
                if label == "grid":  # the ladder's Gluon steps
                    yield from _gluon_cases(name, q, k, v, causal)
                yield name + " bwd", lambda q=q, k=k, v=v, o=o, lse=lse, c=causal: flash._backward(
                    q, k, v, o, lse, torch.empty_like(q), c, 0.1)
                if label == "grid" and d == 128:  # the backward breakdown's one-pass rows (D=128 only), one case
                    yield name + " bwd one-pass", partial(_one_pass_tiles, q, k, v, o, lse, causal)


def _one_pass_tiles(q, k, v, o, lse, causal):
    """The experimental one-pass backward in each of its tiles (``ONE_PASS_CONFIGS``): like an
    autotuner's space, at least one must compile without spilling."""
    from attnlib.kernels.experimental.one_pass_bwd import ONE_PASS_CONFIGS, backward_one_pass

    for config in ONE_PASS_CONFIGS:
        backward_one_pass(q, k, v, o, lse, torch.empty_like(q), causal, 0.1, config)


def _ws_cases(name, q, k, v, causal):
    """The experimental warp-specialised forward (:mod:`attnlib.kernels.experimental.fwd_ws`), once per
    configuration the benchmark times, causal or not."""
    from attnlib.kernels.experimental.fwd_ws import WS_CONFIGS, flash_fwd_ws

    for config in WS_CONFIGS:
        yield (f"{name} fwd-ws {config[0]}x{config[1]}",
               lambda q=q, k=k, v=v, c=config: flash_fwd_ws(q, k, v, causal, 0.1, config=c))


def _gluon_cases(name, q, k, v, causal):
    """The experimental Gluon forwards (``experimental.gluon_forwards``), once per configuration they handle
    here (whole tiles; causal only with square ones). Needs sm_90: the course's other targets skip them."""
    try:
        from attnlib.kernels.experimental import gluon_forwards
        from attnlib.kernels.experimental.gluon import unhandled

        forwards = gluon_forwards()
    except ImportError as e:  # a Triton without Gluon: nothing of these to compile (said, not fatal)
        print(f"  (no Gluon kernels: {e})", file=sys.stderr)
        return
    for kind, (forward, space) in forwards.items():
        label = "fwd-" + kind
        for config in space:
            if not unhandled(q, k, causal, config[0], config[1]):
                yield (f"{name} {label} {config[0]}x{config[1]}/{config[3]}",
                       lambda q=q, k=k, v=v, c=config, f=forward: f(q, k, v, causal, 0.1, config=c))


def decode_cases(quick: bool):
    from attnlib.kernels import flash_decode

    dtypes = (torch.bfloat16,) if quick else (torch.bfloat16, torch.float16, torch.float32)
    for dtype in dtypes:
        for hkv in (32, 8):
            q = torch.empty(8, 32, 1, 128, dtype=dtype)
            kv = torch.empty(8, hkv, 8192, 128, dtype=dtype)
            lens = torch.full((8,), 8192, dtype=torch.int32)
            yield (f"decode {str(dtype)[6:]} Hq=32 Hkv={hkv} D=128",
                   lambda q=q, kv=kv, lens=lens: flash_decode(q, kv, kv, cache_lens=lens, num_splits=9))


def block_sparse_cases(quick: bool):
    from attnlib.kernels import block_sparse_attention
    from attnlib.kernels.block_sparse import causal_block_mask

    for block in (64, 128):
        for d in ((128,) if quick else (64, 128)):
            q = torch.empty(1, 16, 4096, d, dtype=torch.bfloat16)
            mask = causal_block_mask(4096, 4096, block)
            yield (f"block_sparse bf16 D={d} block={block} causal",
                   lambda q=q, mask=mask, block=block: block_sparse_attention(q, q, q, mask, block_size=block,
                                                                              causal=True))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    parser.add_argument("--quick", action="store_true", help="bfloat16 and head dims 64/128 only (CI)")
    parser.add_argument("--all-configs", action="store_true", help="also compile the configs pruning drops")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--cases", default="", help="only the cases whose name matches this regular expression")
    parser.add_argument("--set", choices=("course", "bench"), default="course",
                        help="course: every kernel at the course's shapes (the default); bench: the flash "
                             "benchmark's own launches, to fill Triton's cache before it runs")
    parser.add_argument("--no-prune", action="store_true", help="keep every configuration (to see the failures)")
    args = parser.parse_args(argv)

    compiler = AheadOfTimeCompiler(args.arch, args.all_configs, args.no_prune)
    from attnlib.kernels import block_sparse, decode

    for module in (block_sparse, decode):  # CPU tensors are fine: nothing is launched, only compiled
        module.check_launchable = lambda *args: None
    start = time.perf_counter()
    if args.set == "bench":
        cases = list(bench_cases(args.quick))
    else:
        cases = [*flash_cases(args.quick), *decode_cases(args.quick), *block_sparse_cases(args.quick)]
    cases = [(name, launch) for name, launch in cases if re.search(args.cases, name)
             and (args.arch >= 90 or "fwd-gluon" not in name)]  # the Gluon kernel is written for Hopper's wgmma
    if not cases:
        parser.error(f"no case matches --cases {args.cases!r}")
    for name, launch in cases:
        compiler.case = name
        compiler.head_dim = int(re.search(r"D=(\d+)", name).group(1))
        compiler.dtype = re.search(r"\b(bfloat16|float16|float32|bf16)\b", name).group(1).replace("bf16", "bfloat16")
        case_start, before = time.perf_counter(), len(compiler.rows)
        with compiler.catching_launches():
            launch()
        print(f"  {name}: {len(compiler.rows) - before} kernels in {time.perf_counter() - case_start:.0f} s",
              file=sys.stderr, flush=True)
    rows = compiler.rows
    print(f"Triton {triton.__version__}, target sm_{args.arch} (shared memory limit {compiler.limit} B), "
          f"{len(rows)} kernels compiled in {time.perf_counter() - start:.0f} s")
    print(f"{'case':<34} {'kernel':<26} {'tile':<13} {'w':>2} {'s':>2} {'shared':>7} {'regs':>4} {'spill':>5} "
          f"{'mma':>5} {'/SM':>3}  note")
    for r in rows:
        tile = "x".join(str(r[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK") if k in r)
        note = r["error"] or ("" if r["fits_shared"] else "OVER SHARED LIMIT")
        if not r["kept_by_pruning"]:
            note = "(pruned) " + note
        shared = f"{r['shared_bytes'] // 1024}K" if r["error"] is None else "-"
        regs = r.get("registers", "-")
        spill = r.get("spill_bytes", "-")
        if r.get("maxnreg"):
            note = f"maxnreg {r['maxnreg']} " + note
        if r.get("exp2_during_mma"):  # the softmax placed to overlap a matrix product (resources.exp2_during_mma)
            note = f"{r['exp2_during_mma']} exp2 during wgmma " + note
        print(f"{r['case']:<34} {r['kernel']:<26} {tile:<13} {r['num_warps']:>2} {r['num_stages']:>2} "
              f"{shared:>7} {regs:>4} {spill:>5} {_mma(r):>5} {r.get('programs_per_sm', '-'):>3}  {note}")
    problems = [r for r in rows if r["kept_by_pruning"] and (r["error"] or not r["fits_shared"])]
    by_kernel: dict = {}
    for r in rows:
        by_kernel.setdefault((r["case"], r["kernel"]), []).append(r["error"] is None and r["fits_shared"])
    unusable = [key for key, ok in by_kernel.items() if not any(ok)]
    # A kernel whose every kept configuration spills has no good choice: in half precision at head
    # dims up to 128 (the benchmark's) that is a failure. Larger head dims may spill, and float32
    # (IEEE products without tensor cores, for accuracy, not speed) does.
    spill_free: dict = {}
    for r in rows:
        if r["kept_by_pruning"] and r["head_dim"] <= 128 and r["dtype"] != "float32":
            spill_free.setdefault((r["case"], r["kernel"]), []).append(r["error"] is None and not r["spill_bytes"])
    all_spill = [key for key, ok in spill_free.items() if not any(ok)]
    # On Hopper the attention matmuls must compile to wgmma (HGMMA in the SASS): a half-precision
    # kernel whose first kept configuration (the one used without autotuning) has none fell back
    # to the older mma.sync. Decoding is exempt: its 16-row query tiles are below wgmma's 64 rows,
    # and it is memory-bound anyway.
    no_wgmma = []
    if args.arch >= 90:
        first_kept: dict = {}
        for r in rows:
            if r["kept_by_pruning"] and r["error"] is None and r["dtype"] != "float32" and "decode" not in r["kernel"] \
                    and r["kernel"] != "flash_bwd_delta_kernel":
                first_kept.setdefault((r["case"], r["kernel"]), r)
        no_wgmma = [key for key, r in first_kept.items() if not r["matrix_instructions"]["HGMMA"]]
    if args.json:
        args.json.write_text(json.dumps({"triton": triton.__version__, "torch": torch.__version__,
                                         "arch": args.arch, "shared_limit": compiler.limit, "rows": rows}, indent=1))
    for r in problems:
        print(f"PROBLEM: {r['case']} {r['kernel']} {r}")
    for key in unusable:
        print(f"UNUSABLE: no configuration of {key[1]} compiles and fits for {key[0]}")
    for key in all_spill:
        print(f"ALL SPILL: every kept configuration of {key[1]} spills registers for {key[0]}")
    for key in no_wgmma:
        print(f"NO WGMMA: the first kept configuration of {key[1]} has no HGMMA instruction for {key[0]}")
    print(f"{len(problems)} kept configurations failed or overflowed; {len(unusable)} kernels unusable; "
          f"{len(all_spill)} half-precision kernels with no spill-free configuration at D <= 128; "
          f"{sum(1 for r in rows if r.get('spill_bytes'))} compiled kernels spill registers; "
          f"{len(no_wgmma)} half-precision matmul kernels without wgmma on sm_{args.arch}")
    return 1 if problems or unusable or all_spill or no_wgmma else 0


def _mma(row: dict) -> str:
    """'wgmma', 'mma' or '-': the tensor-core instructions the kernel compiled to."""
    found = row.get("matrix_instructions") or {}
    return "wgmma" if found.get("HGMMA") else "mma" if found.get("HMMA") else "-"


if __name__ == "__main__":
    sys.exit(main())
