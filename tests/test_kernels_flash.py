"""attnlib.kernels.flash_attention against attnlib.core and torch's SDPA, forward and backward.

Without CUDA these run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
so the shapes are tiny and odd: every length crosses a block edge (the interpreter's blocks
are 16), Lq != Lk both ways, head dims that are not powers of two, grouped-query K/V and
fully masked causal rows (Lq > Lk). The reference runs in float64.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from attnlib.core import scaled_dot_product_attention as reference  # noqa: E402
from attnlib.kernels import flash_attention  # noqa: E402
from attnlib.kernels.flash import flash_attention_forward  # noqa: E402
from attnlib.masks import causal_mask  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# float32 inputs are multiplied in IEEE float32 (not TF32) on GPUs too.
TOL = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 3e-2),
}
GRAD_TOL = {
    torch.float32: (5e-4, 5e-4) if CUDA else (1e-4, 1e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (1e-1, 1e-1),
}


def _inputs(b, hq, hk, lq, lk, d, dtype, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, lq, d, generator=g)
    k = torch.randn(b, hk, lk, d, generator=g)
    v = torch.randn(b, hk, lk, d, generator=g)
    return [x.to(DEVICE, dtype).requires_grad_(requires_grad) for x in (q, k, v)]


def _reference(q, k, v, causal, scale=None):
    """float64 attnlib reference, K/V heads repeated for grouped-query attention."""
    group = q.shape[-3] // k.shape[-3]
    q64, k64, v64 = (x.detach().double().requires_grad_(x.requires_grad) for x in (q, k, v))
    out = reference(q64, k64.repeat_interleave(group, -3), v64.repeat_interleave(group, -3),
                    causal=causal, scale=scale)
    return out, (q64, k64, v64)


def _assert_close(actual, expected, tol, what):
    rtol, atol = tol
    if actual.dtype == torch.bfloat16:  # 8 mantissa bits: compare in norm, elementwise is too brittle
        err = (actual.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-12)
        assert err < rtol, f"{what}: relative error {err.item():.3g} >= {rtol}"
        return
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _check(b, hq, hk, lq, lk, d, causal, dtype, seed, grads=True, scale=None):
    q, k, v = _inputs(b, hq, hk, lq, lk, d, dtype, seed, requires_grad=grads)
    out = flash_attention(q, k, v, causal=causal, scale=scale)
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all(), "flash_attention produced NaN/inf"
    ref, leaves = _reference(q, k, v, causal, scale)
    _assert_close(out, ref, TOL[dtype], "output")
    if grads:
        g = torch.Generator().manual_seed(seed + 1)
        dout = torch.randn(out.shape, generator=g).to(DEVICE, dtype)
        got = torch.autograd.grad(out, (q, k, v), dout)
        want = torch.autograd.grad(ref, leaves, dout.double())
        for name, a, e in zip(("dq", "dk", "dv"), got, want):
            assert a.shape == e.shape, f"{name} shape {tuple(a.shape)} != {tuple(e.shape)}"
            assert torch.isfinite(a).all(), f"{name} has NaN/inf"
            _assert_close(a, e, GRAD_TOL[dtype], name)


CASES = [
    # b, hq, hk, lq, lk, d, causal
    (1, 2, 2, 37, 37, 24, False),  # odd length, D not a power of two
    (1, 2, 2, 37, 37, 24, True),
    (2, 1, 1, 17, 50, 16, True),  # Lq < Lk: bottom-right aligned causal (the KV-cache case)
    (1, 2, 2, 50, 17, 16, True),  # Lq > Lk: the first 33 queries see nothing -> zeros
    (1, 2, 2, 33, 20, 64, False),
    (1, 4, 2, 29, 31, 16, True),  # grouped-query attention, 2 query heads per K/V head
    (1, 3, 1, 16, 32, 40, False),  # multi-query attention, exact block multiples
]


def _case_id(case) -> str:
    return "b{}_h{}k{}_lq{}_lk{}_d{}_{}".format(*case[:6], "causal" if case[6] else "full")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_reference_float32(case):
    _check(*case, dtype=torch.float32, seed=sum(case[:6]))


def test_causal_offset_at_every_tile_residue():
    """Lk - Lq runs over every residue of a key tile (the CPU interpreter uses 16x16 tiles), so
    an off-by-one in the rule that sorts key tiles into unmasked / masked / skipped shows up:
    a tile wrongly called "unmasked" leaks a future key, one wrongly skipped loses a visible one."""
    for offset in range(0, 18):
        _check(1, 1, 1, 20, 20 + offset, 16, True, dtype=torch.float32, seed=offset, grads=offset % 3 == 0)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=["odd_causal", "fully_masked_rows", "gqa"])
def test_matches_reference_float16(case):
    _check(*case, dtype=torch.float16, seed=7 + sum(case[:6]))


@pytest.mark.parametrize("causal", [False, True])
def test_matches_torch_sdpa(causal):
    """An independent implementation: torch's SDPA with the bottom-right causal mask passed explicitly."""
    q, k, v = _inputs(2, 2, 2, 21, 45, 32, torch.float32, seed=3)
    mask = causal_mask(21, 45, device=DEVICE) if causal else None
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    _assert_close(flash_attention(q, k, v, causal=causal), expected, TOL[torch.float32], "vs torch SDPA")


