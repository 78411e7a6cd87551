"""The autotuning search spaces and their pruning, as a GPU would see them (checked on the CPU).

On a GPU, a configuration whose tiles overflow shared memory fails to compile (or spills
registers): pruning must drop those for the head dim at hand and keep the rest, and always
leave at least the fallback.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")
from attnlib.kernels import _flash_config as cfg  # noqa: E402

H200_SHARED = 232448  # bytes per block with opt-in on compute capability 9.0 (227 KiB)


@pytest.fixture
def as_on_h200(monkeypatch):
    monkeypatch.setattr(cfg, "INTERPRET", False)
    monkeypatch.setattr(cfg, "AUTOTUNE", True)
    monkeypatch.setattr(cfg, "_shared_memory_budget", lambda: H200_SHARED)


def _config(bm, bn, warps, stages):
    return cfg.triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


def _tiles(configs):
    return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in configs}


def test_forward_space_for_each_head_dim(as_on_h200):
    space = cfg.fwd_configs()
    kept = {d: _tiles(cfg.prune_forward_configs(space, {"BLOCK_D": d})) for d in (64, 128, 256)}
    assert (128, 128, 8, 3) in kept[64] and (128, 128, 8, 2) in kept[64]
    # D=128: three stages of 128x128 K and V tiles (224 KiB by the estimate) are timed when autotuning
    assert (128, 128, 8, 2) in kept[128] and (128, 128, 8, 3) in kept[128]
    four_stages = cfg.prune_forward_configs([_config(128, 128, 8, 4), *space], {"BLOCK_D": 128})  # 288 KiB: never
    assert (128, 128, 8, 4) not in _tiles(four_stages)
    assert (128, 64, 8, 3) in kept[128]
    assert kept[256] and all(bm * 256 / (32 * w) <= 128 for bm, bn, w, s in kept[256])
    assert (64, 32, 4, 2) not in kept[64]  # the fallback only when nothing else fits safely
    assert (64, 32, 4, 2) in kept[256] and (64, 64, 4, 3) in kept[256]  # D=256: timed against a borderline tile


def test_the_descriptor_forward_also_tries_two_programs_per_sm(as_on_h200):
    """The TMA space is the portable one plus 128x64 two-stage tiles (97 KiB: two fit in an SM's 228 KiB),
    one on 8 warps capped at 128 registers per thread (two programs then fill the 65,536 registers)."""
    portable, tma = cfg.fwd_configs(), cfg.tma_fwd_configs()
    assert _tiles(portable) < _tiles(tma)
    assert (tma[0].kwargs, tma[0].num_warps, tma[0].num_stages) == (portable[0].kwargs, 8, 3)  # same default
    assert _tiles(tma[-1:]) == _tiles(portable[-1:])  # same fallback
    capped = [c for c in tma if c.maxnreg is not None]
    assert [(*_tiles([c]), c.maxnreg) for c in capped] == [((128, 64, 8, 2), 128)]
    assert capped[0].maxnreg * 32 * capped[0].num_warps * 2 <= 65536
    assert {(128, 64, 8, 2), (128, 64, 4, 2)} <= _tiles(cfg.prune_forward_configs(tma, {"BLOCK_D": 128}))
    # D=256: a 128-row accumulator is 128 registers per thread on 8 warps, the whole cap (ptxas refuses it)
    kept256 = cfg.prune_forward_configs(tma, {"BLOCK_D": 256})
    assert kept256 and all(c.maxnreg is None for c in kept256)


@pytest.mark.parametrize("space", ["fwd_configs", "tma_fwd_configs", "bwd_dkdv_configs", "bwd_dq_configs"])
def test_every_space_keeps_something_within_budget(as_on_h200, space):
    configs = getattr(cfg, space)()
    prune, margin = (cfg.prune_forward_configs, 1.0) if "fwd" in space else (cfg.prune_configs, 0.85)
    for d in (16, 32, 64, 128, 256):
        kept = prune(configs, {"BLOCK_D": d})
        assert kept, (space, d)
        for c in kept:
            bm, bn, s = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages
            fits = 2 * d * (max(bm, bn) + 2 * s * min(bm, bn)) <= margin * H200_SHARED
            assert fits or c is configs[-1], (space, d, c)


def test_without_autotuning_one_config_is_kept(as_on_h200, monkeypatch):
    monkeypatch.setattr(cfg, "AUTOTUNE", False)
    configs = cfg.fwd_configs()
    assert len(configs) == 2  # the default and the fallback: compile one, not six
    assert len(cfg.prune_configs(configs, {"BLOCK_D": 128})) == 1


def test_without_autotuning_the_estimate_keeps_a_margin(as_on_h200, monkeypatch):
    """The one configuration kept must launch: 15% headroom under the estimate (the forward's tuner also
    times half-precision tiles up to 100%)."""
    space = [_config(128, 128, 8, 3), _config(128, 64, 8, 3), _config(32, 32, 4, 2)]  # 224 KiB, 128 KiB, fallback
    def tiles(prune):
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in prune(space, {"BLOCK_D": 128})]

    assert tiles(cfg.prune_forward_configs) == [(128, 64), (128, 128)]  # the borderline tile is timed last
    assert tiles(cfg.prune_configs) == [(128, 64)]  # the backward estimate is short: it keeps the margin
    monkeypatch.setattr(cfg, "AUTOTUNE", False)
    assert tiles(cfg.prune_forward_configs) == [(128, 64)]


def test_float32_inputs_get_smaller_tiles(as_on_h200):
    """fp32 tiles take twice the bytes (and multiply without tensor cores): pruning sees the dtype."""
    import torch

    space = cfg.fwd_configs()
    half = _tiles(cfg.prune_forward_configs(space, {"Q": torch.empty(1, dtype=torch.bfloat16), "BLOCK_D": 128}))
    full = _tiles(cfg.prune_forward_configs(space, {"Q": torch.empty(1, dtype=torch.float32), "BLOCK_D": 128}))
    assert full < half or (full == {(64, 32, 4, 2)} and (64, 32, 4, 2) not in half)
    assert all(4 * 128 * (max(bm, bn) + 2 * s * min(bm, bn)) <= 0.85 * H200_SHARED for bm, bn, w, s in full)

    class Descriptor:  # the TMA kernel's arguments are tensor descriptors: their .base is the tensor
        base = torch.empty(1, dtype=torch.float32)

    assert _tiles(cfg.prune_forward_configs(space, {"q_desc": Descriptor(), "BLOCK_D": 128})) == full
