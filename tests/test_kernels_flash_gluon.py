"""The experimental Gluon forwards (``attnlib.kernels.experimental.gluon``, ``.gluon_ws``, ``.gluon_pingpong``),
as far as a CPU can check them.

Gluon has no interpreter, so the kernel's results are checked on a GPU only (the benchmark's
child process, ``attnlib.bench.canary.gluon_errors``, before any timing). What a CPU can check:
it refuses what it does not handle with an error naming it, and compiled for sm_90 (in a
subprocess without ``TRITON_INTERPRET``) it is what it claims to be: wgmma products, no
register spill, the shared memory of its buffers, and exponentials placed while a matrix product
is in flight (``resources.exp2_during_mma``), the one thing a ``tl.dot`` loop does not give.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
pytest.importorskip("triton.experimental.gluon")

from attnlib.kernels.experimental import gluon_forwards  # noqa: E402
from attnlib.kernels.experimental.gluon import check_gluon_supported, flash_fwd_gluon  # noqa: E402
from attnlib.kernels.experimental.gluon_pingpong import flash_fwd_gluon_pingpong  # noqa: E402
from attnlib.kernels.experimental.gluon_ws import flash_fwd_gluon_ws  # noqa: E402
from attnlib.kernels._interpreter_compat import interpreting  # noqa: E402

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@pytest.mark.parametrize("causal, dtype, d, lq, lk, tile, words", [
    (False, torch.float32, 64, 128, 128, (128, 128), "dtype torch.float32"),
    (False, torch.float16, 80, 128, 128, (128, 128), "head dim 80"),
    (False, torch.float16, 64, 130, 128, (128, 128), "Lq=130"),
    (False, torch.float16, 64, 128, 192, (128, 128), "Lk=192"),
    (False, torch.float16, 64, 128, 0, (128, 128), "at least one whole 128-key tile"),
    (True, torch.float16, 64, 128, 128, (128, 64), "causal needs a square tile"),
    (True, torch.float16, 64, 256, 128, (128, 128), "Lk >= Lq"),
])
def test_refuses_what_it_does_not_handle_and_says_what(causal, dtype, d, lq, lk, tile, words):
    q = torch.zeros(1, 2, lq, d, dtype=dtype)
    k = torch.zeros(1, 2, lk, d, dtype=dtype)
    with pytest.raises(ValueError, match=words):
        check_gluon_supported(q, k, causal, *tile)
    check_gluon_supported(torch.zeros(1, 2, 256, 64, dtype=torch.bfloat16),
                          torch.zeros(1, 1, 384, 64, dtype=torch.bfloat16), causal, 128, 128)  # handled: no error


def test_refuses_inputs_that_do_not_fit_together(monkeypatch):
    """The ws forward's consistency checks (tests/test_kernels_flash_ws.py) hold for every Gluon forward too:
    3 query heads on 2 K/V heads would read zeros past the end of K and V, not fail."""
    from attnlib.kernels.experimental import gluon

    monkeypatch.setattr(gluon, "interpreting", lambda: False)  # the checks come before launching
    q = torch.zeros(1, 3, 128, 64, dtype=torch.bfloat16)
    kv = torch.zeros(1, 2, 128, 64, dtype=torch.bfloat16)
    for forward in (flash_fwd_gluon, flash_fwd_gluon_ws, flash_fwd_gluon_pingpong):
        with pytest.raises(ValueError, match="Gluon forward does not handle q of shape"):
            forward(q, kv, kv, False, 0.1)
        with pytest.raises(ValueError, match="v of shape"):
            forward(q[:, :2], kv, kv[:, :, :64], False, 0.1)
    with pytest.raises(ValueError, match="4-D"):
        check_gluon_supported(q[0], kv[0], True, 128, 128)


@pytest.mark.skipif(not interpreting(), reason="the interpreter's refusal")
def test_says_it_cannot_run_in_the_interpreter():
    q = torch.zeros(1, 2, 128, 64, dtype=torch.float16)
    for forward in (flash_fwd_gluon, flash_fwd_gluon_ws, flash_fwd_gluon_pingpong):
        with pytest.raises(RuntimeError, match="Gluon has no CPU interpreter"):
            forward(q, q, q, False, 0.1)


def test_the_ping_pong_kernel_refuses_other_than_two_warp_groups_of_64_rows(monkeypatch):
    from attnlib.kernels.experimental import gluon

    monkeypatch.setattr(gluon, "interpreting", lambda: False)  # the check comes before launching
    q = torch.zeros(1, 2, 128, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="BLOCK_M=128 and num_warps=8"):
        flash_fwd_gluon_pingpong(q, q, q, False, 0.1, config=(128, 128, 4, 2))


@pytest.mark.slow
@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="this Triton has no NVIDIA backend tools (cuobjdump)")
@pytest.mark.parametrize("kernel, head_dim, causal", [("gluon", 128, False), ("gluon", 128, True), ("gluon", 64, False),
                                                      ("gluon-ws", 128, False), ("gluon-ws", 128, True),
                                                      ("gluon-pingpong", 128, False), ("gluon-pingpong", 64, True)])
def test_compiled_for_hopper_it_overlaps_the_softmax_with_a_matrix_product(kernel, head_dim, causal):
    from attnlib.kernels.resources import flash_report_in_subprocess

    rows = flash_report_in_subprocess(kernel=kernel, head_dim=head_dim, dtype="bfloat16", causal=causal)
    expected = [c for c in gluon_forwards()[kernel][1] if not causal or c[0] == c[1]]  # causal: square tiles only
    assert [(r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]) for r in rows] == expected, rows
    for r, (block_m, block_n, _, stages) in zip(rows, expected):
        assert r["error"] is None, r
        assert r["matrix_instructions"]["HGMMA"] > 0 and r["matrix_instructions"]["HMMA"] == 0, r
        assert r["spill_bytes"] == 0 and r["fits_shared"], r
        if kernel == "gluon":
            assert r["warps_compiled"] == 8, r
        else:  # the loader's warp is rounded up to a warp group; registers at launch are the cap it is given
            assert r["warps_compiled"] == 12 and r["registers"] <= 168 and r["maxnreg"] == 168, r
        # Q's tile and STAGES slots each of K and V, in bfloat16, are what its shared memory holds
        assert r["shared_bytes"] >= 2 * head_dim * (block_m + 2 * stages * block_n), r
        # the point of the kernel: exponentials while a product runs, each step's whole tile of them
        per_thread_tile = block_m * block_n // (32 * 8)  # one exp2 per score, spread over 8 warps
        assert r["exp2_during_mma"] >= per_thread_tile, r
        if kernel == "gluon-pingpong":  # two consumer partitions, each its own copy of the loop
            assert r["exp2_during_mma"] >= 2 * per_thread_tile, r
