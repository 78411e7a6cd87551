"""Block-sparse attention kernel (attnlib.kernels.block_sparse_attention) and its block masks.

Runs in Triton's interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1):
tiny, odd sizes with 16 x 16 tiles.
"""

import importlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlib.core import scaled_dot_product_attention
from attnlib.kernels import block_sparse_attention
from attnlib.kernels.block_sparse import (
    block_mask_density,
    block_mask_from_dense,
    causal_block_mask,
    compress_block_mask,
    document_block_mask,
    element_mask,
    expand_block_mask,
    full_block_mask,
    moba_block_mask,
    sliding_window_block_mask,
)
from attnlib.masks import causal_mask, sliding_window_mask

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

BS = 16  # tile edge used throughout: the smallest tl.dot tile
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def rand(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype)


def qkv(bsz, heads, lq, lk, d, dv=None, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (rand(bsz, heads, lq, d, gen=g, dtype=dtype), rand(bsz, heads, lk, d, gen=g, dtype=dtype),
            rand(bsz, heads, lk, dv or d, gen=g, dtype=dtype))


def reference(q, k, v, mask):
    return scaled_dot_product_attention(q.double(), k.double(), v.double(), mask)


def flex_or_skip():
    try:
        module = importlib.import_module("torch.nn.attention.flex_attention")
        return module.flex_attention, module.create_block_mask
    except (ImportError, AttributeError) as e:  # older torch
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.flex_attention ({e})")


@pytest.mark.parametrize("lq,lk,d,dv", [(1, 1, 1, 1), (37, 37, 8, 8), (21, 50, 5, 9), (33, 17, 16, 4)])
def test_all_blocks_active_is_dense_attention(lq, lk, d, dv):
    q, k, v = qkv(2, 3, lq, lk, d, dv, seed=lq + lk)
    full = torch.ones(-(-lq // BS), -(-lk // BS), dtype=torch.bool, device=DEVICE)
    out = block_sparse_attention(q, k, v, full, block_size=BS)
    assert out.shape == (2, 3, lq, dv) and out.dtype == q.dtype
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_all_blocks_active_causal_equals_the_dense_flash_kernel():
    q, k, v = qkv(1, 2, 29, 45, 16, seed=7)
    out = block_sparse_attention(q, k, v, causal_block_mask(29, 45, BS, device=DEVICE), block_size=BS, causal=True)
    torch.testing.assert_close(out.double(), reference(q, k, v, causal_mask(29, 45, device=DEVICE)), rtol=1e-5, atol=1e-5)
    try:
        from attnlib.kernels import flash_attention
        dense = flash_attention(q, k, v, causal=True)
    except (ImportError, AttributeError, NotImplementedError) as e:
        pytest.skip(f"the dense FlashAttention kernel is not available yet ({type(e).__name__}: {e})")
    tol = 5e-3 if CUDA else 1e-4  # the dense kernel may use tf32 dots on a GPU
    torch.testing.assert_close(out, dense, rtol=tol, atol=tol)


@pytest.mark.parametrize("lq,lk,window", [(45, 45, 5), (45, 45, 17), (20, 51, 9), (40, 23, 30)])
def test_sliding_window_equals_masked_reference(lq, lk, window):
    q, k, v = qkv(2, 2, lq, lk, 8, seed=window)
    bm = sliding_window_block_mask(lq, lk, window, BS, device=DEVICE)
    dense_mask = sliding_window_mask(lq, lk, window, device=DEVICE)
    if lq <= lk:  # the analytic tiles are exactly the tiles that hold an allowed entry
        assert torch.equal(bm, block_mask_from_dense(dense_mask, BS))
    out = block_sparse_attention(q, k, v, bm, block_size=BS, window=window)
    torch.testing.assert_close(out.double(), reference(q, k, v, dense_mask), rtol=1e-5, atol=1e-5)
    if lq > lk:  # the first Lq - Lk queries have no key: zeros, not NaN
        assert (out[..., : lq - lk, :] == 0).all()


def test_block_masks_are_exactly_the_tiles_with_allowed_entries():
    for lq, lk in [(1, 1), (16, 16), (45, 45), (20, 51), (64, 33)]:
        for window in (None, 1, 2, 15, 16, 17, 40, 100):
            dense = sliding_window_mask(lq, lk, window) if window else causal_mask(lq, lk)
            tiles = block_mask_from_dense(dense, BS)
            analytic = sliding_window_block_mask(lq, lk, window, BS)
            assert not (tiles & ~analytic).any(), f"a needed tile is missing (Lq={lq}, Lk={lk}, window={window})"
            if lq <= lk:
                assert torch.equal(tiles, analytic), f"Lq={lq}, Lk={lk}, window={window}"
    docs = torch.tensor([[0] * 16 + [1] * 16 + [2] * 9, [0] * 3 + [1] * 30 + [2] * 8])
    tiles = block_mask_from_dense(element_mask(41, 41, document_ids=docs)[:, 0], BS)
    assert torch.equal(document_block_mask(docs, BS), tiles)  # consecutive ids: exact


def _full_by_brute_force(keep: torch.Tensor, lq: int, lk: int) -> torch.Tensor:
    """Tiles of the dense element rule ``keep (..., Lq, Lk)`` whose every entry is kept: padding rows count
    as kept (never stored), padding columns as not (keys past Lk must be masked)."""
    nqb, nkb = -(-lq // BS), -(-lk // BS)
    padded = F.pad(keep, (0, nkb * BS - lk), value=False)
    padded = F.pad(padded, (0, 0, 0, nqb * BS - lq), value=True)
    return padded.unflatten(-1, (nkb, BS)).unflatten(-3, (nqb, BS)).all(dim=-1).all(dim=-2)


def test_full_tiles_are_exactly_the_tiles_the_rule_keeps_whole():
    """The kernel skips the mask on full tiles, so a tile called full that is not would give wrong results."""
    for lq, lk in [(1, 1), (16, 16), (45, 45), (20, 51), (64, 33), (32, 64), (48, 48)]:
        for causal, window in [(False, None), (True, None), (True, 1), (True, 16), (True, 17), (True, 40)]:
            keep = element_mask(lq, lk, causal=causal, window=window)
            want = _full_by_brute_force(keep, lq, lk)
            got = full_block_mask(lq, lk, BS, causal=causal, window=window)
            assert torch.equal(got, want), f"Lq={lq}, Lk={lk}, causal={causal}, window={window}"
    docs = torch.tensor([[0] * 16 + [1] * 16 + [2] * 9, [0] * 3 + [1] * 30 + [2] * 8, [5] * 41])
    for causal in (False, True):
        keep = element_mask(41, 41, causal=causal, document_ids=docs)
        got = full_block_mask(41, 41, BS, causal=causal, document_ids=docs)
        assert torch.equal(got, _full_by_brute_force(keep, 41, 41)), f"documents, causal={causal}"
    # causal self-attention over 4 x 4 tiles: the 6 below the diagonal are full, the 4 on it are partial
    assert full_block_mask(64, 64, BS, causal=True).sum() == 6


@settings(max_examples=4 if CUDA else 8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(length=st.integers(1, 56), rule=st.sampled_from(["none", "causal", "window", "documents"]),
       window=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_random_block_masks_with_every_element_rule(length, rule, window, seed):
    """Full tiles unmasked and partial ones masked, under random block masks, against the dense reference."""
    q, k, v = qkv(2, 2, length, length, 8, seed=seed)
    g = torch.Generator().manual_seed(seed)
    nb = -(-length // BS)
    bm = (torch.rand(2, 1, nb, nb, generator=g) < 0.7).to(DEVICE)
    cuts = torch.sort(torch.randint(0, length + 1, (2, 2), generator=g), dim=-1).values
    docs = (torch.arange(length)[None, :] >= cuts[:, :1]).long() + (torch.arange(length)[None, :] >= cuts[:, 1:])
    kwargs = {"none": {}, "causal": {"causal": True}, "window": {"window": window},
              "documents": {"document_ids": docs.to(DEVICE)}}[rule]
    out = block_sparse_attention(q, k, v, bm, block_size=BS, **kwargs)
    mask = expand_block_mask(bm, length, length, BS) & element_mask(length, length, device=DEVICE, **kwargs)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_sliding_window_against_flex_attention():
    flex_attention, create_block_mask = flex_or_skip()
    lq = lk = 40
    window = 7
    q, k, v = qkv(1, 2, lq, lk, 8, seed=11)

    def mask_mod(b, h, qi, kj):
        return (kj <= qi) & (qi - kj < window)

    expected = flex_attention(q, k, v, block_mask=create_block_mask(
        mask_mod, B=None, H=None, Q_LEN=lq, KV_LEN=lk, device=DEVICE, BLOCK_SIZE=BS))
    out = block_sparse_attention(q, k, v, sliding_window_block_mask(lq, lk, window, BS, device=DEVICE), block_size=BS,
                                 window=window)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_document_mask_against_reference_and_flex_attention():
    length = 50
    docs = torch.tensor([[0] * 7 + [1] * 30 + [2] * 13, [0] * 20 + [3] * 30], device=DEVICE)
    q, k, v = qkv(2, 2, length, length, 8, seed=5)
    bm = document_block_mask(docs, BS, causal=True)  # (B, nB, nB)
    assert block_mask_density(bm) < 1.0
    out = block_sparse_attention(q, k, v, bm[:, None], block_size=BS, causal=True, document_ids=docs)
    mask = element_mask(length, length, causal=True, document_ids=docs, device=DEVICE)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), rtol=1e-5, atol=1e-5)
    # The block mask only skips work: every allowed entry lies in an active tile.
    assert not (mask & ~expand_block_mask(bm[:, None], length, length, BS)).any()

    flex_attention, create_block_mask = flex_or_skip()

    def mask_mod(b, h, qi, kj):
        return (docs[b, qi] == docs[b, kj]) & (kj <= qi)

    expected = flex_attention(q, k, v, block_mask=create_block_mask(
        mask_mod, B=2, H=None, Q_LEN=length, KV_LEN=length, device=DEVICE, BLOCK_SIZE=BS))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_moba_block_mask_properties_and_kernel():
    length, top_k = 70, 2  # 5 blocks of 16, the last one partial
    q, k, v = qkv(2, 3, length, length, 8, seed=9)
    bm = moba_block_mask(q, k, BS, top_k)  # (B, H, nB, nB)
    nb = bm.shape[-1]
    assert bm.shape == (2, 3, nb, nb) and nb == 5
    assert bm.diagonal(dim1=-2, dim2=-1).all(), "each query block keeps its own key block"
    assert not (bm & ~torch.ones(nb, nb, dtype=torch.bool, device=DEVICE).tril()).any(), "no future key blocks"
    expected_count = torch.clamp(torch.arange(nb, device=DEVICE), max=top_k) + 1  # own block + min(top_k, earlier blocks)
    assert torch.equal(bm.sum(-1), expected_count.expand(2, 3, nb))
    # The chosen earlier blocks are the ones with the largest gate scores.
    qm = torch.stack([q[..., i * BS:(i + 1) * BS, :].mean(-2) for i in range(nb)], dim=-2)
    km = torch.stack([k[..., i * BS:(i + 1) * BS, :].mean(-2) for i in range(nb)], dim=-2)
    gate = (qm @ km.transpose(-2, -1))[0, 0, 4, :4]
    assert set(gate.topk(top_k).indices.tolist()) == set(bm[0, 0, 4, :4].nonzero().flatten().tolist())

    out = block_sparse_attention(q, k, v, bm, block_size=BS, causal=True)
    mask = causal_mask(length, length, device=DEVICE) & expand_block_mask(bm, length, length, BS)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_empty_block_rows_give_zeros_and_broadcast_masks_work():
    q, k, v = qkv(2, 3, 40, 40, 8, seed=3)
    bm = torch.tensor([[False, False, False], [True, False, True], [False, True, False]], device=DEVICE)
    out = block_sparse_attention(q, k, v, bm, block_size=BS)
    assert (out[..., :BS, :] == 0).all() and not out.isnan().any()
    torch.testing.assert_close(out.double(), reference(q, k, v, expand_block_mask(bm, 40, 40, BS)),
                               rtol=1e-5, atol=1e-5)
    per_head = bm.expand(2, 3, 3, 3).clone()
    per_head[1, 2] = True  # one (batch, head) computes everything
    out2 = block_sparse_attention(q, k, v, per_head, block_size=BS)
    torch.testing.assert_close(out2[0], out[0])
    torch.testing.assert_close(out2[1, 2], F.scaled_dot_product_attention(q, k, v)[1, 2], rtol=1e-5, atol=1e-5)


def test_float16_large_logits():
    q, k, v = qkv(1, 2, 35, 35, 16, seed=4, dtype=torch.float16)
    q = q * 20  # logits in the hundreds
    out = block_sparse_attention(q, k, v, causal_block_mask(35, 35, BS, device=DEVICE), block_size=BS, causal=True)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(q, k, v, causal_mask(35, 35, device=DEVICE)),
                               rtol=2e-3, atol=2e-3)


@settings(max_examples=4 if CUDA else 6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lq=st.integers(1, 40), lk=st.integers(1, 40), d=st.integers(1, 12), causal=st.booleans(),
       seed=st.integers(0, 2**16))
def test_random_block_masks(lq, lk, d, causal, seed):
    q, k, v = qkv(1, 2, lq, lk, d, seed=seed)
    g = torch.Generator().manual_seed(seed)
    bm = (torch.rand(1, 2, -(-lq // BS), -(-lk // BS), generator=g) < 0.6).to(DEVICE)
    out = block_sparse_attention(q, k, v, bm, block_size=BS, causal=causal)
    mask = expand_block_mask(bm, lq, lk, BS) & (causal_mask(lq, lk, device=DEVICE) if causal else True)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_compress_block_mask():
    bm = torch.tensor([[True, False, True, False], [False, False, False, False], [False, True, True, True]])
    kv_num, kv_idx = compress_block_mask(bm)
    assert kv_num.tolist() == [2, 0, 3]
    assert kv_idx[0, :2].tolist() == [0, 2] and kv_idx[2, :3].tolist() == [1, 2, 3]
    assert kv_idx.dtype == torch.int32


def test_bad_input_names_the_argument():
    q, k, v = qkv(1, 2, 20, 20, 8)
    full = torch.ones(2, 2, dtype=torch.bool, device=DEVICE)
    with pytest.raises(ValueError, match="block_mask"):
        block_sparse_attention(q, k, v, torch.ones(3, 2, dtype=torch.bool, device=DEVICE), block_size=BS)
    with pytest.raises(TypeError, match="block_mask"):
        block_sparse_attention(q, k, v, full.int(), block_size=BS)
    with pytest.raises(ValueError, match="block_size"):
        block_sparse_attention(q, k, v, full, block_size=24)
    with pytest.raises(ValueError, match="document_ids"):
        block_sparse_attention(q, k, v, full, block_size=BS, document_ids=torch.tensor([[1] * 10 + [0] * 10], device=DEVICE))
    with pytest.raises(ValueError, match="window"):
        block_sparse_attention(q, k, v, full, block_size=BS, window=0)
    with pytest.raises(ValueError, match=r"\(B, H, L, d\)"):
        block_sparse_attention(q[0], k[0], v[0], full, block_size=BS)
    with pytest.raises(ValueError, match="block_size must be a power of two from 16"):
        block_sparse_attention(q, k, v, full, block_size=512)
    with pytest.raises(ValueError, match="document_ids must fit in int32"):
        block_sparse_attention(q, k, v, full, block_size=BS, document_ids=torch.tensor([[0] * 10 + [2**32] * 10],
                                                                                       device=DEVICE))
    with pytest.raises(TypeError, match="block_mask must be a boolean"):
        compress_block_mask(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"block_mask must end in \(nQB, nKB\) = \(7, 7\)"):
        expand_block_mask(torch.ones(2, 2, dtype=torch.bool), 100, 100, 16)
    with pytest.raises(TypeError, match="causal must be a bool"):
        document_block_mask(torch.zeros(1, 20, dtype=torch.long), BS, causal="no")
    if not CUDA:
        with pytest.raises(TypeError, match="bfloat16"):
            block_sparse_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), full, block_size=BS)


@pytest.mark.skipif(not CUDA, reason="bfloat16 at benchmark sizes needs a GPU (the interpreter has no bf16)")
@pytest.mark.parametrize("block_size", [64, 128])
def test_bfloat16_sliding_window_on_gpu(block_size):
    q, k, v = qkv(2, 4, 1000, 1000, 128, seed=8, dtype=torch.bfloat16)
    window = 300
    bm = sliding_window_block_mask(1000, 1000, window, block_size, device=DEVICE)
    out = block_sparse_attention(q, k, v, bm, block_size=block_size, window=window)
    expected = reference(q, k, v, sliding_window_mask(1000, 1000, window, device=DEVICE))
    rel = float((out.double() - expected).norm() / expected.norm())
    assert rel < 1e-2, f"relative error {rel:.2e} in bfloat16"


def test_lab18_solution_agrees_with_attnlib():
    """The lab's block mask builder and block-sparse kernel equal attnlib's (the decode half: test_kernels_decode)."""
    pytest.importorskip("jupytext", reason="reads the lab's MyST source with jupytext, not installed here")
    from helpers import exercise_namespace

    ns = exercise_namespace("lab18_decoding_and_sparse_kernels")
    for length, window in ((45, 5), (64, 17), (30, 100)):
        assert torch.equal(ns["window_block_mask"](length, window, BS), sliding_window_block_mask(length, length, window, BS))
    q, k, v = qkv(1, 2, 41, 41, 16, seed=18)
    bm = (torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(18)) < 0.6).to(DEVICE)
    tol = dict(rtol=2e-3, atol=2e-3) if CUDA else dict(rtol=1e-5, atol=1e-5)
    for causal in (False, True):
        ours = block_sparse_attention(q, k, v, bm, block_size=BS, causal=causal)
        torch.testing.assert_close(ns["block_sparse_lab"](q[0], k[0], v[0], bm[0], causal=causal), ours[0], **tol)


def test_benchmark_suite_masks_and_cuda():
    from attnlib.bench import block_sparse as bench

    g = torch.Generator().manual_seed(0)
    for fraction, per_row in ((1.0, 64), (0.1, 6), (0.01, 1)):
        bm = bench.random_block_mask(64, 64, fraction, generator=g)
        assert (bm.sum(-1) == per_row).all()
    if not CUDA:
        with pytest.raises(RuntimeError, match="CUDA"):
            bench.run(quick=True)


def test_benchmark_checks_every_mask_it_times_and_fails_a_wrong_kernel(monkeypatch):
    """The suite's correctness step (run on the GPU before any timing) covers random blocks and each structured
    mask (causal, window, documents, MoBA-style routing), at an odd length; a wrong kernel fails every case."""
    from attnlib import kernels
    from attnlib.bench import block_sparse as bench

    q, k, v = qkv(2, 2, 75, 75, 16, seed=21)
    names = [name for name, _, _ in bench.structured_masks(q, k, BS)]
    assert names == ["causal", "window9", "documents8", "moba_top8"]
    checks = bench.check_correctness(q, k, v, BS, generator=torch.Generator().manual_seed(0), tol=1e-4)
    assert [c["case"] for c in checks] == [f"{n}, L=75" for n in ["random 30% blocks"] + names]
    assert all(c["passed"] for c in checks), checks
    monkeypatch.setattr(kernels, "block_sparse_attention", lambda q, k, v, bm, **kw: torch.zeros_like(q))
    checks = bench.check_correctness(q, k, v, BS, generator=torch.Generator().manual_seed(0), tol=1e-4)
    assert not any(c["passed"] for c in checks)
