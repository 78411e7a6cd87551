"""64-bit batch/head offsets and launch limits of the pointer kernels (issue 32).

* Address arithmetic: a kernel that computes ``Q + off_b * stride_qb`` in int32 addresses the wrong
  memory once a tensor holds 2**31 elements (4 GiB of bf16). The kernels' Triton IR, compiled for
  sm_90 without a GPU (:func:`attnlib.kernels.resources.triton_ir_of`, the front end only: seconds),
  must add a 64-bit offset to every pointer argument. On a GPU with the memory, a > 2**31-element
  case runs (skipped elsewhere).
* Launch limits: grid axis 1 stops at 65,535 programs, so batch and heads are folded into axis 0.
  The interpreter runs about 150 programs a second, too few for B*H > 65,535: the grids the kernels
  would launch are read at B*H = 70,000 instead, and the folded index arithmetic runs at small sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parent.parent
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
CUDA = torch.cuda.is_available()

# Every pointer argument the kernel offsets by batch/head, by kernel (the TMA forward's tiles move by
# descriptor, whose coordinates are 64-bit already: only its log-sum-exp is a pointer).
OFFSET_POINTERS = {
    "_flash_fwd_kernel": {"Q", "K", "V", "O", "LSE"},
    "_flash_fwd_tma_kernel": {"LSE"},
    "flash_bwd_delta_kernel": {"O", "DO", "DELTA"},
    "_flash_bwd_dkdv_kernel": {"Q", "K", "V", "DO", "DK", "DV", "LSE", "DELTA"},
    "_flash_bwd_dq_kernel": {"Q", "K", "V", "DO", "DQ", "LSE", "DELTA"},
    "_decode_split_kernel": {"Q", "K", "V", "LENS", "OP", "LSEP"},
    "_decode_combine_kernel": {"OP", "LSEP", "OUT"},
    "_block_sparse_fwd_kernel": {"Q", "K", "V", "OUT"},
}

_PROBE = r"""
import json, torch
from attnlib.kernels import block_sparse, decode, flash, resources
q = torch.randn(2, 4, 64, 64, dtype=torch.float16)
k = torch.randn(2, 2, 64, 64, dtype=torch.float16)
for module in (block_sparse, decode):  # CPU tensors are fine: nothing is launched, only compiled
    module.check_launchable = lambda *args: None
def launch():
    o, lse = flash._forward_portable(q, k, k, False, 0.125)
    flash._forward_tma(q, k, k, False, 0.125)
    flash._backward(q, k, k, o, lse, q, False, 0.125)
    decode.flash_decode(q[:, :, :1], k, k, torch.tensor([64, 30]))
    mask = block_sparse.causal_block_mask(64, 64, 32)
    block_sparse.block_sparse_attention(q, q, q, mask, block_size=32, causal=True)