def test_custom_scale_and_large_logits_float16():
    """A large scale makes logits in the hundreds: exp would overflow without the running maximum."""
    _check(1, 1, 1, 19, 23, 16, True, torch.float16, seed=11, grads=False, scale=8.0)


def test_fully_masked_rows_are_zero_with_zero_gradient():
    q, k, v = _inputs(1, 1, 1, 24, 5, 16, torch.float32, seed=5, requires_grad=True)
    out = flash_attention(q, k, v, causal=True)  # queries 0..18 see no key (j <= i - 19)
    assert torch.equal(out[..., :19, :], torch.zeros_like(out[..., :19, :]))
    assert torch.isfinite(out).all()
    (dq,) = torch.autograd.grad(out.sum(), (q,))
    assert torch.equal(dq[..., :19, :], torch.zeros_like(dq[..., :19, :]))


def test_log_sum_exp_matches_torch():
    q, k, v = _inputs(1, 2, 2, 26, 35, 24, torch.float32, seed=9)
    scale = 1 / math.sqrt(24)
    out, lse = flash_attention_forward(q, k, v, causal=True)
    scores = (q.double() @ k.double().transpose(-2, -1)) * scale
    scores = scores.masked_fill(~causal_mask(26, 35, device=DEVICE), float("-inf"))
    _assert_close(lse, torch.logsumexp(scores, -1), TOL[torch.float32], "log-sum-exp")
    _assert_close(out, flash_attention(q, k, v, causal=True), (0, 0), "forward-only output")


def test_layouts_two_and_three_dims_and_non_contiguous():
    q, k, v = _inputs(1, 3, 3, 18, 18, 16, torch.float32, seed=2)
    ref, _ = _reference(q, k, v, causal=True)
    _assert_close(flash_attention(q[0], k[0], v[0], causal=True), ref[0], TOL[torch.float32], "3-D input")
    _assert_close(flash_attention(q[0, 1], k[0, 1], v[0, 1], causal=True), ref[0, 1], TOL[torch.float32], "2-D")
    # (B, L, H, D) memory viewed as (B, H, L, D): strided, not contiguous
    qt, kt, vt = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert not qt.is_contiguous()
    _assert_close(flash_attention(qt, kt, vt, causal=True), ref, TOL[torch.float32], "strided input")


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    lq=st.integers(1, 40), lk=st.integers(1, 40), d=st.sampled_from([16, 20, 32, 48]),
    group=st.sampled_from([1, 2]), causal=st.booleans(), seed=st.integers(0, 2**16),
)
def test_random_shapes(lq, lk, d, group, causal, seed):
    _check(1, 2 * group, 2, lq, lk, d, causal, torch.float32, seed)


