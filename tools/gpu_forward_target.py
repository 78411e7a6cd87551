"""The forward-target run: attnlib's Hopper forward candidates against SDPA, in one ~5-minute device call.

    python tools/gpu_forward_target.py [--out forward-target.json] [--budget 270] [--rounds 5] [--dry-run]

1. compile, in parallel processes, only the forward kernels it times (ahead of time for sm_90, at the
   fixed tiles below: Triton's cache then serves the launches; the rows say each kernel's shared memory,
   registers, spills and programs per SM, e.g. whether the ping-pong's 128x128 3-stage tile fits);
2. the experimental candidates' correctness canary (:func:`attnlib.bench.canary.run_in_child`: child
   processes with time limits); a candidate that fails it, or whose output at a timed shape differs
   from SDPA-cuDNN's by more than :data:`attnlib.bench.compare.CHECK_TOL` (relative, in norm), is not timed;
3. time fixed configurations (no autotuning) at D=128 bf16, N = 4k and 16k, causal and not
   (B * N = 16k tokens, H = 16), interleaved over ``--rounds`` rounds (the order rotates each round):
   each candidate and three references, ``sdpa_cudnn`` (inputs without ``requires_grad``: cuDNN does not
   write the log-sum-exp), ``sdpa_cudnn_grad`` (inputs with ``requires_grad``, forward only: it does, as
   attnlib's forwards always do) and ``sdpa_flash``.

The JSON (rewritten after each shape, so a time limit costs only what was not measured) holds
``machine``, ``candidates``, ``compile`` (rows of :mod:`attnlib.kernels.resources`), ``canary``
(None: passed, else why not), ``rows`` (one per shape, implementation and round: ``ms``) and
``ratios``: per candidate, shape and reference, ``median``, ``min`` and ``max`` over the rounds of
``reference ms / candidate ms`` (above 1: the candidate is faster). ``--dry-run`` does everything but
compiling, the canary and the timing on any machine (a CPU in CI): it checks the candidate list
against the shapes (what each kernel does not handle) and writes the JSON with the plan.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (name, kernel, (BLOCK_M, BLOCK_N, num_warps, num_stages[, maxnreg])): fixed tiles, nothing autotuned.
CANDIDATES = (
    ("tma 128x128/8w/3st", "tma", (128, 128, 8, 3)),
    ("tma 128x64/8w/3st", "tma", (128, 64, 8, 3)),
    ("tma 128x64/8w/2st/128regs (2/SM)", "tma", (128, 64, 8, 2, 128)),
    ("tma 128x64/4w/2st (2/SM)", "tma", (128, 64, 4, 2)),
    ("ws 128x64/4w/3st", "ws", (128, 64, 4, 3)),
    ("ws 128x128/4w/2st", "ws", (128, 128, 4, 2)),
    ("gluon-pingpong 128x128/2st", "gluon-pingpong", (128, 128, 8, 2)),
    ("gluon-pingpong 128x128/3st", "gluon-pingpong", (128, 128, 8, 3)),
    ("gluon 128x128/2st", "gluon", (128, 128, 8, 2)),
    ("gluon-ws 128x128/2st", "gluon-ws", (128, 128, 8, 2)),
)
REFERENCES = ("sdpa_cudnn", "sdpa_cudnn_grad", "sdpa_flash")
SEQ_LENS = (4096, 16384)
HEAD_DIM, HEADS, TOKENS = 128, 16, 16384


def shapes() -> list[dict]:
    return [{"batch": TOKENS // n, "heads": HEADS, "seq_len": n, "head_dim": HEAD_DIM, "causal": causal}
            for n in SEQ_LENS for causal in (False, True)]


def unhandled(kind: str, config: tuple, shape: dict) -> list[str]:
    """What the candidate does not handle at ``shape`` (empty: it does), from the shapes alone."""
    import torch

    if kind in ("tma", "portable"):
        return []
    from attnlib.kernels import experimental

    q = torch.empty(1, shape["heads"], shape["seq_len"], shape["head_dim"], dtype=torch.float16, device="meta")
    try:
        return experimental.unhandled(kind, config, q, q, q, shape["causal"])
    except ImportError as e:  # a Triton without Gluon
        return [f"{type(e).__name__}: {e}"]


def plan() -> dict:
    return {"candidates": [{"name": n, "kernel": k, "config": list(c)} for n, k, c in CANDIDATES],
            "references": list(REFERENCES), "shapes": shapes(),
            "unhandled": {n: {f"N={s['seq_len']} {'causal' if s['causal'] else 'full'}": unhandled(k, c, s)
                              for s in shapes()} for n, k, c in CANDIDATES}}


def compile_all(workers: int = 8) -> list[dict]:
    """Each candidate compiled for sm_90 at its tile, causal and not, in parallel child processes."""
    from attnlib.kernels.resources import flash_report_in_subprocess

    jobs = [(name, kernel, config, causal) for name, kernel, config in CANDIDATES for causal in (False, True)]

    def one(job):
        name, kernel, config, causal = job
        try:
            rows = flash_report_in_subprocess(kernel=kernel, configs=[config], head_dim=HEAD_DIM, dtype="bfloat16",
                                              causal=causal, timeout=240)
        except Exception as e:  # noqa: BLE001 - a compile failure is a finding, reported in the JSON
            rows = [{"error": f"{type(e).__name__}: {str(e)[-500:]}"}]
        return [{"candidate": name, "causal": causal, **r} for r in rows]

    with ThreadPoolExecutor(workers) as pool:
        return [row for rows in pool.map(one, jobs) for row in rows]


def _callables(shape: dict, gen):
    """``{implementation: fn()}`` at ``shape``, and the cuDNN reference output to check against."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from attnlib.bench.flash import _ladder_step

    b, h, n, d, causal = (shape[k] for k in ("batch", "heads", "seq_len", "head_dim", "causal"))
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

    def sdpa(backend, *xs):
        def fn():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(*xs, is_causal=causal)
        return fn

    fns = {"sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION, q, k, v),
           "sdpa_cudnn_grad": sdpa(SDPBackend.CUDNN_ATTENTION, qg, kg, vg),
           "sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION, q, k, v)}
    for name, kernel, config in CANDIDATES:
        fns[name] = _ladder_step(kernel, config, q, k, v, causal)
    with torch.no_grad():
        return fns, fns["sdpa_cudnn"]()


def ratios(rows: list[dict]) -> list[dict]:
    """Per candidate, shape and reference: median, min and max over the rounds of reference ms / candidate ms."""
    by = {}
    for r in rows:
        by.setdefault((r["seq_len"], r["causal"], r["round"]), {})[r["impl"]] = r["ms"]
    out = {}
    for (n, causal, _), ms in by.items():
        for name, _, _ in CANDIDATES:
            for ref in REFERENCES:
                if ms.get(name) and ms.get(ref):
                    out.setdefault((name, n, causal, ref), []).append(ms[ref] / ms[name])
    return [{"candidate": name, "seq_len": n, "causal": causal, "reference": ref, "rounds": len(v),
             "median": statistics.median(v), "min": min(v), "max": max(v)}
            for (name, n, causal, ref), v in sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0]))]


