"""Split-KV decoding kernel (attnlib.kernels.flash_decode) against independent references.

Runs in Triton's interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1),
so sizes are tiny and odd; the GPU path is the same kernel.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlib.core import scaled_dot_product_attention
from attnlib.kernels import flash_decode
from attnlib.kernels.decode import decode_bytes, default_num_splits

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def reference(q, k_cache, v_cache, cache_lens=None, causal=False, scale=None):
    """attnlib's reference on K/V repeated across each query group, with the cache-length mask."""
    bsz, hq, lq, _ = q.shape
    hkv, lmax = k_cache.shape[1], k_cache.shape[2]
    group = hq // hkv
    k = k_cache.double().repeat_interleave(group, dim=1)  # (B, Hq, Lmax, d)
    v = v_cache.double().repeat_interleave(group, dim=1)
    lens = cache_lens if cache_lens is not None else torch.full((bsz,), lmax, device=q.device)
    j = torch.arange(lmax, device=q.device)[None, None, :]  # (1, 1, Lmax)
    mask = j < lens[:, None, None]  # (B, 1, Lmax)
    if causal:
        i = torch.arange(lq, device=q.device)[None, :, None]  # (1, Lq, 1)
        mask = mask & (j <= i + lens[:, None, None] - lq)  # (B, Lq, Lmax)
    mask = mask[:, None].expand(bsz, 1, lq, lmax)  # (B, 1, Lq, Lmax)
    return scaled_dot_product_attention(q.double(), k, v, mask, scale=scale)


def rand(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype)


@pytest.mark.parametrize(
    "bsz,hq,hkv,lq,lmax,d,dv,splits",
    [
        (1, 1, 1, 1, 1, 1, 1, 1),  # the smallest case
        (2, 4, 4, 1, 37, 8, 8, 3),  # MHA, odd cache length
        (3, 6, 2, 1, 53, 16, 5, 4),  # GQA 3:1, dv != d
        (2, 5, 1, 1, 29, 7, 9, 2),  # MQA, odd head dim
        (2, 4, 2, 3, 41, 8, 8, 5),  # a few query tokens
        (1, 8, 2, 1, 100, 32, 32, 7),  # more splits than key blocks of the default size
    ],
)
def test_matches_reference_and_torch(bsz, hq, hkv, lq, lmax, d, dv, splits):
    g = torch.Generator().manual_seed(lmax)
    q, k, v = rand(bsz, hq, lq, d, gen=g), rand(bsz, hkv, lmax, d, gen=g), rand(bsz, hkv, lmax, dv, gen=g)
    out = flash_decode(q, k, v, num_splits=splits)
    assert out.shape == (bsz, hq, lq, dv) and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), reference(q, k, v), rtol=1e-5, atol=1e-5)
    # Independent reference: torch's SDPA with grouped-query heads.
    expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_ragged_cache_lengths_ignore_the_rest_of_the_buffer():
    g = torch.Generator().manual_seed(1)
    bsz, hq, hkv, lmax, d = 5, 4, 2, 45, 8
    q, k, v = rand(bsz, hq, 1, d, gen=g), rand(bsz, hkv, lmax, d, gen=g), rand(bsz, hkv, lmax, d, gen=g)
    lens = torch.tensor([0, 1, 17, 44, 45], device=DEVICE)
    # Garbage beyond each cache length must never be read: poison it with NaN.
    stale = torch.arange(lmax, device=DEVICE)[None, None, :, None] >= lens[:, None, None, None]
    k, v = k.masked_fill(stale, float("nan")), v.masked_fill(stale, float("nan"))
    out = flash_decode(q, k, v, lens, num_splits=3)
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), reference(q, k.nan_to_num(), v.nan_to_num(), lens), rtol=1e-5, atol=1e-5)
    assert (out[0] == 0).all(), "an empty cache must give zeros"


