"""The block-sparse benchmark: time of :func:`attnlib.kernels.block_sparse_attention` against
the fraction of active tiles, with dense SDPA (cuDNN, flash) in the same run.

Shape: bfloat16, ``B = 4``, ``H = 16``, ``L = 8192``, head dim 128, tiles of 128 x 128.
For each target fraction ``f`` every query block keeps ``max(1, round(f * nKB))``
key blocks chosen at random (the same count per row, so no program waits on a
longer one). If the kernel's time is proportional to its work, ``time(f) / time(1)``
equals the measured fraction. Also timed through the same kernel (:func:`structured_masks`):
a causal mask, a 1024-token sliding window, eight packed causal documents and MoBA-style
routing (each query block's own block and its top 8 earlier ones), with SDPA's dense causal
forward beside them. Every mask is checked against SDPA's math backend at a smaller length
first (:func:`check_correctness`). Timing: :func:`attnlib.bench.timing.bench_ms`
(``triton.testing.do_bench`` median), random inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .env import require_bf16_gpu
from .timing import attention_tflops, bench_ms

__all__ = ["run", "random_block_mask", "structured_masks", "check_correctness", "plot"]

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


def structured_masks(q: torch.Tensor, k: torch.Tensor, block_size: int) -> list[tuple[str, torch.Tensor, dict]]:
    """``(name, block mask, element rule)`` of the structured masks the suite times, for self-attention
    of length ``L``: causal; a sliding window of ``L / 8`` keys; eight packed documents of ``L / 8``
    tokens, causal; MoBA-style routing, causal (:func:`attnlib.kernels.block_sparse.moba_block_mask`,
    top 8 earlier key blocks). The element rule is keyword arguments of ``block_sparse_attention``."""
    from ..kernels.block_sparse import document_block_mask, moba_block_mask, sliding_window_block_mask

    n, device = q.shape[-2], q.device
    window = max(1, n // 8)
    docs = (torch.arange(n, device=device) * 8 // n)[None].expand(q.shape[0], n).contiguous()  # ids 0..7
    return [
        ("causal", sliding_window_block_mask(n, n, None, block_size, device=device), {"causal": True}),
        (f"window{window}", sliding_window_block_mask(n, n, window, block_size, device=device), {"window": window}),
        ("documents8", document_block_mask(docs, block_size, causal=True)[:, None],
         {"causal": True, "document_ids": docs}),
        ("moba_top8", moba_block_mask(q, k, block_size, 8), {"causal": True}),
    ]


def check_correctness(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, *, generator=None,
                      tol: float = 2e-2) -> list[dict]:
    """The kernel against SDPA's math backend in float32, for random 30% blocks and every
    :func:`structured_masks` mask, on ``q, k, v`` (B, H, L, D): a relative error (in norm) under ``tol``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..kernels import block_sparse_attention
    from ..kernels.block_sparse import element_mask, expand_block_mask

    n = q.shape[-2]
    nb = -(-n // block_size)
    cases = [("random 30% blocks", random_block_mask(nb, nb, 0.3, generator=generator, device=q.device), {})]
    cases += structured_masks(q, k, block_size)
    checks = []
    for name, bm, rule in cases:
        out = block_sparse_attention(q, k, v, bm, block_size=block_size, **rule)
        allowed = expand_block_mask(bm, n, n, block_size) & element_mask(n, n, device=q.device, **rule)
        with sdpa_kernel(SDPBackend.MATH):
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=allowed)
        ref = ref.masked_fill(~allowed.any(-1, keepdim=True), 0.0)  # rows with no key: 0, as attnlib defines them
        err = _rel(out, ref)
        checks.append({"case": f"{name}, L={n}", "rel_error": err, "passed": err == err and err < tol})
    return checks


def run(quick: bool = False) -> dict:
    """Measure on the current CUDA device; JSON-able results (``rows``, ``checks``)."""
    require_bf16_gpu("block-sparse")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..kernels import block_sparse_attention

    b, h, n, d, bs = (SHAPE[k] for k in ("batch", "heads", "seq_len", "head_dim", "block_size"))
    nb = n // bs
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
    cpu_gen = torch.Generator().manual_seed(0)
    rep = 50 if quick else 100

    # Correctness first, at a smaller length (odd: a ragged last block) and every mask timed below.
    small = 1000
    checks = check_correctness(*(x[:2, :2, :small] for x in (q, k, v)), bs, generator=cpu_gen)
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
    causal_fraction = None
    for name, bm, rule in structured_masks(q, k, bs):
        frac = float(bm.float().expand(b, h, nb, nb).mean())
        causal_fraction = frac if name == "causal" else causal_fraction
        timed(f"attnlib_block_sparse_{name}",
              lambda bm=bm, rule=rule: block_sparse_attention(q, k, v, bm, block_size=bs, **rule), frac, frac)
    for name, backend, causal in (("sdpa_cudnn_dense", "CUDNN_ATTENTION", False),
                                  ("sdpa_flash_dense", "FLASH_ATTENTION", False),
                                  ("sdpa_cudnn_causal", "CUDNN_ATTENTION", True)):
        frac = causal_fraction if causal else 1.0
        try:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                timed(name, lambda causal=causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal), frac, frac)
        except Exception as e:  # noqa: BLE001 - record a backend that refuses the shape
            rows.append({"impl": name, **SHAPE, "fraction": frac, "ms": None,
                         "error": f"{type(e).__name__}: {e}"[:200]})

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