def test_bad_inputs_raise_clear_errors():
    q, k, v = _inputs(1, 2, 2, 8, 8, 16, torch.float32, seed=0)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        flash_attention(q.tolist(), k, v)
    with pytest.raises(TypeError, match="float16, bfloat16 and float32"):
        flash_attention(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="share a dtype"):
        flash_attention(q, k.half(), v)
    with pytest.raises(ValueError, match="head dimension"):
        flash_attention(q[..., :8], k[..., :8], v[..., :8])
    with pytest.raises(ValueError, match="head dimension"):
        flash_attention(q, k, v[..., :8])
    q3, _, _ = _inputs(1, 3, 3, 8, 8, 16, torch.float32, seed=0)
    with pytest.raises(ValueError, match="must divide"):
        flash_attention(q3, k, v)
    with pytest.raises(ValueError, match="same length"):
        flash_attention(q, k, v[..., :5, :])
    with pytest.raises(ValueError, match="scale"):
        flash_attention(q, k, v, scale=-1.0)
    with pytest.raises(TypeError, match="causal"):
        flash_attention(q, k, v, causal=1)
    with pytest.raises(TypeError, match="causal"):
        flash_attention_forward(q, k, v, causal="False")
    with pytest.raises(ValueError, match="scale"):
        flash_attention(q, k, v, scale=10 ** 400)
    with pytest.raises(ValueError, match="q on meta"):
        flash_attention(q.to("meta"), k.to("meta"), v.to("meta"))
    if not CUDA:
        with pytest.raises(TypeError, match="bfloat16"):
            flash_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())


def test_empty_heads_numpy_scalars_and_zero_batch():
    q, k, v = _inputs(2, 1, 1, 4, 6, 16, torch.float32, seed=1)
    assert flash_attention(q[:, :0], k, v).shape == (2, 0, 4, 16)  # no query heads: an empty result, no error
    assert flash_attention(q[:0], k[:0], v[:0]).shape == (0, 1, 4, 16)
    import numpy as np

    torch.testing.assert_close(flash_attention(q, k, v, scale=np.float32(0.25)), flash_attention(q, k, v, scale=0.25))


@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[5]], ids=["lq_lt_lk", "fully_masked_rows", "gqa"])
def test_tma_forward_matches_portable(case):
    """The tensor-descriptor forward (Hopper's default) computes what the portable one does.

    On a CPU both run in the interpreter, which implements tensor descriptors too.
    """
    from attnlib.kernels import flash

    if flash.TensorDescriptor is None:
        pytest.skip("this Triton has no triton.tools.tensor_descriptor")
    b, hq, hk, lq, lk, d, causal = case
    for dtype in (torch.float32, torch.float16):
        q, k, v = _inputs(b, hq, hk, lq, lk, d, dtype, seed=lq + lk)
        out, lse = flash_attention_forward(q, k, v, causal=causal, kernel="tma")
        ref_out, ref_lse = flash_attention_forward(q, k, v, causal=causal, kernel="portable")
        _assert_close(out, ref_out, TOL[dtype], "TMA forward output")
        torch.testing.assert_close(lse, ref_lse, rtol=1e-3, atol=1e-3)
        _assert_close(out, _reference(q, k, v, causal)[0], TOL[dtype], "TMA forward vs reference")


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=["causal_odd", "fully_masked_rows", "gqa"])
def test_fixed_tile_forwards_match_the_autotuned_one(case):
    """The benchmark's ladder launches one configuration directly (no autotuner): same function."""
    from attnlib.kernels import flash

    b, hq, hk, lq, lk, d, causal = case
    q, k, v = _inputs(b, hq, hk, lq, lk, d, torch.float32, seed=3 * lq + lk)
    scale = d ** -0.5
    out, lse = flash._forward_portable(q, k, v, causal, scale)
    configs = [("portable", (16, 32, 4, 2)), ("portable", (32, 16, 4, 1))]
    if flash.TensorDescriptor is not None:  # a fifth number caps the registers (maxnreg; a GPU compile option)
        configs += [("tma", (32, 16, 4, 2)), ("tma", (16, 32, 4, 1)), ("tma", (16, 16, 8, 2, 128))]
    for kernel, config in configs:
        forward = flash._forward_tma if kernel == "tma" else flash._forward_portable
        fixed_out, fixed_lse = forward(q, k, v, causal, scale, config)
        _assert_close(fixed_out, out, TOL[torch.float32], f"{kernel} forward with tiles {config}")
        torch.testing.assert_close(fixed_lse, lse, rtol=1e-4, atol=1e-4)
    for bad in ((16, 16, 4), (16, 16, 4, 2, 128, 1), (16, 16, 4, 2, 0), (16, 16, True, 2)):
        with pytest.raises(ValueError, match=r"config must be \(BLOCK_M, BLOCK_N, num_warps, num_stages\)"):
            flash._forward_portable(q, k, v, causal, scale, bad)


