"""Start ``world`` ranks of a function on this machine (gloo on CPU), or join a torchrun job (NCCL on GPUs).

:func:`spawn` forks ``world`` processes (the fork start method where the OS has it, so a function defined
in a notebook or a check cell runs without being importable), rendezvouses them through a file in a
private temporary directory (no TCP port to pick; gloo then talks over the loopback interface), runs
``fn(rank, world, *args)`` in each and returns the per-rank results in rank order. A rank that raises,
dies or outlives ``timeout`` ends the whole run with a ``RuntimeError`` (or ``TimeoutError``) naming it
(``NotImplementedError`` with its message if every failing rank raised that: an unfinished exercise):
never a hang. Every rank's process group gets the same timeout, so a rank waiting for a dead peer fails
too, and a watchdog ends a rank that outlives it.

:func:`init_from_env` is the torchrun side: ``torchrun --nproc-per-node 8 script.py`` sets ``RANK``,
``WORLD_SIZE`` and ``MASTER_ADDR``; the same ring and Ulysses code then runs on NCCL unchanged.
"""

from __future__ import annotations

import datetime
import io
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import traceback

import torch
import torch.distributed as dist

from ..validation import check_positive_int

__all__ = ["spawn", "init_from_env"]


def _child(fn, rank, world, args, workdir, backend, timeout):
    code = 0
    try:
        threading.Timer(timeout + 3, os._exit, (3,)).start()  # the watchdog: no rank outlives the timeout long
        torch.set_num_threads(1)
        dist.init_process_group(backend, init_method=f"file://{workdir}/rendezvous", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        result = fn(rank, world, *args)
        buf = io.BytesIO()
        torch.save(result, buf)
        with open(f"{workdir}/result{rank}.pt", "wb") as f:
            f.write(buf.getvalue())
        dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        with open(f"{workdir}/error{rank}.txt", "w") as f:
            f.write(("NotImplementedError\n" if isinstance(e, NotImplementedError) else "\n")
                    + traceback.format_exc())
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            try:
                p.kill()
            except (PermissionError, OSError):  # a sandbox may refuse signals; the watchdog ends it
                pass


def spawn(fn, world: int, *args, backend: str = "gloo", timeout: float = 60.0):
    """Run ``fn(rank, world, *args)`` on ``world`` fresh ranks; return the list of their results.

    Results travel back with ``torch.save`` (tensors, numbers, tuples, dicts). Raises ``RuntimeError``
    with the rank and its traceback if a rank fails or dies, ``TimeoutError`` if the ranks outlive
    ``timeout`` seconds.
    """
    check_positive_int(world, "world")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the loopback interface, in and out of a sandbox
    with tempfile.TemporaryDirectory(prefix="attnlib-dist-") as workdir:
        procs = [ctx.Process(target=_child, args=(fn, r, world, args, workdir, backend, timeout), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout + 1
        failed = None
        while time.monotonic() < deadline:
            codes = [p.exitcode for p in procs]
            failed = next((r for r, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None or all(c == 0 for c in codes):
                break
            time.sleep(0.02)
        if failed is None and not all(p.exitcode == 0 for p in procs):
            _stop(procs)
            raise TimeoutError(f"the {world} ranks did not finish within {timeout} s")
        if failed is not None:
            time.sleep(0.5)  # let the other ranks write their errors
            _stop(procs)
            errors, kinds = [], []
            for r in range(world):
                path = f"{workdir}/error{r}.txt"
                if os.path.exists(path):
                    with open(path) as f:
                        kind, _, text = f.read().partition("\n")
                    errors.append(f"rank {r}:\n{text}")
                    kinds.append(kind)
            if "NotImplementedError" in kinds:  # an unfinished exercise, said as such (the other ranks may
                # have failed only because that one left the group, e.g. gloo's "connection closed by peer")
                unfinished = errors[kinds.index("NotImplementedError")]
                raise NotImplementedError(unfinished.strip().splitlines()[-1].partition(": ")[2] or unfinished)
            first = errors[0] if errors else f"rank {failed} died with exit code {procs[failed].exitcode}"
            raise RuntimeError(f"rank {failed} of {world} failed (exit code {procs[failed].exitcode}); {first}"
                               + (f"\n(and {len(errors) - 1} more ranks failed)" if len(errors) > 1 else ""))
        results = []
        for r in range(world):
            with open(f"{workdir}/result{r}.pt", "rb") as f:
                results.append(torch.load(io.BytesIO(f.read()), weights_only=False))
        return results


def init_from_env(backend: str | None = None, timeout: float = 600.0) -> tuple[int, int]:
    """Initialise from torchrun's environment (NCCL with one GPU per rank if CUDA is there, else gloo)."""
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return dist.get_rank(), dist.get_world_size()