ir = resources.triton_ir_of(launch)
print(json.dumps({name: resources.pointer_offset_widths(text) for name, text in ir.items()}))
"""


@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="this Triton has no NVIDIA backend (compiles for sm_90)")
def test_every_batch_and_head_offset_is_64_bit_in_the_compiled_kernels(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "cache"), ATTNLIB_FLASH_AUTOTUNE="0", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=os.environ.get("PYTHONPATH") or str(ROOT))  # (the mutation tests' copy where they set it)
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    widths = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(OFFSET_POINTERS) <= set(widths), sorted(widths)
    for kernel, pointers in OFFSET_POINTERS.items():
        got = {name.lstrip("%"): w for name, w in widths[kernel].items()}
        # (Triton 3.6 names the arguments %arg0, %arg1, ...: there only the widths can be read)
        named = pointers <= set(got) or all(name.startswith("arg") for name in got)
        assert named, f"{kernel}: expected offsets added to {sorted(pointers)}, found {sorted(got)}"
        narrow = {name: w for name, w in got.items() if w != [64]}
        assert not narrow, f"{kernel}: 32-bit offsets added to pointer arguments {narrow} (wraps at 2**31 elements)"


def _grids(monkeypatch, kernels, run):
    """The grids ``run()`` would launch, ``{kernel name: grid}``, with every launch of ``kernels`` (``{name:
    jit function}``) caught: nothing runs (the interpreter would take minutes)."""
    grids = {}
    for name, jit in kernels.items():
        def caught(*args, grid=None, warmup=False, name=name, **kwargs):
            grids[name] = tuple(grid(kwargs) if callable(grid) else grid)

        monkeypatch.setattr(jit, "run", caught)
    run()
    return grids


def test_batch_times_heads_past_65535_is_folded_into_grid_axis_0(monkeypatch):
    from attnlib.kernels import block_sparse, flash

    b, h, lq, d = 7000, 10, 40, 16  # B * H = 70,000 > 65,535 (axis 1's limit)
    q = torch.empty(b, h, lq, d)
    k = torch.empty(b, 5, lq, d)  # grouped K/V heads
    lse = torch.empty(b * h, lq)
    kernels = {"_flash_fwd_kernel": flash.flash_fwd_kernel.fn, "flash_bwd_delta_kernel": flash.flash_bwd_delta_kernel,
               "_flash_bwd_dkdv_kernel": flash.flash_bwd_dkdv_kernel.fn, "_flash_bwd_dq_kernel": flash.flash_bwd_dq_kernel.fn}
    grids = _grids(monkeypatch, kernels, lambda: (flash._forward_portable(q, k, k, True, 0.25, (16, 16, 4, 2)),
                                         flash._backward_delta(q, q),
                                         flash._backward_dkdv(q, k, k, q, lse, lse, True, 0.25, (16, 16, 4, 2)),
                                         flash._backward_dq(q, k, k, q, lse, lse, True, 0.25, (16, 16, 4, 2))))
    tiles = -(-lq // 16)
    want = {"_flash_fwd_kernel": (tiles * b * h,), "_flash_bwd_dkdv_kernel": (tiles * b * 5,),
            "_flash_bwd_dq_kernel": (tiles * b * h,)}
    for kernel, grid in want.items():
        assert grids[kernel] == grid, (kernel, grids[kernel])
    assert len(grids["flash_bwd_delta_kernel"]) == 1
    assert set(grids) == set(kernels) and all(len(g) == 1 and g[0] < 2**31 for g in grids.values()), grids
    # The block-sparse kernel keeps its (query blocks, B * H) grid (the fold spills registers): a clear error.
    with pytest.raises(ValueError, match="at most 65,535"):
        block_sparse.block_sparse_attention(q, q, q, block_sparse.causal_block_mask(lq, lq, 16), block_size=16)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_the_folded_grid_reaches_every_batch_head_and_tile(causal):
    """3 batches x 5 query heads (grouped over 5 or 1 K/V heads), 3 query tiles: each (b, h) as the reference."""
    from attnlib.kernels import block_sparse, flash_attention
    from attnlib.kernels.decode import flash_decode

    g = torch.Generator().manual_seed(32)
    for hk in (5, 1):
        q = torch.randn(3, 5, 37, 16, generator=g, requires_grad=True)
        k = torch.randn(3, hk, 29, 16, generator=g, requires_grad=True)
        v = torch.randn(3, hk, 29, 16, generator=g, requires_grad=True)
        kr, vr = (x.repeat_interleave(5 // hk, dim=1) for x in (k, v))
        mask = torch.ones(37, 29, dtype=torch.bool).tril(29 - 37) if causal else None
        want = torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)
        want = torch.nan_to_num(want)  # (rows with no visible key: zeros, as attnlib)
        out = flash_attention(q, k, v, causal=causal)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        wants = torch.autograd.grad(want.sum(), (q, k, v))
        for name, got, ref in zip("qkv", grads, wants):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"d{n}: {m}")
    with torch.no_grad():
        qs = q.detach()
        bm = block_sparse.causal_block_mask(37, 37, 16) if causal else torch.ones(3, 3, dtype=torch.bool)
        got = block_sparse.block_sparse_attention(qs, qs, qs, bm, block_size=16, causal=causal)
        ref = torch.nn.functional.scaled_dot_product_attention(qs, qs, qs, is_causal=causal)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
        lens = torch.tensor([29, 3, 17])
        got = flash_decode(qs[:, :, :1], k.detach(), v.detach(), lens)
        for i, n in enumerate(lens.tolist()):
            ref = torch.nn.functional.scaled_dot_product_attention(qs[i:i + 1, :, :1], kr[i:i + 1, :, :n].detach(),
                                                                   vr[i:i + 1, :, :n].detach())
            torch.testing.assert_close(got[i:i + 1], ref, rtol=1e-4, atol=1e-4)


def _free_gib() -> float:
    return torch.cuda.mem_get_info()[0] / 2**30 if CUDA else 0.0


@pytest.mark.skipif(not CUDA or _free_gib() < 48, reason="needs a CUDA GPU with 48 GiB free: K and V of 2**32 "
                    "elements each (8 GiB of bf16), their gradients, and B*H > 65,535 programs")
def test_more_than_2_31_elements_on_a_gpu():
    """The last batch of a (2, 8, 2**20, 256) K/V starts 2**31 elements in: forward, backward and decoding."""
    from attnlib.kernels import flash_attention
    from attnlib.kernels.decode import flash_decode

    g = torch.Generator(device="cuda").manual_seed(0)
    k = torch.randn(2, 8, 2**20, 256, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    v = torch.randn(2, 8, 2**20, 256, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    q = torch.randn(2, 8, 16, 256, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    assert k.numel() > 2**31
    out = flash_attention(q, k, v)
    want = torch.nn.functional.scaled_dot_product_attention(q[1:], k[1:], v[1:])
    torch.testing.assert_close(out[1:], want, rtol=3e-2, atol=3e-2)
    dq, dk, dv = torch.autograd.grad(out[1:, -1:].float().sum(), (q, k, v))
    wq, wk, wv = torch.autograd.grad(want[:, -1:].float().sum(), (q, k, v))
    for name, got, ref in (("dq", dq, wq), ("dk", dk, wk), ("dv", dv, wv)):
        err = (got[1:, -1:].float() - ref[1:, -1:].float()).norm() / ref[1:, -1:].float().norm()
        assert err < 3e-2, (name, float(err))
    with torch.no_grad():
        got = flash_decode(q[:, :, :1], k, v, torch.tensor([2**20, 2**20 - 5], device="cuda"))
        ref = torch.nn.functional.scaled_dot_product_attention(q[1:, :, :1], k[1:, :, :-5], v[1:, :, :-5])
        torch.testing.assert_close(got[1:], ref, rtol=3e-2, atol=3e-2)
    del k, v, dk, dv, wk, wv
    many = torch.randn(70000, 1, 16, 64, device="cuda", dtype=torch.bfloat16)  # B*H > 65,535 programs launch
    torch.testing.assert_close(flash_attention(many, many, many),
                               torch.nn.functional.scaled_dot_product_attention(many, many, many), rtol=3e-2, atol=3e-2)
