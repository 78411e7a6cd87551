"""The grader's guards for checks that run beside the student's code (tools/grading/integrity.py).

Each case runs in a fresh interpreter: freezing installs an audit hook for the life of the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tools' / 'grading')!r})
import integrity, torch, torch.testing, attnlib.checks, attnlib.core
integrity.forbid({{"attnlib.core.masked_softmax": ["1.3"]}})
integrity.freeze()
integrity.verify()
"""

CASES = {  # name -> (code run after freezing, what stdout must contain)
    "module function replaced": ("torch.testing.assert_close = lambda *a, **k: None", "torch.testing.assert_close was replaced"),
    "class method replaced": ("attnlib.checks.Check.close = lambda *a, **k: None", "Check.close was replaced"),
    "tolerance table loosened": ("torch.testing._comparison._DTYPE_PRECISIONS[torch.float32] = (1.0, 1.0)",
                                 "_DTYPE_PRECISIONS were changed"),
    "attnlib function deleted": ("del attnlib.checks.default_tolerance", "default_tolerance was deleted"),
}


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("name", CASES)
def test_a_changed_checking_tool_is_caught(name):
    change, expected = CASES[name]
    out = run(change + "\ntry:\n    integrity.verify()\nexcept integrity.Tampered as e:\n    print('TAMPERED', e)\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TAMPERED" in out.stdout and expected in out.stdout, out.stdout


def test_an_unchanged_process_verifies_and_a_check_made_before_a_patch_keeps_its_methods():
    out = run("""
        check = attnlib.checks.Check("0.0")
        integrity.verify()
        attnlib.checks.Check.close = lambda *a, **k: None  # after the check was created
        try:
            check.close(torch.ones(2), torch.zeros(2))
        except integrity.Tampered as e:
            print("TAMPERED", e)
        """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TAMPERED" in out.stdout


def test_code_swaps_and_gc_walks_are_refused():
    out = run("""
        for attempt in ("attnlib.checks.default_tolerance.__code__ = (lambda d: (1, 1)).__code__",
                        "import gc; gc.get_objects()", "import gc; gc.get_referents(attnlib.checks._TOLERANCE)"):
            try:
                exec(attempt)
                print("ALLOWED", attempt)
            except PermissionError:
                print("REFUSED")
        """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("REFUSED") == 3, out.stdout


def test_a_forbidden_reference_raises_only_from_its_exercise():
    out = run("""
        x = torch.randn(2, 3)
        ok = attnlib.core.masked_softmax(x)                      # the check itself may use the reference
        ok2 = attnlib.core.scaled_dot_product_attention(x, x, x)  # and attnlib's own code calls it freely
        ns = {}
        exec(compile("import attnlib.core\\ndef mine(s):\\n    return attnlib.core.masked_softmax(s)\\n",
                     "<exercise 1.3>", "exec"), ns)
        exec(compile("def other(s):\\n    return attnlib.core.masked_softmax(s)\\n", "<exercise 1.4>", "exec"), ns)
        ns["other"](x)                                           # exercise 1.4 may use it
        try:
            ns["mine"](x)
            print("ALLOWED")
        except integrity.ForbiddenReference as e:
            print("FORBIDDEN", e)
        print("HITS", len(integrity.forbidden_hits()))
        """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "FORBIDDEN Exercise 1.3: your code calls attnlib.core.masked_softmax" in out.stdout, out.stdout
    assert "HITS 1" in out.stdout
