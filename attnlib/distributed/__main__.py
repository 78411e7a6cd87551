"""``python -m attnlib.distributed --world 4 --length 4096``: time ring and Ulysses attention.

Without torchrun it spawns ``--world`` gloo ranks on this machine; under
``torchrun --nproc-per-node N -m attnlib.distributed`` it joins that job (NCCL on GPUs) unchanged.
"""

from __future__ import annotations

import argparse
import os

import torch.distributed as dist

from .bench import time_schemes
from .launch import init_from_env, spawn


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m attnlib.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2, help="ranks to spawn (ignored under torchrun)")
    parser.add_argument("--length", type=int, default=1024, help="sequence length (divisible by 2 * world)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    a = parser.parse_args(argv)
    args = (a.length, a.heads, a.dim, a.causal, a.repeats)
    if "RANK" in os.environ:  # torchrun
        rank, world = init_from_env()
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        times = time_schemes(rank, world, *args, device=device)
        dist.destroy_process_group()
        results = [times] if rank == 0 else []
    else:
        world = a.world
        results = spawn(time_schemes, world, *args, timeout=a.timeout)
    if results:
        print(f"world {world}, L {a.length}, H {a.heads}, d {a.dim}, causal {a.causal}: "
              + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in results[0].items()))
    return results[0] if results else {}


if __name__ == "__main__":
    main()