def test_causal_few_queries_with_ragged_lengths_and_empty_rows():
    g = torch.Generator().manual_seed(2)
    bsz, hq, hkv, lq, lmax, d = 4, 6, 3, 4, 23, 8
    q, k, v = rand(bsz, hq, lq, d, gen=g), rand(bsz, hkv, lmax, d, gen=g), rand(bsz, hkv, lmax, d, gen=g)
    lens = torch.tensor([2, 4, 19, 23], device=DEVICE)  # lens[0] < Lq: the first two queries see no key
    out = flash_decode(q, k, v, lens, causal=True, num_splits=2)
    expected = reference(q, k, v, lens, causal=True)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    assert (out[0, :, :2] == 0).all() and not out.isnan().any()
    # The last query of a full cache sees every key: causal changes nothing there.
    torch.testing.assert_close(out[3, :, -1], flash_decode(q, k, v, lens)[3, :, -1], rtol=1e-5, atol=1e-5)


def test_result_does_not_depend_on_the_number_of_splits():
    g = torch.Generator().manual_seed(3)
    q, k, v = rand(2, 4, 1, 16, gen=g), rand(2, 2, 70, 16, gen=g), rand(2, 2, 70, 16, gen=g)
    lens = torch.tensor([70, 33], device=DEVICE)
    outs = [flash_decode(q, k, v, lens, num_splits=s) for s in (1, 2, 5, 9)]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-5, atol=1e-6)


def test_float16_large_logits_and_strided_cache():
    g = torch.Generator().manual_seed(4)
    bsz, hq, hkv, lmax, d = 2, 4, 2, 31, 16
    q = (30 * rand(bsz, hq, 1, d, gen=g)).half()  # logits in the hundreds: exp would overflow without the max
    # A cache stored as (B, Lmax, Hkv, d) and viewed as (B, Hkv, Lmax, d): non-contiguous strides.
    k = rand(bsz, lmax, hkv, d, gen=g).half().transpose(1, 2)
    v = rand(bsz, lmax, hkv, d, gen=g).half().transpose(1, 2)
    out = flash_decode(q, k, v, num_splits=2)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(q, k, v), rtol=2e-3, atol=2e-3)


def test_custom_scale():
    g = torch.Generator().manual_seed(5)
    q, k, v = rand(1, 2, 1, 8, gen=g), rand(1, 2, 19, 8, gen=g), rand(1, 2, 19, 8, gen=g)
    out = flash_decode(q, k, v, scale=0.9, num_splits=2)
    torch.testing.assert_close(out.double(), reference(q, k, v, scale=0.9), rtol=1e-5, atol=1e-5)


