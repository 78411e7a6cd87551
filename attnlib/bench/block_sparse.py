"""The block-sparse benchmark: time of :func:`attnlib.kernels.block_sparse_attention` against
the fraction of active tiles, with dense SDPA (cuDNN, flash) in the same run.

Shape: bfloat16, ``B = 4``, ``H = 16``, ``L = 8192``, head dim 128, tiles of 128 x 128.
For each target fraction ``f`` every query block keeps ``max(1, round(f * nKB))``
key blocks chosen at random (the same count per row, so no program waits on a
longer one). If the kernel's time is proportional to its work, ``time(f) / time(1)``
equals the measured fraction. Also timed: a causal mask and a 1024-token sliding
window through the same kernel. Timing: :func:`attnlib.bench.timing.bench_ms`
(``triton.testing.do_bench`` median), random inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .env import require_bf16_gpu
from .timing import attention_tflops, bench_ms

__all__ = ["run", "random_block_mask", "plot"]

SHAPE = {"batch": 4, "heads": 16, "seq_len": 8192, "head_dim": 128, "block_size": 128}


def random_block_mask(n_q_blocks: int, n_k_blocks: int, fraction: float, *, generator=None, device=None):
    """``(nQB, nKB)`` with exactly ``max(1, round(fraction * nKB))`` random active key blocks per row."""
    per_row = max(1, round(fraction * n_k_blocks))
    scores = torch.rand(n_q_blocks, n_k_blocks, generator=generator)
    chosen = scores.topk(per_row, dim=-1).indices
    mask = torch.zeros(n_q_blocks, n_k_blocks, dtype=torch.bool).scatter_(-1, chosen, True)
    return mask.to(device)


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def run(quick: bool = False) -> dict:
    """Measure on the current CUDA device; JSON-able results (``rows``, ``checks``)."""
    require_bf16_gpu("block-sparse")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..kernels import block_sparse_attention
    from ..kernels.block_sparse import expand_block_mask, sliding_window_block_mask

    b, h, n, d, bs = (SHAPE[k] for k in ("batch", "heads", "seq_len", "head_dim", "block_size"))
    nb = n // bs
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    cpu_gen = torch.Generator().manual_seed(0)
    rep = 50 if quick else 100

    # Correctness first, at a smaller length: against SDPA's math backend with the expanded mask.
    checks = []
    small = 1000
    qs, ks, vs = (x[:1, :2, :small] for x in (q, k, v))
    nbs = -(-small // bs)
    bm = random_block_mask(nbs, nbs, 0.3, generator=cpu_gen, device="cuda")
    out = block_sparse_attention(qs, ks, vs, bm, block_size=bs)
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(qs.float(), ks.float(), vs.float(),
                                             attn_mask=expand_block_mask(bm, small, small, bs))
    err = _rel(out, ref)
    checks.append({"case": "random 30% blocks, L=1000", "rel_error": err, "passed": err == err and err < 2e-2})
    if not all(c["passed"] for c in checks):
        return {"kernel_correct": False, "checks": checks, "rows": [], "shape": SHAPE}

    rows = []

    def timed(impl, fn, fraction, flops_fraction):
        fn()
        torch.cuda.synchronize()
        ms = bench_ms(fn, rep=rep)
        dense_tflops = attention_tflops(ms, b, h, n, n, d)  # as if all tiles were computed
        rows.append({"impl": impl, **SHAPE, "fraction": fraction, "ms": ms,
                     "tflops_on_active": dense_tflops * flops_fraction})  # FLOPs of the active tiles only

    fractions = (1.0, 0.25, 0.1) if quick else (1.0, 0.5, 0.25, 0.1, 0.05)
    for f in fractions:
        bm = random_block_mask(nb, nb, f, generator=cpu_gen, device="cuda")
        real = float(bm.float().mean())
        timed("attnlib_block_sparse", lambda bm=bm: block_sparse_attention(q, k, v, bm, block_size=bs), real, real)
    causal_bm = sliding_window_block_mask(n, n, None, bs, device="cuda")
    frac = float(causal_bm.float().mean())
    timed("attnlib_block_sparse_causal", lambda: block_sparse_attention(q, k, v, causal_bm, block_size=bs, causal=True),
          frac, frac)
    window_bm = sliding_window_block_mask(n, n, 1024, bs, device="cuda")
    frac = float(window_bm.float().mean())
    timed("attnlib_block_sparse_window1024",
          lambda: block_sparse_attention(q, k, v, window_bm, block_size=bs, window=1024), frac, frac)
    for name, backend in (("sdpa_cudnn_dense", "CUDNN_ATTENTION"), ("sdpa_flash_dense", "FLASH_ATTENTION")):
        try:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                timed(name, lambda: F.scaled_dot_product_attention(q, k, v), 1.0, 1.0)
        except Exception as e:  # noqa: BLE001 - record a backend that refuses the shape
            rows.append({"impl": name, **SHAPE, "fraction": 1.0, "ms": None, "error": f"{type(e).__name__}: {e}"[:200]})

    full = next(r["ms"] for r in rows if r["impl"] == "attnlib_block_sparse" and r["fraction"] == 1.0)
    for r in rows:
        r["time_vs_all_blocks"] = r["ms"] / full if r.get("ms") else None
    for r in rows:
        ratio = f"{r['time_vs_all_blocks']:.3f}" if r.get("time_vs_all_blocks") else "-"
        print(f"  {r['impl']:>32}: active {r['fraction']:.3f}, time / all blocks {ratio}")
    return {"kernel_correct": True, "checks": checks, "rows": rows, "shape": SHAPE,
            "note": "time_vs_all_blocks = ms / ms(all blocks active); proportional scaling means it equals fraction"}


def plot(results: dict):
    """Time relative to all-blocks-active against the fraction of active blocks (log-log)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    rows = [r for r in results["rows"] if r.get("ms")]
    pts = sorted((r["fraction"], r["time_vs_all_blocks"]) for r in rows if r["impl"] == "attnlib_block_sparse")
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="random blocks")
        ax.plot([p[0] for p in pts], [p[0] for p in pts], "k:", label="proportional")
    for r in rows:
        if r["impl"] != "attnlib_block_sparse":
            ax.plot([r["fraction"]], [r["time_vs_all_blocks"]], "s",
                    label=r["impl"].replace("attnlib_block_sparse_", ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fraction of active blocks")
    ax.set_ylabel("time / time(all blocks)")
    machine = results.get("machine", {})
    ax.set_title(f"block-sparse forward, {machine.get('gpu', '?')}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
