"""Benchmark entry point: ``python -m attnlib.bench --suite flash|decode|block_sparse|all --out DIR [--quick]``.

Each suite is a module ``attnlib.bench.<suite>`` with ``run(quick=False) -> dict``.
For each suite this writes ``DIR/<suite>.json`` (the suite's results plus
:func:`attnlib.bench.env.machine_info`: GPU, driver, versions, date) and
``DIR/<suite>.png``; a suite whose ``run`` takes ``checkpoint`` (flash) has its JSON written after
each phase too, ``"complete": false`` until it ends, so that a time limit costs only what was left;
a suite whose ``run`` takes ``screen`` (flash) gets :func:`attnlib.bench.canary.run_in_child`, which
checks the experimental kernels in child processes before the suite times them.
Without CUDA it says so and exits 0, writing nothing: CPU timings
of GPU kernels (or of Triton's interpreter) would be meaningless numbers.
Copy the JSON files into ``attnlib/bench/results/`` to ship them with the package.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
import traceback
from pathlib import Path

SUITES = ("flash", "decode", "block_sparse")


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m attnlib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=(*SUITES, "all"), default="all", help="which benchmark to run")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for JSON and PNG files")
    parser.add_argument("--quick", action="store_true", help="a smaller grid with shorter repetitions")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    import torch

    if not torch.cuda.is_available():
        print("python -m attnlib.bench: no CUDA GPU is available, so nothing was measured and no results "
              "were written. Run it on a machine with an NVIDIA GPU (the labs plot the stored results in "
              "attnlib/bench/results/).")
        return 0

    from .env import machine_info
    from .plot import plot_suite

    suites = SUITES if args.suite == "all" else (args.suite,)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for suite in suites:
        start = time.perf_counter()
        print(f"[attnlib.bench] {suite}: running{' (quick)' if args.quick else ''} ...", flush=True)
        json_path = args.out / f"{suite}.json"
        machine = machine_info()

        def write(results, suite=suite, json_path=json_path, machine=machine):
            json_path.write_text(json.dumps({"suite": suite, **results, "machine": machine}, indent=1, default=str))

        try:
            module = importlib.import_module(f"attnlib.bench.{suite}")
            # a suite that saves as it goes (flash) leaves what it measured if a time limit stops it
            parameters = inspect.signature(module.run).parameters
            extra = {"checkpoint": write} if "checkpoint" in parameters else {}
            if "screen" in parameters:  # experimental kernels: checked in child processes first
                from .canary import run_in_child

                extra["screen"] = lambda budget_s: run_in_child(budget_s=budget_s)
            results = module.run(quick=args.quick, **extra)
        except Exception:  # noqa: BLE001 - one broken suite must not lose the others' results
            failures += 1
            print(f"[attnlib.bench] {suite} FAILED:\n{traceback.format_exc()}", flush=True)
            continue
        write(results)
        results = {"suite": suite, **results, "machine": machine}
        try:
            plot_suite(suite, results, args.out / f"{suite}.png")
        except Exception:  # noqa: BLE001 - the JSON is what matters; report the plot's failure
            print(f"[attnlib.bench] plotting {suite} failed:\n{traceback.format_exc()}", flush=True)
        print(f"[attnlib.bench] {suite}: wrote {json_path} in {time.perf_counter() - start:.0f} s", flush=True)
        if suite == "flash":
            _print_flash_summary(results)
    return 1 if failures else 0


def _print_flash_summary(results: dict) -> None:
    """A short table (the tail of the output is what a remote run shows)."""
    from .flash import backward_lines, ladder_lines

    for line in ladder_lines(results.get("ladder") or []):
        print("ladder", line)
    for line in backward_lines(results.get("backward") or []):
        print("backward", line)
    print(f"forward kernel: {results.get('forward_kernel')} (TMA failure: {results.get('tma_failure')})")
    print(f"kernel correct: {results.get('kernel_correct')}; largest relative error against SDPA at the "
          f"timed shapes: {results.get('max_rel_error_vs_sdpa')}; skipped shapes: {len(results.get('skipped', []))}")
    tf = {(r["impl"], r["head_dim"], r["seq_len"], r["causal"], r["mode"]): r["tflops"] for r in results["rows"]}
    winners = results.get("experimental_in_grid") or {}
    for mask, winner in winners.items():
        if winner:
            print(f"experimental forward in the grid ('exper' below), {mask}: {winner[0]}")
    print(f"{'D':>4} {'N':>6} {'causal':>6} {'mode':>8} {'ours':>7} {'cudnn':>7} {'flash':>7} {'effic':>7}"
          f" {'/cudnn':>7} {'/flash':>7} {'portbl':>7} {'exper':>7} {'/cudnn':>7}")
    for r in results["ratios"]:
        key = (r["head_dim"], r["seq_len"], r["causal"], r["mode"])
        vals = [tf.get((impl, *key)) for impl in ("attnlib_flash", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient")]
        cells = " ".join(f"{v:7.1f}" if v else f"{'-':>7}" for v in vals)
        rat = " ".join(f"{r[k]:7.2f}" if r.get(k) else f"{'-':>7}" for k in ("vs_sdpa_cudnn", "vs_sdpa_flash"))
        extra = [tf.get(("attnlib_flash_portable", *key)), tf.get(("attnlib_flash_experimental", *key)),
                 r.get("experimental_vs_sdpa_cudnn")]
        print(f"{key[0]:>4} {key[1]:>6} {str(key[2]):>6} {key[3]:>8} {cells} {rat} "
              + " ".join(f"{v:7.2f}" if i == 2 and v else f"{v:7.1f}" if v else f"{'-':>7}"
                         for i, v in enumerate(extra)))


if __name__ == "__main__":
    sys.exit(main())
