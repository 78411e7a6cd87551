r"""A preallocated key/value cache for incremental decoding.

At decoding step :math:`t` a causal attention layer needs the keys and values
of every earlier token, :math:`K_{\le t}, V_{\le t}`. Recomputing them costs a
full forward per step; caching them costs memory. Per token and layer the cache
holds

.. math:: 2 \cdot H_{kv} \cdot d_{head} \cdot \text{bytes per element}

(keys and values, ``H_kv`` key/value heads), which is why multi-query attention
(``H_kv = 1``) shrinks it by the number of heads (seed *Fast Transformer Decoding:
One Write-Head is All You Need*), and every decoding step reads all of it once.

:class:`KVCache` preallocates ``(B, H_kv, max_len, D)`` buffers, so ``append`` is a
copy into the next free slots (amortised O(1) per token, no ``torch.cat``), and
``keys()``/``values()`` are views of the filled part. ``evict(keep)`` compacts the
kept positions to the front, in their original order. The cache stays
rectangular: every ``(batch, head)`` row holds the same number of tokens (ragged
caches are what the split-KV kernel :func:`attnlib.kernels.flash_decode` handles).
"""

from __future__ import annotations


import torch

from ..validation import check_positive_int

__all__ = ["KVCache", "kv_bytes_per_token"]


def kv_bytes_per_token(n_kv_heads: int, head_dim: int, n_layers: int = 1, dtype: torch.dtype = torch.float32) -> int:
    """Analytic cache size of one token: ``2 * n_kv_heads * head_dim * n_layers * element size`` bytes."""
    for name, value in (("n_kv_heads", n_kv_heads), ("head_dim", head_dim), ("n_layers", n_layers)):
        check_positive_int(value, name)
    return 2 * n_kv_heads * head_dim * n_layers * torch.empty((), dtype=dtype).element_size()