def test_a_fixed_configuration_is_the_one_launched(monkeypatch):
    """The ladder times what it says: the fixed tiles reach the kernel (and the TMA descriptors), untuned."""
    from attnlib.kernels import flash

    q, k, v = _inputs(1, 2, 2, 20, 24, 16, torch.float32, seed=5)
    launches = []
    targets = [(flash, "_forward_portable", flash.flash_fwd_kernel.fn)]
    if flash.TensorDescriptor is not None:
        targets.append((flash, "_forward_tma", flash.flash_fwd_tma_kernel.fn))
    for _, name, jit in targets:
        original = jit.run

        def spy(*args, original=original, **kwargs):
            launches.append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(jit, "run", spy)
        getattr(flash, name)(q, k, v, False, 0.25, (16, 32, 4, 2))
        args, kwargs = launches[-1]
        assert (kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["num_warps"], kwargs["num_stages"]) == (16, 32, 4, 2)
        if name == "_forward_tma":  # q/o tiles of BLOCK_M rows, k/v tiles of BLOCK_N rows
            assert [list(d.block_shape) for d in args[:4]] == [[1, 16, 16], [1, 32, 16], [1, 32, 16], [1, 16, 16]]
            assert "maxnreg" not in kwargs
            getattr(flash, name)(q, k, v, False, 0.25, (16, 32, 4, 2, 128))  # a fifth number: the register cap
            assert launches.pop()[1]["maxnreg"] == 128
    assert len(launches) == len(targets)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=["causal_odd", "fully_masked_rows", "gqa"])
def test_fixed_tile_backward_kernels_match_the_autotuned_ones(case):
    """The benchmark's backward breakdown times each kernel with one configuration: same gradients."""
    from attnlib.kernels import flash

    b, hq, hk, lq, lk, d, causal = case
    q, k, v = _inputs(b, hq, hk, lq, lk, d, torch.float32, seed=5 * lq + lk)
    do = torch.randn_like(q)
    scale = d ** -0.5
    o, lse = flash._forward_portable(q, k, v, causal, scale)
    dq, dk, dv = flash._backward(q, k, v, o, lse, do, causal, scale)
    delta = flash._backward_delta(o, do)
    torch.testing.assert_close(delta.reshape(q.shape[:-1]), (o * do).sum(-1), rtol=1e-5, atol=1e-5)
    for config in ((16, 32, 4, 2), (32, 16, 4, 1)):
        fixed_dk, fixed_dv = flash._backward_dkdv(q, k, v, do, lse, delta, causal, scale, config)
        fixed_dq = flash._backward_dq(q, k, v, do, lse, delta, causal, scale, config)
        for name, got, want in (("dq", fixed_dq, dq), ("dk", fixed_dk, dk), ("dv", fixed_dv, dv)):
            _assert_close(got, want, TOL[torch.float32], f"{name} with tiles {config}")
    with pytest.raises(ValueError, match=r"config must be \(BLOCK_M, BLOCK_N, num_warps, num_stages\)"):
        flash._backward_dq(q, k, v, do, lse, delta, causal, scale, (16, 0, 4, 2))


