"""The decoding benchmark: split-KV :func:`attnlib.kernels.flash_decode` against SDPA's backends, in one run.

Grid (the course's target): bfloat16, one query token, ``B = 8``, ``Hq = 32`` query heads
with ``Hkv = 32`` (MHA) or ``8`` (GQA 32:8), head dim 128, KV length 8k to 64k.
Decoding is memory-bound, so the figure of merit is **effective bandwidth**: the
fewest bytes a step must move (:func:`attnlib.kernels.decode.decode_bytes`: K and V
read once, q read, out written) over the median time. It is compared with

* a device-to-device copy measured in the same run (bytes read + written): the
  practical ceiling of the memory system;
* the same kernel with 128-key tiles (``attnlib_decode_bn128``), to see which tile size pays;
* ``torch.nn.functional.scaled_dot_product_attention`` with each backend pinned
  (``sdpa_cudnn``, ``sdpa_flash``, ``sdpa_efficient``); grouped heads go through
  ``enable_gqa=True``, and a backend that refuses a shape is recorded with its error.

Timing: :func:`attnlib.bench.timing.bench_ms` (``triton.testing.do_bench`` median,
L2 flushed between runs; the caches here are gigabytes, far beyond L2 anyway),
random inputs (never zeros). Before timing, the kernel is checked against
SDPA's math backend in float32; a kernel that fails is not timed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .env import require_bf16_gpu
from .timing import bench_ms, progress

__all__ = ["run", "grid", "copy_bandwidth_tb_s", "check_correctness", "ratios", "ratio_lines", "plot", "IMPLS"]

IMPLS = ("attnlib_decode", "attnlib_decode_bn128", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient")
_BACKENDS = {"sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION"}
_CHECK_TOL = 2e-2  # relative error (in norm) allowed for bfloat16 against a float32 reference


def grid(quick: bool = False) -> list[dict]:
    """Shapes, most informative first."""
    lengths = (8192, 65536) if quick else (8192, 16384, 32768, 65536)
    return [{"batch": 8, "heads": 32, "kv_heads": hkv, "head_dim": 128, "kv_len": n}
            for hkv in (32, 8) for n in lengths]


def copy_bandwidth_tb_s(gib: float = 2.0) -> float:
    """A large device-to-device copy, counting bytes read plus bytes written (TB/s)."""
    x = torch.randn(int(gib * 2**30) // 4, device="cuda")
    y = torch.empty_like(x)
    ms = bench_ms(lambda: y.copy_(x))
    return 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e12


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def check_correctness() -> list[dict]:
    """flash_decode against SDPA's math backend at odd, ragged shapes (float32) and one bf16 bench shape."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..kernels import flash_decode

    results = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    cases = [(3, 8, 2, 1, 1237, 64, torch.float32), (2, 6, 6, 3, 999, 128, torch.float32),
             (8, 32, 8, 1, 8192, 128, torch.bfloat16)]
    for bsz, hq, hkv, lq, lmax, d, dtype in cases:
        q = torch.randn(bsz, hq, lq, d, device="cuda", generator=gen).to(dtype)
        k = torch.randn(bsz, hkv, lmax, d, device="cuda", generator=gen).to(dtype)
        v = torch.randn(bsz, hkv, lmax, d, device="cuda", generator=gen).to(dtype)
        lens = torch.randint(1, lmax + 1, (bsz,), device="cuda", generator=gen)
        out = flash_decode(q, k, v, lens)
        mask = (torch.arange(lmax, device="cuda")[None, :] < lens[:, None])[:, None, None, :]
        group = hq // hkv
        with sdpa_kernel(SDPBackend.MATH):
            ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(group, 1),
                                                 v.float().repeat_interleave(group, 1), attn_mask=mask)
        err = _rel(out, ref)
        results.append({"batch": bsz, "heads": hq, "kv_heads": hkv, "lq": lq, "kv_len": lmax, "head_dim": d,
                        "dtype": str(dtype).replace("torch.", ""), "rel_error": err,
                        "passed": err == err and err < (_CHECK_TOL if dtype == torch.bfloat16 else 1e-4)})
    return results


def _attend(name: str, q, k, v):
    """(callable, context) for one implementation; SDPA runs inside its pinned backend."""
    import contextlib

    if name.startswith("attnlib_decode"):
        from ..kernels import flash_decode

        block_n = 128 if name.endswith("bn128") else None  # a second tile size, to see which pays
        return (lambda: flash_decode(q, k, v, block_n=block_n)), contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gqa = q.shape[1] != k.shape[1]
    return ((lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)),
            sdpa_kernel(getattr(SDPBackend, _BACKENDS[name])))