@settings(max_examples=4 if CUDA else 8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bsz=st.integers(1, 3), hkv=st.integers(1, 3), group=st.integers(1, 3), lq=st.integers(1, 3),
    lmax=st.integers(1, 60), d=st.integers(1, 20), splits=st.integers(1, 6), causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(bsz, hkv, group, lq, lmax, d, splits, causal, seed):
    g = torch.Generator().manual_seed(seed)
    hq = hkv * group
    q, k, v = rand(bsz, hq, lq, d, gen=g), rand(bsz, hkv, lmax, d, gen=g), rand(bsz, hkv, lmax, d, gen=g)
    lens = torch.randint(0, lmax + 1, (bsz,), generator=g).to(DEVICE)
    out = flash_decode(q, k, v, lens, causal=causal, num_splits=splits)
    torch.testing.assert_close(out.double(), reference(q, k, v, lens, causal), rtol=1e-5, atol=1e-5)


def test_bad_input_names_the_argument():
    q, k, v = rand(2, 4, 1, 8), rand(2, 2, 10, 8), rand(2, 2, 10, 8)
    with pytest.raises(ValueError, match="multiple"):
        flash_decode(q, rand(2, 3, 10, 8), rand(2, 3, 10, 8))
    with pytest.raises(ValueError, match="q"):
        flash_decode(q[0], k, v)
    with pytest.raises(ValueError, match="k_cache and v_cache"):
        flash_decode(q, k, v[:, :, :5])
    with pytest.raises(TypeError, match="dtype"):
        flash_decode(q, k.double(), v)
    with pytest.raises(ValueError, match="cache_lens"):
        flash_decode(q, k, v, torch.tensor([3, 11], device=DEVICE), check_lens=True)  # (Lmax 10)
    with pytest.raises(TypeError, match="cache_lens"):
        flash_decode(q, k, v, torch.tensor([3.0, 4.0], device=DEVICE))
    with pytest.raises(ValueError, match="num_splits"):
        flash_decode(q, k, v, num_splits=0)
    with pytest.raises(ValueError, match="block_n"):
        flash_decode(q, k, v, block_n=24)
    with pytest.raises(ValueError, match="block_n must be a power of two from 16 to 1024"):
        flash_decode(q, k, v, block_n=2048)
    with pytest.raises(ValueError, match=r"key/value heads Hkv=0"):
        flash_decode(q, k[:, :0], v[:, :0])
    with pytest.raises(ValueError, match="flash_decode is for a few query tokens"):
        flash_decode(rand(2, 4, 600, 8), k, v)
    if not CUDA:
        with pytest.raises(TypeError, match="bfloat16"):
            flash_decode(q.bfloat16(), k.bfloat16(), v.bfloat16())


def test_int32_cache_lengths_of_any_stride():
    """An int32 view (expanded, or every other entry) is read as the values it shows, not as its storage."""
    g = torch.Generator().manual_seed(9)
    q, k, v = rand(4, 2, 1, 8, gen=g), rand(4, 2, 40, 8, gen=g), rand(4, 2, 40, 8, gen=g)
    for lens in (torch.tensor([5], dtype=torch.int32, device=DEVICE).expand(4),
                 torch.tensor([3, 40, 5, 40, 7, 1, 40, 2], dtype=torch.int32, device=DEVICE)[::2]):
        torch.testing.assert_close(flash_decode(q, k, v, lens), flash_decode(q, k, v, lens.long().contiguous()),
                                   rtol=0, atol=0)
        torch.testing.assert_close(flash_decode(q, k, v, lens).double(), reference(q, k, v, lens), rtol=1e-5, atol=1e-5)


def test_lengths_out_of_range_are_clamped_where_the_host_cannot_check_them(monkeypatch):
    """By default (and while a CUDA graph is captured) the lengths are not read back: the kernel clamps them
    to [0, Lmax] and reads no key past the buffer (poisoned past Lmax here, through a view of a longer cache);
    check_lens=True reads them back and raises."""
    from attnlib.kernels import decode

    g = torch.Generator().manual_seed(8)
    q, k_all, v_all = rand(3, 4, 1, 8, gen=g), rand(3, 2, 40, 8, gen=g), rand(3, 2, 40, 8, gen=g)
    k_all[:, :, 30:], v_all[:, :, 30:] = float("nan"), float("nan")
    k, v = k_all[:, :, :30], v_all[:, :, :30]  # Lmax = 30; the NaN keys lie just past the view
    lens = torch.tensor([-5, 12, 99], device=DEVICE)
    with pytest.raises(ValueError, match=r"cache_lens must lie in \[0, Lmax=30\]"):
        flash_decode(q, k, v, lens, check_lens=True)
    clamped = torch.tensor([0, 12, 30], device=DEVICE)
    want = flash_decode(q, k, v, clamped, num_splits=2)

    def no_read_back(*args, **kwargs):
        raise AssertionError("flash_decode read cache_lens back to the host (a GPU synchronisation)")

    with monkeypatch.context() as m:  # the default path: no read back at all
        for name in ("aminmax", "amin", "amax", "min", "max"):
            m.setattr(torch, name, no_read_back)
        for name in ("tolist", "item", "__int__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, no_read_back)
        out = flash_decode(q, k, v, lens, num_splits=2)
    assert not out.isnan().any()
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    monkeypatch.setattr(decode, "_capturing", lambda t: True)  # capturing: not read even when asked
    torch.testing.assert_close(flash_decode(q, k, v, lens, num_splits=2, check_lens=True), want, rtol=0, atol=0)


def test_bytes_and_default_splits():
    q, k, v = torch.randn(8, 32, 1, 128).half(), torch.randn(8, 8, 64, 128).half(), torch.randn(8, 8, 64, 128).half()
    # K and V: 8 batches x 8 heads x 64 keys x 128 dims x 2 tensors x 2 bytes, plus q and out.
    assert decode_bytes(q, k, v) == 8 * 8 * 64 * 128 * 2 * 2 + 2 * 8 * 32 * 128 * 2
    assert decode_bytes(q, k, v, torch.full((8,), 32)) == 8 * 8 * 32 * 128 * 2 * 2 + 2 * 8 * 32 * 128 * 2
    assert default_num_splits(8, 8, 64, 16, torch.device("cpu")) == 1
    assert default_num_splits(8, 8, 4096, 16, torch.device("cpu")) == 3


def test_default_splits_on_a_gpu(monkeypatch):
    """About four waves of programs over the SMs, no chunk shorter than four key tiles; an empty batch is no error."""
    from attnlib.kernels import decode

    monkeypatch.setattr(decode, "_sm_count_of", lambda index: 132)  # an H200's SMs, without a GPU
    gpu = torch.device("cuda", 0)
    assert default_num_splits(8, 8, 8192, 64, gpu) == 9  # 4 * 132 / 64 programs, rounded up
    assert default_num_splits(8, 32, 65536, 64, gpu) == 3
    assert default_num_splits(1, 1, 1024, 64, gpu) == 4  # capped by 1024 / (4 * 64)
    assert default_num_splits(0, 8, 8192, 64, gpu) == 32  # no programs to spread: as many as the keys allow


def test_host_integer_helpers_agree_with_tritons():
    """decode.py sizes its launch with plain-int helpers (Triton's are ~4 µs a call on the host)."""
    import triton

    from attnlib.kernels.decode import _cdiv, _next_pow2

    for a in range(1, 2100):
        assert _next_pow2(a) == triton.next_power_of_2(a), a
        for b in (1, 2, 3, 16, 64, 255, 4096):
            assert _cdiv(a, b) == triton.cdiv(a, b), (a, b)


@pytest.mark.skipif(not CUDA, reason="bfloat16 at decoding sizes needs a GPU (the interpreter has no bf16)")
@pytest.mark.parametrize("hkv", [32, 8])
def test_bfloat16_decode_sizes_on_gpu(hkv):
    g = torch.Generator().manual_seed(6)
    bsz, hq, lmax, d = 8, 32, 4099, 128
    q, k, v = (rand(bsz, hq, 1, d, gen=g, dtype=torch.bfloat16), rand(bsz, hkv, lmax, d, gen=g, dtype=torch.bfloat16),
               rand(bsz, hkv, lmax, d, gen=g, dtype=torch.bfloat16))
    lens = torch.randint(1, lmax + 1, (bsz,), generator=g).to(DEVICE)
    lens[0] = lmax
    out = flash_decode(q, k, v, lens)
    expected = reference(q, k, v, lens)
    rel = float((out.double() - expected).norm() / expected.norm())
    assert rel < 1e-2, f"relative error {rel:.2e} in bfloat16"


def test_lab18_solution_agrees_with_attnlib():
    """The lab's split-KV kernel and merge, together, equal flash_decode on a ragged GQA batch."""
    pytest.importorskip("jupytext", reason="reads the lab's MyST source with jupytext, not installed here")
    from helpers import exercise_namespace

    ns = exercise_namespace("lab18_decoding_and_sparse_kernels")
    g = torch.Generator().manual_seed(18)
    q, k, v = rand(3, 6, 1, 16, gen=g), rand(3, 2, 45, 16, gen=g), rand(3, 2, 45, 16, gen=g)
    lens = torch.tensor([45, 0, 20], device=DEVICE)
    o_parts, lse_parts = ns["split_kv_decode"](q, k, v, lens, num_splits=4)
    tol = dict(rtol=2e-3, atol=2e-3) if CUDA else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ns["combine_splits"](o_parts, lse_parts).unsqueeze(-2), flash_decode(q, k, v, lens), **tol)


def test_benchmark_suite_needs_cuda():
    from attnlib.bench import decode as bench

    shapes = bench.grid(quick=False)
    assert {(s["kv_heads"], s["kv_len"]) for s in shapes} == {(h, n) for h in (32, 8) for n in (8192, 16384, 32768, 65536)}
    if not CUDA:
        with pytest.raises(RuntimeError, match="CUDA"):
            bench.run(quick=True)
