r"""A time model of one attention layer's forward pass: single device, ring and Ulysses, at cluster scale.

For batch :math:`B`, :math:`H` heads of size :math:`d` and length :math:`L` on :math:`P` devices
(shard :math:`n = L/P`), with a tensor-core rate :math:`F` (FLOP/s) and link bandwidths (bytes/s per
device and direction; :math:`\beta` bytes per element):

* compute: :math:`4 B H L^2 d / F` (halved with a causal mask), split evenly over the ranks (the
  zig-zag layout makes that true for ring attention);
* ring: :math:`P` steps; each computes :math:`4 B H n^2 d` FLOPs (halved if causal) and :math:`P - 1` of
  them pass a K and a V shard, :math:`2 B H n d \beta` bytes, to the next rank. Overlapped, a step takes the
  longer of the two, so the ring is communication-bound when
  :math:`n < F / \text{bandwidth}` (:math:`2F/\text{bandwidth}` if causal): a property of the shard length
  alone, not of :math:`H` or :math:`d`;
* Ulysses: four all-to-alls (Q, K, V and the output), each sending :math:`(P-1)/P` of a
  :math:`B H n d \beta`-byte shard, not overlapped with the local attention; the head count must be
  divisible by :math:`P`.

The ring's hop between nodes (and the part of an all-to-all that leaves a node) runs at the network's
bandwidth, the rest at the intra-node link's. The figures in :data:`H100_NDR` are vendors' published
specifications (NVIDIA H100 SXM, NVLink 4, InfiniBand NDR): assumptions, not measurements. The model
ignores latency, kernel efficiency, the backward pass and the rest of the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Hardware", "H100_NDR", "attention_flops", "single_device_time", "ring_time", "ulysses_time",
           "ring_comm_bound_shard"]


@dataclass(frozen=True)
class Hardware:
    """Per-device rate and bandwidths (bytes/s, one direction) and devices per node."""

    flops: float
    intra_bw: float
    inter_bw: float
    per_node: int = 8


# H100 SXM: 989 TFLOP/s dense bf16 tensor cores (1979 with sparsity); NVLink 4: 900 GB/s per GPU, both
# directions together, so 450 GB/s each way; InfiniBand NDR: 400 Gb/s = 50 GB/s per port, one port per GPU.
H100_NDR = Hardware(flops=989e12, intra_bw=450e9, inter_bw=50e9, per_node=8)


def attention_flops(length: int, heads: int, dim: int, *, batch: int = 1, causal: bool = False) -> float:
    """Matmul FLOPs of one attention forward: 4 B H L^2 d (QK^T and PV), half of it if causal."""
    return 4.0 * batch * heads * length * length * dim * (0.5 if causal else 1.0)


def single_device_time(length, heads, dim, hw: Hardware = H100_NDR, *, batch=1, causal=False) -> float:
    """Seconds for the whole layer on one device (memory permitting)."""
    return attention_flops(length, heads, dim, batch=batch, causal=causal) / hw.flops


def _bw(world: int, hw: Hardware) -> float:
    return hw.intra_bw if world <= hw.per_node else hw.inter_bw


def ring_time(length, world, heads, dim, hw: Hardware = H100_NDR, *, batch=1, causal=False, overlap=True,
              bytes_per=2) -> dict:
    """``{"compute", "comm", "total"}`` seconds of ring attention on ``world`` devices."""
    n = length / world
    step = attention_flops(n, heads, dim, batch=batch, causal=causal) / hw.flops
    hop = 2.0 * batch * heads * n * dim * bytes_per / _bw(world, hw)
    compute, comm = world * step, (world - 1) * hop
    total = step + (world - 1) * max(step, hop) if overlap else compute + comm
    return {"compute": compute, "comm": comm, "total": total}


def ulysses_time(length, world, heads, dim, hw: Hardware = H100_NDR, *, batch=1, causal=False,
                 bytes_per=2) -> dict:
    """``{"compute", "comm", "total"}`` seconds of Ulysses on ``world`` devices (NaN if heads % world)."""
    if heads % world:
        return {"compute": math.nan, "comm": math.nan, "total": math.nan}
    shard = batch * heads * (length / world) * dim * bytes_per
    inside = min(world, hw.per_node)
    local, remote = shard * (inside - 1) / world, shard * (world - inside) / world  # bytes kept in / leaving the node
    comm = 4 * (local / hw.intra_bw + remote / hw.inter_bw)
    compute = attention_flops(length, heads, dim, batch=batch, causal=causal) / world / hw.flops
    return {"compute": compute, "comm": comm, "total": compute + comm}


def ring_comm_bound_shard(world: int, hw: Hardware = H100_NDR, *, causal: bool = False) -> float:
    """The shard length below which an overlapped ring step waits for the network: F / bandwidth."""
    return (2.0 if causal else 1.0) * hw.flops / _bw(world, hw)