def time_shape(shape: dict, impls=IMPLS, *, warmup: int = 25, rep: int = 100) -> list[dict]:
    """Rows of ms and effective TB/s for each implementation at one shape."""
    from ..kernels.decode import decode_bytes

    b, hq, hkv, d, n = shape["batch"], shape["heads"], shape["kv_heads"], shape["head_dim"], shape["kv_len"]
    gen = torch.Generator(device="cuda").manual_seed(n + hkv)
    q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    nbytes = decode_bytes(q, k, v)
    rows = []
    for name in impls:
        fn, pinned = _attend(name, q, k, v)
        row = {"impl": name, **shape, "bytes": nbytes}
        try:
            with pinned:
                fn()  # warm-up: compiles the Triton kernels, creates handles
                torch.cuda.synchronize()
                ms = bench_ms(fn, warmup=warmup, rep=rep)
            row.update(ms=ms, tb_s=nbytes / (ms * 1e-3) / 1e12)
        except Exception as e:  # noqa: BLE001 - a backend may refuse a shape; record why
            row.update(ms=None, tb_s=None, error=f"{type(e).__name__}: {str(e)[:200]}")
        rows.append(row)
    del q, k, v
    torch.cuda.empty_cache()
    return rows


def ratios(rows: list[dict], copy_tb_s: float) -> list[dict]:
    """Per (Hkv, KV length): attnlib's TB/s, its fraction of the copy bandwidth, and SDPA's time over ours."""
    table = []
    ours = {(r["kv_heads"], r["kv_len"]): r for r in rows if r["impl"] == "attnlib_decode"}
    for (hkv, n), r in sorted(ours.items()):
        entry = {"kv_heads": hkv, "kv_len": n, "tb_s": r["tb_s"],
                 "fraction_of_copy": r["tb_s"] / copy_tb_s if r["tb_s"] else None}
        for other in rows:
            if (other["kv_heads"], other["kv_len"]) == (hkv, n) and other["impl"].startswith("sdpa"):
                entry[f"vs_{other['impl']}"] = (other["ms"] / r["ms"]) if (other["ms"] and r["ms"]) else None
        table.append(entry)
    return table


def ratio_lines(table: list[dict]) -> list[str]:
    """One printable line per :func:`ratios` entry ("-" where a number is missing)."""
    def fmt(x):
        return f"{x:.2f}" if x is not None else "-"

    return [f"Hkv={e['kv_heads']:>2} KV={e['kv_len']:>6}: {fmt(e['tb_s'])} TB/s ({fmt(e['fraction_of_copy'])} of "
            f"copy), x{fmt(e.get('vs_sdpa_cudnn'))} vs cuDNN, x{fmt(e.get('vs_sdpa_flash'))} vs flash"
            for e in table]


def run(quick: bool = False) -> dict:
    """Measure the grid on the current CUDA device; JSON-able results (``rows``, ``ratios``, ``checks``)."""
    require_bf16_gpu("decode")
    checks = check_correctness()
    copy_tb_s = copy_bandwidth_tb_s()
    correct = all(c["passed"] for c in checks)
    impls = IMPLS if correct else [i for i in IMPLS if not i.startswith("attnlib")]  # a wrong kernel is not timed
    rep = 50 if quick else 100
    rows = [r for shape in progress(grid(quick), "decode grid", describe=lambda s: " ".join(f"{k}={v}" for k, v in s.items()))
            for r in time_shape(shape, impls, rep=rep)]
    table = ratios(rows, copy_tb_s)
    print(f"decode: copy {copy_tb_s:.2f} TB/s; kernel correct: {correct}")
    for line in ratio_lines(table):
        print("  " + line)
    return {"dtype": "bfloat16", "copy_tb_s": copy_tb_s, "kernel_correct": correct,
            "checks": checks, "rows": rows, "ratios": table,
            "note": "TB/s = decode_bytes (q + valid K and V + out) / median time; vs_X = time of X / time of ours"}


def plot(results: dict):
    """Effective TB/s against KV length, one panel per Hkv, with the measured copy bandwidth."""
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r.get("tb_s")]
    panels = sorted({r["kv_heads"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.2), squeeze=False,
                             sharey=True)
    for ax, hkv in zip(axes[0], panels):
        for impl in sorted({r["impl"] for r in rows}):
            pts = sorted((r["kv_len"], r["tb_s"]) for r in rows if r["impl"] == impl and r["kv_heads"] == hkv)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.axhline(results["copy_tb_s"], color="k", linestyle=":", label="device copy (measured)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("KV length")
        ax.set_title(f"decode, Hq=32, Hkv={hkv}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("effective TB/s")
    axes[0][0].legend(fontsize=7)
    machine = results.get("machine", {})
    fig.suptitle(f"{machine.get('gpu', '?')}, torch {machine.get('torch', '?')}, triton {machine.get('triton', '?')}",
                 fontsize=9)
    fig.tight_layout()
    return fig
