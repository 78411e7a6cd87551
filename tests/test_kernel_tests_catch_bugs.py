"""The kernel tests must fail on a deliberately broken kernel (the Part III issues' "done when").

Each mutation below breaks one line of a kernel the way a slip would: a causal mask off by one, a
running sum not rescaled, a gradient without its row term or its scale, a loop bound one key too far.
The mutated copy of attnlib runs the named tests in a child process (Triton's interpreter, as on a
CPU in CI), and they must fail. (``tests/test_kernels_*.py`` show the unbroken kernels pass them.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT

pytest.importorskip("triton")

MUTATIONS = [  # (module under attnlib/kernels, line as written, broken line, test file, -k expression)
    ("_flash_fwd.py", "allowed & (cols[None, :] <= offs_m[:, None] + DIAG_OFFSET)",
     "allowed & (cols[None, :] < offs_m[:, None] + DIAG_OFFSET)", "test_kernels_flash.py", "float32 and causal"),
    ("_flash_fwd.py", "acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None]", "acc = tl.dot(p.to(v.dtype), v, acc",
     "test_kernels_flash.py", "matches_reference_float32"),
    ("_flash_bwd.py", "ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t * dp_t",
     "test_kernels_flash.py", "matches_reference_float32"),
    ("_flash_bwd.py", "dq = dq * sm_scale", "dq = dq", "test_kernels_flash.py", "matches_reference_float32"),
    ("experimental/fwd_ws.py", "LK - LQ, CAUSAL, CAUSAL", "0, CAUSAL, CAUSAL",  # causal diagonal aligned top-left
     "test_kernels_flash_ws.py", "causal_matches"),
    ("decode.py", "col_ok = cols < hi", "col_ok = cols <= hi", "test_kernels_decode.py", "ragged"),
    ("block_sparse.py", "keep = keep & (cols[None, :] <= pos[:, None])", "keep = keep & (cols[None, :] < pos[:, None])",
     "test_kernels_block_sparse.py", "causal"),
    # tiles the kernel computes without a mask: the diagonal called full, then a window's far edge ignored
    ("block_sparse.py", "full = full & (k_last <= q_first)", "full = full & (k_first <= q_first)",
     "test_kernels_block_sparse.py", "causal and not full_tiles"),
    ("block_sparse.py", "full = full & (q_last - k_first < window)", "full = full & (q_first - k_first < window)",
     "test_kernels_block_sparse.py", "window and not full_tiles"),
    # issue 32: an int32 batch offset restored (wraps at 2**31 elements), a fallback that swallows any error
    ("_flash_fwd.py", "off_b = (off_bh // H).to(tl.int64)", "off_b = off_bh // H", "test_kernels_addressing.py",
     "64_bit"),
    ("decode.py", "b = (pid_bh // Hkv).to(tl.int64)", "b = pid_bh // Hkv", "test_kernels_addressing.py", "64_bit"),
    ("flash.py", 'if kernel == "tma" or not _kernel_unavailable(e):', 'if kernel == "tma":',
     "test_kernels_flash_fallbacks.py", "surface"),
    ("flash.py", 'return type(e) is RuntimeError and "PassManager::run failed" in str(e)',
     "return isinstance(e, RuntimeError)", "test_kernels_flash_fallbacks.py", "surface"),  # any RuntimeError
    # the folded grid: the batch/head index taken from the wrong quotient
    ("_flash_fwd.py", "return start_m, pid // num_m", "return start_m, pid % num_m", "test_kernels_addressing.py",
     "folded_grid"),
]


def _run_on_a_copy(tmp_path, tests, select, module=None, line="", broken=""):
    """Copy attnlib to tmp_path (with ``line`` of ``module`` replaced by ``broken``), run ``tests -k select``
    on the copy in a child process, return it (returncode 0: passed, 1: some test failed)."""
    copy = tmp_path / "attnlib"
    shutil.copytree(ROOT / "attnlib", copy, ignore=shutil.ignore_patterns("__pycache__", "results"))
    if module is not None:
        source = (copy / "kernels" / module).read_text()
        assert source.count(line) == 1, f"mutation target not found once in {module}: {line}"
        (copy / "kernels" / module).write_text(source.replace(line, broken))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    where = subprocess.run([sys.executable, "-c", "import attnlib; print(attnlib.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.startswith(str(copy)), f"the child must import the copy, got {where.stdout!r}"
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
                           str(ROOT / "tests" / tests), "-k", select, "-m", "not slow"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_unbroken_copy_passes(tmp_path):
    """The control: the same child process on an unchanged copy passes (so a failure below is the mutation's)."""
    child = _run_on_a_copy(tmp_path, "test_kernels_flash.py", "matches_reference_float32")
    assert child.returncode == 0, (child.stdout + child.stderr)[-1500:]


@pytest.mark.slow
@pytest.mark.parametrize("module, line, broken, tests, select", MUTATIONS,
                         ids=[f"{m[0]}:{m[2][:40]}" for m in MUTATIONS])
def test_a_broken_kernel_fails_its_tests(tmp_path, module, line, broken, tests, select):
    child = _run_on_a_copy(tmp_path, tests, select, module, line, broken)
    tail = (child.stdout + child.stderr)[-1500:]
    assert child.returncode == 1 and " failed" in child.stdout, f"the tests did not fail:\n{tail}"