def test_a_fixed_backward_configuration_is_the_one_launched(monkeypatch):
    """The fixed tiles reach the dK/dV and dQ kernels themselves, past their autotuners."""
    from attnlib.kernels import flash

    q, k, v = _inputs(1, 2, 1, 20, 24, 16, torch.float32, seed=6)
    do = torch.randn_like(q)
    o, lse = flash._forward_portable(q, k, v, True, 0.25)
    delta = flash._backward_delta(o, do)
    launches = {}
    for name, jit in (("dkdv", flash.flash_bwd_dkdv_kernel.fn), ("dq", flash.flash_bwd_dq_kernel.fn)):
        def spy(*args, original=jit.run, name=name, **kwargs):
            launches[name] = (kwargs, kwargs["grid"])
            return original(*args, **kwargs)

        monkeypatch.setattr(jit, "run", spy)
    flash._backward_dkdv(q, k, v, do, lse, delta, True, 0.25, (16, 32, 4, 2))
    flash._backward_dq(q, k, v, do, lse, delta, True, 0.25, (16, 32, 4, 2))
    assert set(launches) == {"dkdv", "dq"}
    for kwargs, _grid in launches.values():
        assert (kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["num_warps"], kwargs["num_stages"]) == (16, 32, 4, 2)
    # one program per 32-key tile of the one K/V head; one per 16-query tile of each of the two query heads
    # (batch and heads folded into grid axis 0, whose limit is 2**31 - 1, not axis 1's 65,535)
    assert tuple(launches["dkdv"][1](launches["dkdv"][0])) == (1,)
    assert tuple(launches["dq"][1](launches["dq"][0])) == (4,)


def test_the_production_path_imports_no_experimental_kernel():
    """flash_attention, forward and backward, loads neither attnlib.kernels.experimental nor the benchmark:
    a kernel is promoted by moving it into the production path, not by a switch that imports experiments."""
    code = ("import sys, torch, attnlib; before = set(sys.modules); from attnlib.kernels import flash_attention; "
            "q = torch.randn(1, 2, 24, 16, requires_grad=True); flash_attention(q, q, q, causal=True).sum().backward(); "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.startswith(('attnlib.kernels.experimental', 'attnlib.bench'))))")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_a_callable_forward_runs_under_flash_attentions_backward():
    """How the benchmark times an experimental forward: ``_forward`` runs a callable as it is."""
    from attnlib.kernels import flash

    q, k, v = _inputs(1, 2, 1, 32, 48, 16, torch.float32, seed=3)
    calls = []

    def forward(*args):
        calls.append(len(args))
        return flash._forward_portable(*args)

    out = flash._FlashAttention.apply(q, k, v, False, 0.25, forward)
    _assert_close(out, _reference(q, k, v, False, scale=0.25)[0], TOL[torch.float32], "the callable's output")
    assert calls == [5]


def test_experimental_forwards_say_what_they_do_not_handle():
    from attnlib.kernels import experimental

    q, k, v = _inputs(1, 4, 2, 256, 256, 128, torch.float16, seed=0)
    assert experimental.unhandled("ws", (128, 64, 4, 3), q, k, v, False) == []
    assert experimental.unhandled("ws", (128, 64, 4, 3), q, k, v, True) == []  # causal: one masked loop
    assert "dtype torch.float32" in " ".join(experimental.unhandled("ws", (128, 64, 4, 3), q.float(),
                                                                          k.float(), v.float(), True))
    problems = experimental.unhandled("ws", (128, 64, 4, 3), q[:, :, :200], k, v, False)
    assert problems and "Lq=200" in problems[0]
    wide = torch.empty(1, 70_000, 128, 128, dtype=torch.float16, device="meta")  # B*H past the grid's axis 1
    assert "65,535" in " ".join(experimental.unhandled("ws", (128, 64, 4, 3), wide, wide, wide, False))
    with pytest.raises(ValueError, match="kind must be one of"):
        experimental.unhandled("fast", (128, 64, 4, 3), q, k, v, False)
    pytest.importorskip("triton.experimental.gluon")
    assert experimental.unhandled("gluon", (128, 128, 8, 2), q, k, v, True) == []  # square tiles: causal
    assert "square" in " ".join(experimental.unhandled("gluon", (128, 64, 8, 3), q, k, v, True))
    assert "BLOCK_M=128 and num_warps=8" in " ".join(
        experimental.unhandled("gluon-pingpong", (128, 128, 4, 2), q, k, v, False))
    assert set(experimental.gluon_forwards()) == set(experimental.KINDS) - {"ws"}
    assert {kind for kind, _ in experimental.candidates()} == set(experimental.KINDS)
    assert experimental.key("gluon-pingpong", (128, 128, 8, 3)) == "gluon-pingpong 128x128/8/3"