class KVCache:
    """Keys and values of up to ``max_len`` tokens for ``batch`` sequences and ``n_kv_heads`` heads.

    Args:
        batch, n_kv_heads, max_len, head_dim: the buffer is ``(batch, n_kv_heads, max_len, head_dim)``.
        dtype, device: of the buffers; appended tensors are converted to them.

    ``append(k, v)`` takes ``(batch, n_kv_heads, T, head_dim)``; ``keys()``/``values()`` return the
    ``(batch, n_kv_heads, len, head_dim)`` views held; ``len(cache)`` is the number of tokens held;
    ``nbytes`` the bytes the held keys and values occupy; ``evict(keep)`` keeps a selection.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device=None):
        self.batch = check_positive_int(batch, "batch")
        self.n_kv_heads = check_positive_int(n_kv_heads, "n_kv_heads")
        self.max_len = check_positive_int(max_len, "max_len")
        self.head_dim = check_positive_int(head_dim, "head_dim")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        shape = (batch, n_kv_heads, max_len, head_dim)
        self._k = torch.zeros(shape, dtype=dtype, device=device)  # (B, Hkv, max_len, D)
        self._v = torch.zeros(shape, dtype=dtype, device=device)
        self._len = 0

    @property
    def dtype(self) -> torch.dtype:
        return self._k.dtype

    @property
    def device(self) -> torch.device:
        return self._k.device

    def __len__(self) -> int:
        return self._len

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values held: ``2 * B * Hkv * len * D * element size``."""
        return 2 * self.batch * self.n_kv_heads * self._len * self.head_dim * self._k.element_size()

    def _check_kv(self, t: torch.Tensor, name: str) -> None:
        want = (self.batch, self.n_kv_heads, self.head_dim)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, Hkv, T, D), got {type(t).__name__}")
        if t.dim() != 4 or (t.shape[0], t.shape[1], t.shape[3]) != want:
            raise ValueError(f"{name} must have shape (B, Hkv, T, D) = ({want[0]}, {want[1]}, T, {want[2]}), "
                             f"got {tuple(t.shape)}")

    def append(self, k: torch.Tensor, v: torch.Tensor):
        """Write ``T`` new tokens after the ones held; returns ``(keys(), values())``."""
        self._check_kv(k, "k")
        self._check_kv(v, "v")
        if k.shape[2] != v.shape[2]:
            raise ValueError(f"k and v must hold the same number of tokens, got {k.shape[2]} and {v.shape[2]}")
        t = k.shape[2]
        if self._len + t > self.max_len:
            raise ValueError(f"the cache holds {self._len} of max_len={self.max_len} tokens: appending {t} "
                             f"more would overflow it (evict first, or make a larger cache)")
        self._k[:, :, self._len:self._len + t] = k
        self._v[:, :, self._len:self._len + t] = v
        self._len += t
        return self.keys(), self.values()

    def keys(self) -> torch.Tensor:
        return self._k[:, :, :self._len]  # (B, Hkv, len, D), a view

    def values(self) -> torch.Tensor:
        return self._v[:, :, :self._len]

    def _index(self, keep: torch.Tensor) -> torch.Tensor:
        """``keep`` as sorted indices ``(B, Hkv, n)``."""
        if not isinstance(keep, torch.Tensor):
            keep = torch.as_tensor(keep, dtype=torch.long)
        n_all = self._len
        rows = (self.batch, self.n_kv_heads)
        keep = keep.to(self.device)
        if keep.dtype == torch.bool:
            if keep.shape not in ((n_all,), rows + (n_all,)):
                raise ValueError(f"a boolean keep must have shape (len,)=({n_all},) or (B, Hkv, len)="
                                 f"{rows + (n_all,)}, got {tuple(keep.shape)}")
            keep = keep.expand(*rows, n_all)
            counts = keep.sum(-1)
            if (counts != counts.flatten()[0]).any():
                raise ValueError("a per-row keep must keep the same number of tokens in every (batch, head) row "
                                 f"(the cache stays rectangular), got counts {counts.flatten().tolist()}")
            n = int(counts.flatten()[0])
            idx = torch.arange(n_all, device=self.device).expand(*rows, n_all)
            return idx[keep].view(*rows, n)
        if keep.is_floating_point():
            raise TypeError(f"keep must hold integer indices or booleans, got dtype {keep.dtype}")
        if keep.dim() not in (1, 3) or (keep.dim() == 3 and tuple(keep.shape[:2]) != rows):
            raise ValueError(f"integer keep must have shape (n,) or (B, Hkv, n) = {rows} + (n,), "
                             f"got {tuple(keep.shape)}")
        keep = keep.long()
        if keep.numel() and (keep.min() < 0 or keep.max() >= n_all):
            raise ValueError(f"keep indices must lie in [0, len={n_all}), got [{int(keep.min())}, {int(keep.max())}]")
        keep = keep.expand(*rows, keep.shape[-1]).sort(-1).values
        if keep.shape[-1] > 1 and (keep[..., 1:] == keep[..., :-1]).any():
            raise ValueError("keep indices must not repeat a position")
        return keep

    def evict(self, keep) -> None:
        """Keep only the positions in ``keep`` (in their original order) and drop the rest.

        ``keep``: indices ``(n,)`` or a boolean ``(len,)`` shared by every row, or indices ``(B, Hkv, n)`` or
        a boolean ``(B, Hkv, len)`` per ``(batch, head)`` row, keeping the same count in every row.
        """
        idx = self._index(keep)  # (B, Hkv, n)
        n = idx.shape[-1]
        gather = idx[..., None].expand(-1, -1, -1, self.head_dim)  # (B, Hkv, n, D)
        k, v = self.keys().gather(2, gather), self.values().gather(2, gather)
        self._k[:, :, :n] = k
        self._v[:, :, :n] = v
        self._len = n

    def __repr__(self) -> str:
        return (f"KVCache(batch={self.batch}, n_kv_heads={self.n_kv_heads}, len={self._len}/{self.max_len}, "
                f"head_dim={self.head_dim}, dtype={self.dtype})")
