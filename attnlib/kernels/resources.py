"""What a Triton kernel asks of a GPU (shared memory, registers, spills), read from the compiler without one.

Triton compiles ahead of time for a named target: Python -> Triton IR -> PTX -> a cubin
from the ``ptxas`` that ships with Triton, with no GPU and no driver
(``GPUTarget("cuda", 90, 32)`` is Hopper: H100/H200). :func:`compile_report` runs any
launch code (attnlib's wrappers, say) with every kernel launch caught and compiled for the
target instead of run; an autotuned kernel is compiled once per configuration its pruning
keeps (``all_configs=True``: also those it drops). For each compiled kernel it reads, with
the ``cuobjdump`` Triton ships, what decides whether a configuration can be fast:

* ``shared_bytes``: shared memory per program (the K/V tiles times ``num_stages``), against
  the target's per-block limit (``fits_shared``; a launch over it fails);
* ``registers`` per thread (at most 255) and ``spill_bytes``: what did not fit in registers
  and went to slow local memory;
* ``matrix_instructions``: the tensor-core instructions in the disassembly (on Hopper,
  ``HGMMA`` is ``wgmma``, the fast path; ``HMMA`` the older ``mma.sync``);
* ``programs_per_sm``: how many programs of this kernel one streaming multiprocessor can hold
  at once (:func:`programs_per_sm`, from the shared memory and registers above). Two or more
  let the hardware run one program's softmax while another's matrix multiplies use the
  tensor cores; one leaves that overlap to the program itself.

The numbers are the compiler's, so they hold for that Triton version and target, and they
say nothing about speed or correctness (time on a GPU; test in the interpreter).
:func:`flash_report` is one FlashAttention kernel's search space (the forward's, or the
backward's dK/dV or dQ), and ``python -m attnlib.kernels.resources`` prints it as JSON;
:func:`flash_report_in_subprocess` runs that in a fresh process, because compiling needs
Triton *without* ``TRITON_INTERPRET``, which a CPU session has already set. This uses
Triton's launch internals (checked under Triton 3.6 and 3.9); ``tools/compile_kernels.py``
runs it over every attnlib kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from ._interpreter_compat import interpreting

__all__ = ["SHARED_LIMIT", "shared_limit", "SM_SHARED", "programs_per_sm", "AheadOfTimeCompiler", "compile_report",
           "flash_report", "flash_report_in_subprocess", "FLASH_KERNELS", "matrix_instructions", "triton_ir_of",
           "pointer_offset_widths"]

# Shared memory one block may use (opt-in maximum), bytes, by compute capability x10.
SHARED_LIMIT = {75: 65536, 80: 166912, 86: 101376, 89: 101376, 90: 232448}


def shared_limit(arch: int) -> int:
    """Bytes of shared memory one block may use on compute capability ``arch / 10`` (a guess if unknown)."""
    return SHARED_LIMIT.get(arch, 101376)


# Shared memory of one streaming multiprocessor (SM), bytes, by compute capability x10 (CUDA
# programming guide, "compute capabilities"); every resident block also costs 1 KiB of it.
SM_SHARED = {75: 65536, 80: 167936, 86: 102400, 89: 102400, 90: 233472}
_REGISTERS_PER_SM = 65536  # 32-bit registers, every listed architecture
_MAX_WARPS_PER_SM = {75: 32, 80: 64, 86: 48, 89: 48, 90: 64}


def programs_per_sm(shared_bytes: int, registers: int, warps: int, arch: int = 90) -> int:
    """Programs (thread blocks) of one kernel resident on one SM at once: the least of three limits.

    * shared memory: ``SM_SHARED[arch] // (shared_bytes + 1024)``;
    * registers: each warp's are allocated in units of 256 (``registers`` per thread rounded up
      to a multiple of 8, times 32 threads), and an SM has 65,536;
    * threads: at most ``_MAX_WARPS_PER_SM[arch]`` warps.

    0 means the program cannot launch at all (too much shared memory for one SM).
    """
    for name, value in (("shared_bytes", shared_bytes), ("registers", registers), ("warps", warps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if warps == 0:
        raise ValueError("warps must be at least 1, got 0")
    by_shared = SM_SHARED.get(arch, 101376) // (shared_bytes + 1024)
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_registers = _REGISTERS_PER_SM // (per_warp * warps)
    by_warps = _MAX_WARPS_PER_SM.get(arch, 48) // warps
    return min(by_shared, by_registers, by_warps)


_RESOURCES = re.compile(r"Function (\w+):\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def _require_compiler_mode() -> None:
    if interpreting():
        raise RuntimeError("compiling for a GPU needs Triton without TRITON_INTERPRET: unset it before Triton is "
                           "imported, or use flash_report_in_subprocess()")


class AheadOfTimeCompiler:
    """Stands in for kernel launches (inside :meth:`catching_launches`): compiles each for ``arch``, one row each.

    ``rows`` holds what each compiled kernel needs; ``kernels`` the compiled kernels that
    succeeded, whose ``asm`` dict has each stage of the compiler's output (``"ttir"``,
    ``"ttgir"``, ``"ptx"``, ``"cubin"``), to read what the compiler made of a loop.

    Set ``case``, ``head_dim`` and ``dtype`` before a launch to label its rows.
    """

    def __init__(self, arch: int = 90, all_configs: bool = False, no_prune: bool = False):
        _require_compiler_mode()
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        self.target = GPUTarget("cuda", arch, 32)
        self.backend = make_backend(self.target)
        self.arch = arch
        self.limit = shared_limit(arch)
        self.all_configs = all_configs
        self.no_prune = no_prune  # treat every configuration as kept (shows what pruning protects from)
        self.rows: list[dict] = []
        self.kernels: list = []  # each compiled kernel (its .asm holds "ttgir", "ptx", "cubin"), in order
        self.case, self.head_dim, self.dtype = "", 0, ""
        self.cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if not self.cuobjdump.exists():
            raise RuntimeError(f"this Triton has no NVIDIA backend tools ({self.cuobjdump} is missing)")

    @contextlib.contextmanager
    def catching_launches(self):
        """Within: every ``kernel[grid](...)`` and autotuned launch is compiled, not run; prunes for this target."""
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction

        from . import _flash_config

        compiler = self

        def jit_run(fn, *args, grid=None, warmup=False, **kwargs):
            return compiler.compile_launch(fn, *args, **kwargs)

        def autotuner_run(tuner, *args, **kwargs):
            return compiler.compile_autotuned(tuner, *args, **kwargs)

        saved = JITFunction.run, Autotuner.run, _flash_config._shared_memory_budget
        JITFunction.run, Autotuner.run = jit_run, autotuner_run
        _flash_config._shared_memory_budget = lambda: compiler.limit  # prune as the target GPU would
        try:
            yield self
        finally:
            JITFunction.run, Autotuner.run, _flash_config._shared_memory_budget = saved

    def compile_launch(self, fn, *args, kept=True, **kwargs):
        """Compile one launch of the ``@triton.jit`` function ``fn`` and append its row."""
        from triton import knobs
        from triton.compiler import ASTSource
        from triton.compiler import compile as triton_compile
        from triton.runtime.jit import create_function_from_signature

        constants = {k: v for k, v in kwargs.items() if k.isupper()}
        row = {"case": self.case, "kernel": fn.__name__, "kept_by_pruning": kept, "head_dim": self.head_dim,
               "dtype": self.dtype, "num_warps": kwargs.get("num_warps", 4), "num_stages": kwargs.get("num_stages", 3),
               "maxnreg": kwargs.get("maxnreg"),
               **{k: v for k, v in constants.items() if k.startswith("BLOCK") or k in ("CAUSAL", "EVEN_D")}}
        if fn.is_gluon():  # a Gluon kernel's tiles are its descriptors' block shapes, its pipeline depth STAGES
            blocks = [a.block_shape for a in args if hasattr(a, "block_shape")]
            if len(blocks) >= 2:
                row.update(BLOCK_M=blocks[0][0], BLOCK_N=blocks[1][0])
            row["num_stages"] = constants.get("STAGES", row["num_stages"])
        # The options JITFunction.run adds before binding (Triton 3.6 and 3.9), so that a kernel
        # compiled here has the cache key a real launch computes (a warm cache then serves the launch).
        kwargs.setdefault("debug", fn.debug or knobs.runtime.debug)
        for option in ("instrumentation_mode", "fpsan_homomorphic_casts"):
            if hasattr(knobs.compilation, option):
                kwargs.setdefault(option, getattr(knobs.compilation, option))
        start = time.perf_counter()
        try:
            binder = create_function_from_signature(fn.signature, fn.params, self.backend)
            bound, specialization, options = binder(*args, **kwargs)
            options, signature, constexprs, attrs = fn._pack_args(self.backend, kwargs, bound, specialization, options)
            source = ASTSource
            if fn.is_gluon():  # a @gluon.jit kernel: same binding, Gluon's front end
                from triton.experimental.gluon._runtime import GluonASTSource as source
            kernel = triton_compile(source(fn, signature, constexprs, attrs), target=self.target,
                                    options=options.__dict__)
            row.update(self._resources(kernel))
            self.kernels.append(kernel)
            row["error"] = None
        except Exception as e:  # noqa: BLE001 - a failure is a finding, reported with the others
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"
        row["compile_s"] = round(time.perf_counter() - start, 2)
        self.rows.append(row)

    def compile_autotuned(self, tuner, *args, **kwargs):
        """Compile an autotuned launch once per configuration pruning keeps (or every one: ``all_configs``)."""
        nargs = dict(zip(tuner.arg_names, args))
        meta = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}  # the launch's own keywords
        kept = tuner.configs
        if tuner.early_config_prune and not self.no_prune:
            kept = tuner.early_config_prune(tuner.configs, nargs, **meta)
        for config in tuner.configs if self.all_configs else kept:
            full = {**nargs, **meta, **config.all_kwargs()}
            if config.pre_hook:
                config.pre_hook(full)  # e.g. the TMA kernel's descriptor tile shapes
            self.compile_launch(tuner.fn, *args, kept=any(config is c for c in kept), **meta, **config.all_kwargs())

    def _resources(self, kernel) -> dict:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            text = subprocess.run([str(self.cuobjdump), "-res-usage", f.name], capture_output=True, text=True,
                                  check=True).stdout
            sass = subprocess.run([str(self.cuobjdump), "--dump-sass", f.name], capture_output=True, text=True,
                                  check=True).stdout
        found = _RESOURCES.search(text)
        if not found:
            raise RuntimeError(f"cuobjdump printed no resource usage:\n{text}")
        regs, stack, static_shared, local = (int(found.group(i)) for i in (2, 3, 4, 5))
        shared = int(kernel.metadata.shared) + static_shared
        warps = int(kernel.metadata.num_warps)  # more than asked where warp-specialised
        return {"shared_bytes": shared, "registers": regs, "spill_bytes": local + stack,
                "fits_shared": shared <= self.limit, "matrix_instructions": matrix_instructions(sass),
                "warps_compiled": warps, "programs_per_sm": programs_per_sm(shared, regs, warps, self.arch),
                "exp2_during_mma": exp2_during_mma(kernel.asm["ptx"])}


def matrix_instructions(sass: str) -> dict:
    """Tensor-core instructions in a disassembly, by kind.

    ``HGMMA``: Hopper's warpgroup matrix multiply (``wgmma``, sm_90), issued by four warps
    together and reading operands from shared memory; ``HMMA``: the older warp-level
    ``mma.sync`` (Ampere's path, slower on Hopper). A float16/bfloat16 ``tl.dot`` compiled for
    sm_90 on only ``HMMA`` is on the slow path; one with neither is not on tensor cores.
    """
    counts = {"HGMMA": 0, "HMMA": 0}
    for line in sass.splitlines():
        for kind in counts:
            if re.search(rf"\b{kind}\.", line):
                counts[kind] += 1
    return counts


def exp2_during_mma(ptx: str) -> int:
    """How many ``ex2`` instructions of a kernel's PTX sit where an asynchronous ``wgmma`` is in flight.

    Hopper's warp-group matrix products are asynchronous: each ``wgmma`` batch ends with
    ``wgmma.commit_group``, and ``wgmma.wait_group N`` blocks until at most ``N`` batches are
    still running. Reading the PTX in order and counting the batches committed and not yet
    waited for, an ``ex2`` (the softmax's exponential) met while that count is above zero runs
    *during* a matrix product: the softmax overlaps the tensor cores. A static count in program
    order (a loop body counted once), so 0 means no exponential is ever placed to overlap a
    product; on architectures without ``wgmma`` it is always 0.
    """
    in_flight = count = 0
    for line in ptx.splitlines():
        text = line.strip()
        if text.startswith("wgmma.commit_group"):
            in_flight += 1
        elif text.startswith("wgmma.wait_group"):
            in_flight = min(in_flight, int(re.search(r"(\d+)\s*;", text).group(1)))
        elif in_flight and re.match(r"(@!?%p\d+\s+)?ex2\.", text):
            count += 1
    return count


class _StopAfterTTIR(Exception):
    """Raised by the stage after Triton IR: the front end ran, nothing else is compiled."""


def triton_ir_of(launch: Callable[[], object], *, arch: int = 90) -> dict:
    """``{kernel name: Triton IR (TTIR) text}`` of every kernel ``launch()`` would launch (once per
    configuration kept), compiled for ``arch`` only as far as the Triton IR: the front end and its
    passes, seconds where a cubin takes tens. Reading the IR says what the kernel computes before
    any GPU lowering, e.g. the integer width of its address arithmetic (:func:`pointer_offset_widths`)."""
    from triton.compiler import make_backend
    from triton.backends.compiler import GPUTarget

    cls = type(make_backend(GPUTarget("cuda", arch, 32)))
    found: dict = {}
    original = cls.add_stages

    def add_stages(self, stages, options, *args, **kwargs):
        original(self, stages, options, *args, **kwargs)

        def stop(module, metadata):  # the stage after "ttir" receives the Triton IR
            text = str(module)
            name = re.search(r"tt\.func public @(\w+)", text)
            found.setdefault(name.group(1) if name else f"kernel{len(found)}", text)
            raise _StopAfterTTIR()

        after = list(stages)[list(stages).index("ttir") + 1]
        stages[after] = stop

    compiler = AheadOfTimeCompiler(arch)
    cls.add_stages = add_stages
    try:
        with compiler.catching_launches():
            launch()
    finally:
        cls.add_stages = original
    return found


def pointer_offset_widths(ttir: str) -> dict:
    """``{pointer argument: sorted integer widths}`` of the scalar offsets a kernel adds to its pointer
    arguments directly (``tt.addptr %Q, %off : !tt.ptr<...>, i64``; Triton 3.6 names them ``%arg0``...),
    read from its Triton IR.

    Writing ``Q + off_b * stride_qb + ...`` adds the batch offset to the argument first, as a scalar:
    ``i32`` there means the offset wraps at 2**31 elements, ``i64`` that it does not."""
    signature = re.search(r"tt\.func public @\w+\((.*?)\)\s*(attributes|\{)", ttir, re.S)
    args = set(re.findall(r"(%[\w.]+): !tt\.ptr<", signature.group(1))) if signature else set()
    widths: dict = {}
    for base, width in re.findall(r"tt\.addptr (%[\w.]+), %[\w.#]+ : !tt\.ptr<[^>]*>, i(\d+)", ttir):
        if base in args:
            widths.setdefault(base, set()).add(int(width))
    return {a: sorted(w) for a, w in sorted(widths.items())}


def compile_report(launch: Callable[[], object], *, arch: int = 90, all_configs: bool = False,
                   case: str = "", head_dim: int = 0, dtype: str = "") -> list[dict]:
    """Rows (one per compiled kernel and configuration) of everything ``launch()`` would launch."""
    compiler = AheadOfTimeCompiler(arch, all_configs)
    compiler.case, compiler.head_dim, compiler.dtype = case, head_dim, dtype
    with compiler.catching_launches():
        launch()
    return compiler.rows


FLASH_KERNELS = ("portable", "tma", "dkdv", "dq", "ws", "gluon", "gluon-ws", "gluon-pingpong",
                 "one-pass")  # the forward kernels, the backward's dK/dV and dQ, and the experimental kernels of
# attnlib.kernels.experimental: the Hopper forwards (fwd_ws, gluon, gluon_ws, gluon_pingpong) and the one-pass
# backward (one_pass_bwd: the dK/dV kernel adding dQ with atomic adds)


def flash_report(head_dim: int = 128, dtype: str = "float16", causal: bool = False, arch: int = 90,
                 kernel: str = "portable",
                 configs: Optional[Sequence[tuple[int, ...]]] = None) -> list[dict]:
    """One FlashAttention kernel compiled for ``arch`` at one head dim: a row per configuration.

    ``kernel``: ``"portable"`` or ``"tma"`` (the forward; tensor descriptors are Hopper only),
    ``"dkdv"`` or ``"dq"`` (the backward's two kernels), ``"ws"`` (the experimental
    warp-specialised forward, causal or not; its configurations are ``WS_CONFIGS``, none
    pruned), ``"gluon"`` (the experimental Gluon forward: ``GLUON_CONFIGS``,
    lengths whole tiles, causal only with square tiles), ``"gluon-ws"`` (the same with a loader warp:
    ``GLUON_WS_CONFIGS``), ``"gluon-pingpong"`` (and two consumer warp groups taking turns:
    ``GLUON_PINGPONG_CONFIGS``), ``"one-pass"`` (the dK/dV kernel adding dQ with atomic adds:
    ``experimental.one_pass_bwd.ONE_PASS_CONFIGS``). ``configs`` (``(BLOCK_M, BLOCK_N,
    num_warps, num_stages)`` tuples) replaces the kernel's autotuning space, to ask about tiles
    it does not hold; every configuration is compiled, and ``kept_by_pruning`` says which ones
    the autotuner would time. A fifth number in a tuple caps the registers per thread (``maxnreg``).
    """
    import torch
    import triton

    from . import _flash_bwd, _flash_fwd, _flash_fwd_tma, flash

    if kernel not in FLASH_KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, FLASH_KERNELS))}, got {kernel!r}")
    if kernel in ("tma", "ws", "gluon", "gluon-ws", "gluon-pingpong") and arch < 90:
        raise ValueError(f"the {kernel} kernel needs compute capability 9.0 or newer (arch >= 90), got arch={arch}")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"dtype must name a torch dtype such as 'float16', got {dtype!r}")
    b, h, n = 2, 4, 1024  # sizes do not matter (lengths are not specialized); the head dim and dtype do
    q, k, v = (torch.empty(b, h, n, head_dim, dtype=torch_dtype) for _ in range(3))
    lse, delta = torch.empty(b * h, n), torch.empty(b * h, n)  # what the backward reads besides q, k, v, dO
    scale = head_dim ** -0.5
    if kernel == "ws":
        from .experimental.fwd_ws import WS_CONFIGS, flash_fwd_ws

        rows = []
        for config in configs or WS_CONFIGS:
            rows += compile_report(lambda c=tuple(config): flash_fwd_ws(q, k, v, causal, scale, config=c), arch=arch,
                                   case="flash forward (ws)", head_dim=head_dim, dtype=dtype)
        return rows
    if kernel.startswith("gluon"):
        from .experimental import gluon_forwards
        from .experimental.gluon import unhandled

        forward, space = gluon_forwards()[kernel]
        rows = []
        for config in configs or space:
            if unhandled(q, k, causal, config[0], config[1]):
                continue  # e.g. a non-square tile when causal: the kernel refuses it before compiling
            new = compile_report(lambda c=tuple(config): forward(q, k, v, causal, scale, config=c),
                                 arch=arch, case=f"flash forward ({kernel})", head_dim=head_dim, dtype=dtype)
            for row in new:  # the program's tile and warps as configured (the ping-pong's descriptors tile half)
                row.update(BLOCK_M=config[0], BLOCK_N=config[1], num_warps=config[2])
            rows += new
        return rows
    if kernel == "one-pass":  # the dK/dV kernel adding dQ with atomic adds: fixed configurations, no tuner
        from .experimental.one_pass_bwd import ONE_PASS_CONFIGS, backward_one_pass

        rows = []
        for config in configs or ONE_PASS_CONFIGS:
            def launch(c=tuple(config)):
                return backward_one_pass(q, k, v, q, lse, q, causal, scale, config=c)  # o, dO of q's shape
            rows += compile_report(launch, arch=arch, case="flash backward (one-pass)", head_dim=head_dim,
                                   dtype=dtype)
        return [row for row in rows if row["kernel"] != "flash_bwd_delta_kernel"]
    tuner, launch = {
        "portable": (_flash_fwd.flash_fwd_kernel, lambda: flash._forward_portable(q, k, v, causal, scale)),
        "tma": (_flash_fwd_tma.flash_fwd_tma_kernel, lambda: flash._forward_tma(q, k, v, causal, scale)),
        "dkdv": (_flash_bwd.flash_bwd_dkdv_kernel,
                 lambda: flash._backward_dkdv(q, k, v, q, lse, delta, causal, scale)),  # dO has q's shape
        "dq": (_flash_bwd.flash_bwd_dq_kernel, lambda: flash._backward_dq(q, k, v, q, lse, delta, causal, scale)),
    }[kernel]
    saved = tuner.configs
    if configs is not None:  # the space's last configuration stays last: pruning treats it as the fallback
        tuner.configs = [triton.Config({"BLOCK_M": c[0], "BLOCK_N": c[1]}, num_warps=c[2], num_stages=c[3],
                                       maxnreg=c[4] if len(c) > 4 else None, pre_hook=saved[0].pre_hook)
                         for c in configs] + saved[-1:]
    part = "forward" if kernel in ("portable", "tma") else "backward"
    try:
        rows = compile_report(launch, arch=arch, all_configs=True, case=f"flash {part} ({kernel})",
                              head_dim=head_dim, dtype=dtype)
    finally:
        tuner.configs = saved
    return rows if configs is None else rows[:len(configs)]


def flash_report_in_subprocess(timeout: float = 300, **kwargs) -> list[dict]:
    """:func:`flash_report` in a fresh Python without ``TRITON_INTERPRET`` (usable from a CPU session)."""
    args = [sys.executable, "-m", "attnlib.kernels.resources"]
    for name, value in kwargs.items():
        if name == "configs":
            value = ";".join(",".join(str(x) for x in c) for c in value)
        elif name == "causal":
            if value:
                args.append("--causal")
            continue
        args += [f"--{name.replace('_', '-')}", str(value)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _parse_configs(text: str) -> list[tuple[int, ...]]:
    configs = []
    for item in filter(None, text.split(";")):
        parts = item.split(",")
        if len(parts) not in (4, 5) or not all(p.strip().isdigit() for p in parts):
            raise argparse.ArgumentTypeError("--configs takes BLOCK_M,BLOCK_N,num_warps,num_stages[,maxnreg];... "
                                             f"got {item!r}")
        configs.append(tuple(int(p) for p in parts))
    return configs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnlib.kernels.resources",
                                     description="A FlashAttention kernel's configurations compiled for a GPU "
                                                 "target (no GPU needed): JSON rows of shared memory, registers, "
                                                 "spills.")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200, 75: T4)")
    parser.add_argument("--kernel", default="portable", choices=FLASH_KERNELS,
                        help="the forward's portable or tma kernel, the backward's dkdv or dq, or an "
                             "experimental kernel (ws: the warp-specialised forward, gluon: the Gluon "
                             "forward, gluon-ws: the same with a loader warp, gluon-pingpong: and two consumer "
                             "warp groups taking turns, one-pass: the backward adding dQ with atomic adds)")
    parser.add_argument("--configs", type=_parse_configs, default=None,
                        help="BLOCK_M,BLOCK_N,num_warps,num_stages[,maxnreg];... instead of the autotuning space "
                             "(maxnreg caps the registers per thread)")
    args = parser.parse_args(argv)
    rows = flash_report(head_dim=args.head_dim, dtype=args.dtype, causal=args.causal, arch=args.arch,
                        kernel=args.kernel, configs=args.configs)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