def test_kernel_argument_is_checked():
    q, k, v = _inputs(1, 1, 1, 4, 4, 16, torch.float32, seed=0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        flash_attention(q, k, v, kernel="fast")


def _one_pass_against_float64(b, hq, hk, lq, lk, d, causal, dtype, seed, config):
    """The one-pass backward (dQ by atomic adds in the dK/dV kernel) against float64 autograd."""
    from attnlib.kernels import flash
    from attnlib.kernels.experimental.one_pass_bwd import backward_one_pass

    q, k, v = _inputs(b, hq, hk, lq, lk, d, dtype, seed)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE, dtype)
    scale = d ** -0.5
    o, lse = flash._forward(q, k, v, causal, scale)
    got = backward_one_pass(q, k, v, o, lse, dout, causal, scale, config)
    ref, leaves = _reference(*(x.requires_grad_() for x in (q, k, v)), causal)
    want = torch.autograd.grad(ref, leaves, dout.double())
    for name, a, e in zip(("dq", "dk", "dv"), got, want):
        assert a.shape == e.shape and a.dtype == dtype, name
        _assert_close(a, e, GRAD_TOL[dtype], f"one-pass {name}")
    return got


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_one_pass_backward_matches_float64_autograd(case):
    """FlashAttention-2's single pass: every CASE (odd lengths, padded D, Lq > Lk with rows that see nothing,
    grouped and multi-query heads), in two tiles (query tiles of 16 against key tiles of 32 and 16)."""
    for config in ((16, 32, 4, 2), (16, 16, 4, 1)):
        _one_pass_against_float64(*case, torch.float32, seed=sum(case[:6]), config=config)


def test_one_pass_backward_float16_large_logits():
    from attnlib.kernels import flash
    from attnlib.kernels.experimental.one_pass_bwd import backward_one_pass

    dq, dk, dv = _one_pass_against_float64(1, 2, 1, 45, 70, 32, True, torch.float16, seed=9, config=(16, 32, 4, 2))
    assert torch.isfinite(dq).all() and torch.isfinite(dk).all()
    q, k, v = _inputs(1, 2, 2, 33, 33, 16, torch.float32, seed=4)
    q = q * 30  # logits ~ 100: the recomputed probabilities must still come from the saved log-sum-exp
    do = torch.randn_like(q)
    o, lse = flash._forward(q, k, v, False, 0.25)
    for a, e in zip(backward_one_pass(q, k, v, o, lse, do, False, 0.25, (16, 16, 4, 1)),
                    flash._backward(q, k, v, o, lse, do, False, 0.25)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not CUDA, reason="bfloat16 at the benchmark's tiles runs on a GPU only")
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_one_pass_backward_bfloat16(causal):
    from attnlib.kernels.experimental.one_pass_bwd import ONE_PASS_CONFIGS

    for config in ONE_PASS_CONFIGS:
        _one_pass_against_float64(2, 4, 2, 1000, 1111, 128, causal, torch.bfloat16, seed=11, config=config)


@pytest.mark.skipif(not CUDA, reason="bfloat16 and large head dims run on a GPU only")
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_bfloat16_large(d, causal):
    _check(2, 4, 2, 1000, 1111, d, causal, torch.bfloat16, seed=d)


@pytest.mark.skipif(not CUDA, reason="runs on a GPU only")
def test_gpu_float16_head_dim_96():
    _check(1, 2, 2, 517, 517, 96, True, torch.float16, seed=96)


@pytest.mark.skipif(not CUDA, reason="runs on a GPU only")
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_portable_and_auto_kernels_agree(causal):
    """On Hopper "auto" is the TMA kernel: it must compile here and agree with the portable one."""
    from attnlib.kernels import flash

    q, k, v = _inputs(2, 4, 2, 1000, 1111, 128, torch.bfloat16, seed=5)
    auto = flash_attention(q, k, v, causal=causal)
    portable = flash_attention(q, k, v, causal=causal, kernel="portable")
    _assert_close(auto, portable, (1e-2, 1e-2), "auto vs portable kernel")
    if flash._tma_available(q):
        assert flash._TMA_FAILURE is None, flash._TMA_FAILURE
        _assert_close(flash_attention(q, k, v, causal=causal, kernel="tma"), portable, (1e-2, 1e-2), "TMA kernel")
