"""Why is split-KV decoding slow at one shape? A short GPU probe of :func:`attnlib.kernels.flash_decode`.

The first H200 run (attnlib/bench/NOTES.md, 2026-11-28) measured GQA 32:8 at a KV length of
8192 at 1.6 TB/s, slower in time than the same kernel on twice the cache (16384: 3.6 TB/s),
while MHA at 8192 ran at 4.2 TB/s. This probe times the kernel at those shapes in both
orders, with the default and several other chunk counts (``num_splits``), so that one call
tells a shape effect from an order (warm-up) effect and shows which chunk count pays:

    python tools/decode_probe.py --out DIR          # on a CUDA machine; writes DIR/decode_probe.json
    python tools/decode_probe.py --host --out DIR   # host cost per call vs GPU time (decode_host.json)
"""

from __future__ import annotations

import argparse
import functools
import json
import os

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--host", action="store_true", help="time the host side of a call instead")
    args = parser.parse_args()
    if args.host:
        return host(args.out)
    from attnlib.bench.env import machine_info
    from attnlib.bench.timing import bench_ms
    from attnlib.kernels import flash_decode
    from attnlib.kernels.decode import decode_bytes, default_num_splits

    rows = []
    # (Hkv, KV length): the slow shape first, then a longer cache, then the slow shape again.
    for order, (hkv, n) in enumerate([(8, 8192), (8, 16384), (8, 8192), (32, 8192), (8, 4096)]):
        gen = torch.Generator(device="cuda").manual_seed(order)
        q = torch.randn(8, 32, 1, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(8, hkv, n, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(8, hkv, n, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        nbytes = decode_bytes(q, k, v)
        default = default_num_splits(8, hkv, n, 64, q.device)
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != 32).float()
        for splits in sorted({default, 1, 4, 9, 18, 36, 72}):
            fn = functools.partial(flash_decode, q, k, v, num_splits=splits)
            err = float((fn().float() - ref).norm() / ref.norm())
            torch.cuda.synchronize()
            ms = bench_ms(fn, warmup=25, rep=100)
            rows.append({"order": order, "kv_heads": hkv, "kv_len": n, "num_splits": splits,
                         "default": splits == default, "ms": ms, "tb_s": nbytes / (ms * 1e-3) / 1e12,
                         "rel_error_vs_sdpa": err})
            print(f"#{order} Hkv={hkv:>2} KV={n:>6} splits={splits:>3}{'*' if splits == default else ' '} "
                  f"{ms:.4f} ms {rows[-1]['tb_s']:.2f} TB/s  err {err:.1e}", flush=True)
    with open(os.path.join(args.out, "decode_probe.json"), "w") as f:
        json.dump({"machine": machine_info(), "rows": rows,
                   "note": "* = default_num_splits; TB/s = decode_bytes / median time"}, f, indent=1)


def host(out_dir: str) -> None:
    """The suite's own timing of GQA 8k next to: the host's microseconds per call (no
    synchronisation), default_num_splits alone, explicit num_splits, and a CUDA-graph replay.
    Each measurement that fails is recorded with its error; the file is always written."""
    import time

    from attnlib.bench import decode as decode_bench
    from attnlib.bench.env import machine_info
    from attnlib.bench.timing import bench_ms
    from attnlib.kernels import flash_decode
    from attnlib.kernels.decode import default_num_splits

    result = {"machine": machine_info()}

    def record(name, measure):
        try:
            result[name] = measure()
        except Exception as e:  # noqa: BLE001 - a probe reports what failed and goes on
            result[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        value = result[name]
        shown = [(r["impl"], r["kv_heads"], r["kv_len"], r["ms"]) for r in value] if isinstance(value, list) else value
        print(name, shown, flush=True)

    def host_us(fn, n=300):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        return (t1 - t0) / n * 1e6

    gqa8k = {"batch": 8, "heads": 32, "kv_heads": 8, "head_dim": 128, "kv_len": 8192}
    mha64k = {**gqa8k, "kv_heads": 32, "kv_len": 65536}
    record("suite_first", lambda: decode_bench.time_shape(gqa8k, impls=("attnlib_decode", "sdpa_cudnn")))
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(8, 32, 1, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(8, 8, 8192, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(8, 8, 8192, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    calls = {"default splits": lambda: flash_decode(q, k, v),
             "num_splits=9": lambda: flash_decode(q, k, v, num_splits=9),
             "sdpa default backend": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)}
    for name, fn in calls.items():
        def measure(fn=fn):
            fn()
            return {"gpu_ms": bench_ms(fn), "host_us_per_call": host_us(fn)}
        record(name, measure)
    record("default_num_splits_us", lambda: host_us(lambda: default_num_splits(8, 8, 8192, 64, q.device), 2000))

    def graph_replay():
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            calls["default splits"]()  # warm: compiled and allocated outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            calls["default splits"]()
        return {"gpu_ms": bench_ms(graph.replay), "host_us_per_call": host_us(graph.replay)}

    record("graph replay, default splits", graph_replay)
    record("suite_after_mha64k", lambda: decode_bench.time_shape(mha64k, impls=("attnlib_decode",))
           + decode_bench.time_shape(gqa8k, impls=("attnlib_decode", "sdpa_cudnn")))
    with open(os.path.join(out_dir, "decode_host.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
