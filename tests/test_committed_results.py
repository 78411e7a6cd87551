"""The GPU results committed as data: complete, correct-first, and quoted faithfully.

``attnlib/bench/results/<suite>-<run>.json`` are what ``python -m attnlib.bench`` wrote on a
real GPU; labs 16-18 and chapter 08 read them by name (``load_committed``) and assert what
their text says. The README quotes a few of the same figures: this checks those against the
files, so that a new run cannot leave the README describing an old one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from attnlib.bench.flash import backward_lines, ladder_lines
from attnlib.bench.plot import RESULTS_DIR, load_committed, load_results, load_run_file
from test_stored_results import _run_keys

ROOT = Path(__file__).resolve().parent.parent
RUN = "h200-2026-11-28"
SUITES = {"flash": "flash.py", "decode": "decode.py", "block_sparse": "block_sparse.py"}


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_committed_run_is_a_complete_correct_gpu_run(suite):
    run = load_committed(suite, RUN)
    assert run["suite"] == suite and run["kernel_correct"] is True
    machine = run["machine"]
    assert machine["gpu"] == "NVIDIA H200" and machine["compute_capability"] == "9.0"
    assert machine["date_utc"].startswith("2026-11-28") and machine["torch"] and machine["triton"]
    added_since = {"flash": {"complete", "experimental_kernels", "experimental_in_grid"}}.get(suite, set())  # keys run() writes since that run
    assert _run_keys(SUITES[suite]) - added_since <= set(run), "the file has every key run() writes"
    timed = [r for r in run["rows"] if r.get("ms") is not None]
    assert timed and all(r["ms"] > 0 for r in timed)


def test_flash_run_checked_every_timed_shape_against_sdpa():
    run = load_committed("flash", RUN)
    assert run["forward_kernel"] == "tma" and not run["skipped"]
    assert 0 < run["max_rel_error_vs_sdpa"] < 2e-2
    ours = [r for r in run["rows"] if r["impl"] == "attnlib_flash" and r["mode"] == "fwd"]
    assert len(ours) == 20 and all(r["rel_error_vs_sdpa_cudnn"] < 2e-2 for r in ours)
    lines = ladder_lines(run["ladder"]) + backward_lines(run["backward"])
    assert lines and not [line for line in lines if "WRONG" in line]


def _span(values) -> str:
    values = list(values)
    return f"{min(values):.2f}-{max(values):.2f}x"


def test_readme_quotes_the_committed_run():
    readme = " ".join((ROOT / "README.md").read_text().split())  # line breaks do not matter
    flash = load_committed("flash", RUN)
    d128 = [r for r in flash["ratios"] if r["head_dim"] == 128]
    long_fwd = [r for r in d128 if r["mode"] == "fwd" and r["seq_len"] >= 4096]
    fwd_bwd = [r for r in d128 if r["mode"] == "fwd_bwd"]
    decode = load_committed("decode", RUN)
    mha = [r for r in decode["ratios"] if r["kv_heads"] == 32]
    quoted = {
        "forward vs cuDNN": f"{_span(r['vs_sdpa_cudnn'] for r in long_fwd)} SDPA-cuDNN",
        "forward vs flash": f"{_span(r['vs_sdpa_flash'] for r in long_fwd)} SDPA-flash at N >= 4k",
        "fwd+bwd vs flash": f"forward+backward {_span(r['vs_sdpa_flash'] for r in fwd_bwd)} SDPA-flash",
        "fwd+bwd vs cuDNN": f"{_span(r['vs_sdpa_cudnn'] for r in fwd_bwd)} SDPA-cuDNN at every N",
        "decode vs cuDNN": f"{_span(r['vs_sdpa_cudnn'] for r in mha)} SDPA-cuDNN",
        "decode vs flash": f"{_span(r['vs_sdpa_flash'] for r in mha)} SDPA-flash at 8k-64k keys",
    }
    for what, text in quoted.items():
        assert text in readme, f"README should say {text!r} ({what}, from {RUN})"
    assert f"{RUN}.json" in readme.replace("{flash,decode,block_sparse}-", "")


def test_committed_results_ignore_the_override_and_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_BENCH_RESULTS", str(tmp_path))  # empty: the labs' "latest" sees nothing
    assert load_results("flash") == []
    assert load_committed("flash", RUN)["file"] == f"flash-{RUN}.json"
    with pytest.raises(FileNotFoundError, match="flash-no-such-run.json"):
        load_committed("flash", "no-such-run")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_run_file(RUN, "nothing.json")


def test_run_files_the_book_reads_ship_with_the_package():
    """The chapter and labs read runs/<run>/*.json on Colab too: pyproject's package data must include them."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"results/runs/*/*.json"' in pyproject
    for name in ("ceilings.json", "decode_probe.json"):
        data = load_run_file(RUN, name)
        assert data, name
    used = set()
    for path in [*ROOT.glob("solutions/*.md"), *ROOT.glob("chapters/*.md")]:
        used |= set(re.findall(r'load_run_file\(RUN, "([\w.-]+)"\)|load_run_file\("[\w-]+", "([\w.-]+)"\)',
                               path.read_text()))
    for names in used:
        for name in filter(None, names):
            assert (RESULTS_DIR / "runs" / RUN / name).is_file(), name
    json.loads((RESULTS_DIR / "runs" / RUN / "ceilings.json").read_text())