def run(out: Path, budget: float, rounds: int) -> dict:
    import torch

    from attnlib.bench import canary
    from attnlib.bench.compare import CHECK_TOL, rel_error
    from attnlib.bench.flash import SCREENED
    from attnlib.bench.env import machine_info
    from attnlib.bench.timing import bench_ms

    start = time.monotonic()
    report = {"machine": machine_info(), **plan(), "compile": [], "canary": {}, "checks": [], "rows": [],
              "ratios": []}

    def save():
        report["ratios"] = ratios(report["rows"])
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        out.write_text(json.dumps(report, indent=1, default=str))

    report["compile"] = compile_all()
    save()
    kinds = sorted({k for _, k, _ in CANDIDATES if k not in ("tma", "portable")})
    report["canary"] = canary.run_in_child(budget_s=0.25 * budget, kinds=kinds)
    SCREENED.clear()
    SCREENED.update(report["canary"])  # a candidate that failed in its child process is not run here
    save()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape in shapes():
        if time.monotonic() - start > budget:
            report.setdefault("skipped", []).append(shape)
            continue
        fns, want = _callables(shape, gen)
        for name in list(fns):
            if name in REFERENCES:
                continue
            try:
                with torch.no_grad():
                    err = rel_error(fns[name](), want)
                problem = None if err < CHECK_TOL else f"relative error {err:.3g} against sdpa_cudnn"
            except Exception as e:  # noqa: BLE001 - unhandled shape, failed canary, no TMA here: not timed
                err, problem = None, f"{type(e).__name__}: {str(e)[:300]}"
            report["checks"].append({**shape, "impl": name, "rel_error_vs_sdpa_cudnn": err, "problem": problem})
            if problem:
                del fns[name]
        names = list(fns)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: no one always runs first
                ms = bench_ms(fns[name], warmup=5, rep=20)
                report["rows"].append({**shape, "impl": name, "round": r, "ms": ms})
        save()
        del fns, want
        torch.cuda.empty_cache()
    save()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("forward-target.json"))
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for compile, canary and timing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true", help="plan and check the candidates only (any machine)")
    args = parser.parse_args(argv)
    if args.dry_run:
        report = {"dry_run": True, **plan(), "compile": [], "canary": {}, "checks": [], "rows": [], "ratios": []}
        args.out.write_text(json.dumps(report, indent=1))
        print(f"dry run: {len(CANDIDATES)} candidates, {len(shapes())} shapes, {args.rounds} rounds -> {args.out}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("the forward-target run needs a CUDA GPU (try --dry-run)", file=sys.stderr)
        return 2
    report = run(args.out, args.budget, args.rounds)
    for r in report["ratios"]:
        if r["reference"] == "sdpa_cudnn_grad":
            print(f"N={r['seq_len']:>5} {'causal' if r['causal'] else 'full  '} {r['candidate']:<36} "
                  f"x{r['median']:.2f} of SDPA-cuDNN (grad) [{r['min']:.2f}, {r['max']:.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
