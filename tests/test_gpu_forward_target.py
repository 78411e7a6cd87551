"""tools/gpu_forward_target.sh's dry run works on a CPU: the plan, the candidates checked against the shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

pytest.importorskip("triton")


def test_the_forward_target_dry_run_writes_its_plan(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "DRY_RUN": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "tools" / "gpu_forward_target.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "forward-target.json").read_text())
    assert report["dry_run"] and report["references"] == ["sdpa_cudnn", "sdpa_cudnn_grad", "sdpa_flash"]
    kinds = {c["kernel"] for c in report["candidates"]}
    assert {"tma", "ws", "gluon-pingpong", "gluon", "gluon-ws"} <= kinds
    assert {(s["seq_len"], s["causal"]) for s in report["shapes"]} == {(4096, False), (4096, True), (16384, False),
                                                                       (16384, True)}
    assert all(s["head_dim"] == 128 for s in report["shapes"])
    pingpong = [c["config"] for c in report["candidates"] if c["kernel"] == "gluon-pingpong"]
    assert [128, 128, 8, 2] in pingpong and [128, 128, 8, 3] in pingpong
    # every candidate handles every timed shape (whole tiles, D=128), or says in words why not
    for name, by_shape in report["unhandled"].items():
        assert all(isinstance(p, list) for p in by_shape.values()), name
    assert not any(report["unhandled"]["tma 128x128/8w/3st"].values())
    assert (tmp_path / "forward-target.log").exists()


def test_ratios_are_reference_over_candidate_per_round():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gft", ROOT / "tools" / "gpu_forward_target.py")
    gft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gft)
    name = gft.CANDIDATES[0][0]
    rows = [{"seq_len": 4096, "causal": False, "round": r, "impl": impl, "ms": ms}
            for r, (a, ref) in enumerate(((1.0, 0.9), (2.0, 1.0), (1.0, 1.1)))
            for impl, ms in ((name, a), ("sdpa_cudnn", ref))]
    (got,) = gft.ratios(rows)
    assert (got["candidate"], got["reference"], got["rounds"]) == (name, "sdpa_cudnn", 3)
    assert got["median"] == pytest.approx(0.9) and got["min"] == pytest.approx(0.5) and got["max"] == pytest.approx(1.1)
