"""How a worker process is started: namespaces where the machine allows them, limits always.

Three levels, chosen once per grading run by :func:`probe`:

``namespaces+nobody``
    (the grader runs as root) ``unshare --net --mount --pid --fork``: no network
    interface but loopback (brought up, so that ``torch.distributed``'s gloo ranks of one submission can
    talk to each other on 127.0.0.1; nothing else is reachable), a private PID space (the worker cannot see or signal
    the grader or other workers), the whole file system remounted read-only with
    a fresh tmpfs on ``/tmp`` and ``/dev/shm``, and the worker drops to user
    ``nobody`` with ``setpriv --no-new-privs``.
``namespaces``
    (unprivileged user namespaces allowed) the same with ``unshare --map-root-user``,
    still the grader's own uid outside, but a read-only file system and no network.
``rlimits+audit``
    neither is available: a plain child process in a fresh temporary directory,
    and the worker's audit hook refuses sockets, subprocesses, signals to other
    processes and writes outside its directory (ctypes can bypass it).

In every level the worker gets resource limits (:func:`limit`): address space
(``RLIMIT_AS``), CPU seconds, file size, no core dumps; its own session, so
that the checker can kill it and everything it started; and a scrubbed
environment.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_SETUP = r"""
set -e
ip link set lo up 2>/dev/null || true
mount --make-rprivate /
{hide}
mount -o remount,bind,ro /
mount -t tmpfs -o size={tmp_mb}m,mode=1777 tmpfs /tmp
mount -t tmpfs -o size=16m,mode=1777 tmpfs /dev/shm 2>/dev/null || true
mount -t proc proc /proc 2>/dev/null || true
mkdir -p /tmp/work
{chown}
cd /tmp/work
"$@"
"""


def _script(nobody: bool, tmp_mb: int, hide) -> str:
    chown = "chown 65534:65534 /tmp/work" if nobody else ""
    lines = []
    for path in hide:
        q = shlex.quote(str(path))
        # An empty read-only tmpfs over a folder (or /dev/null over a file) hides it from the worker.
        lines.append(f"if [ -d {q} ]; then mount -t tmpfs -o ro,size=4k,mode=0 tmpfs {q}; "
                     f"elif [ -e {q} ]; then mount --bind /dev/null {q}; fi")
    return _SETUP.format(tmp_mb=tmp_mb, chown=chown, hide="\n".join(lines))


def wrap(mode: str, command: list[str], tmp_mb: int = 512, hide=()) -> list[str]:
    """The argv that runs ``command`` (whose cwd will be ``/tmp/work``) at sandbox level ``mode``;
    the paths in ``hide`` (solutions, submissions, results, .git) are invisible to it."""
    if mode == "namespaces+nobody":
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"]
        return ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child",
                "sh", "-c", _script(True, tmp_mb, hide), "sandbox", *drop, *command]
    if mode == "namespaces":
        return ["unshare", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child",
                "sh", "-c", _script(False, tmp_mb, hide), "sandbox", *command]
    return list(command)


def workdir_for(mode: str, local_tmp: str) -> str:
    """The worker's working directory as the worker sees it."""
    return "/tmp/work" if mode.startswith("namespaces") else local_tmp


def limit(memory_bytes: int, cpu_seconds: int, file_bytes: int, processes: int | None = None):
    """A ``preexec_fn`` setting the worker's resource limits (inherited by everything it starts).
    ``processes`` caps the tasks of the worker's user (only meaningful for ``nobody``: a fork bomb stops there)."""

    def apply():
        if processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def clean_env(workdir: str) -> dict:
    """The worker's environment: no secrets, one thread, caches inside its own directory."""
    keep = ("PATH", "LANG", "LC_ALL", "ATTN_FAST", "ATTN_CHECK_SEED", "TRITON_INTERPRET")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"HOME": workdir, "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{workdir}/.mpl",
                "TRITON_CACHE_DIR": f"{workdir}/.triton", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "TMPDIR": workdir})
    return env


_PROBE = (
    "import os, socket\n"
    "s = socket.socket(); s.settimeout(1)\n"
    "net = s.connect_ex(('192.0.2.1', 80)) in (0, 115)\n"  # TEST-NET: 0/EINPROGRESS means a route existed
    "try:\n    open(%r, 'a').close(); ro = False\nexcept OSError:\n    ro = True\n"
    "hidden = not os.path.exists(%r) or not os.listdir(%r)\n"
    "print('ok' if (not net and ro and hidden) else 'weak')\n"
)


def probe(python: str = sys.executable) -> tuple[str, str]:
    """Pick the strongest sandbox level this machine allows; return ``(mode, explanation)``."""
    if shutil.which("unshare") is None:
        return "rlimits+audit", "`unshare` is not installed"
    target = str(HERE / "sandbox.py")

    secret = tempfile.mkdtemp(prefix="grade-probe-")
    Path(secret, "answer.txt").write_text("hidden")
    code = _PROBE % (target, secret, secret)
    tried = []
    candidates = ["namespaces+nobody", "namespaces"] if os.geteuid() == 0 else ["namespaces"]
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        candidates = ["namespaces"]
    for mode in candidates:
        try:
            out = subprocess.run(wrap(mode, [python, "-I", "-c", code], hide=[secret]), capture_output=True,
                                 text=True, timeout=60, env=clean_env("/tmp/work"))
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"{mode}: {e}")
            continue
        if out.returncode == 0 and out.stdout.strip() == "ok":
            shutil.rmtree(secret, ignore_errors=True)
            return mode, "network namespace without interfaces, read-only file system, private /tmp and PIDs" + (
                ", user nobody" if mode.endswith("nobody") else ", user namespace (same uid outside)")
        tried.append(f"{mode}: exit {out.returncode} {(out.stderr or out.stdout).strip()[-200:]}")
    shutil.rmtree(secret, ignore_errors=True)
    return "rlimits+audit", "namespaces refused (" + "; ".join(tried) + ")"
