"""The trusted side: grades one submission by running the instructor's check cells.

``python checker.py JOB.json RESULT.json`` (started by ``tools/grade.py``, one per
submission). The checker executes only instructor code: the solution's setup
cell and its check cells, each check cell in a fresh namespace. The names that
the exercise cells define are stand-ins (:class:`Remote`) whose calls go to the
sandboxed worker (:mod:`worker`) that holds the student's code; arguments and
results cross as plain data (:mod:`codec`). So the student's code never shares
an interpreter with ``torch.testing``, ``numpy.testing`` or ``attnlib.checks``
as the checks use them, and a monkeypatch in a submission patches only the
worker's copies.

Each check cell has a wall-clock limit. A worker that runs past it, dies, or
prints more than the output limit is killed (with everything it started) and a
fresh one is started for the next check, so one endless loop costs one
exercise, not the notebook.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import codec  # noqa: E402
import sandbox  # noqa: E402
from worker import _NoIPython, to_python  # noqa: E402

OUTPUT_KEEP = 4096  # bytes of the student's printed output kept for the report


class WorkerLost(BaseException):
    """The worker timed out, died or printed too much: the current check ends with ``status``.

    A ``BaseException``, so that a check's ``except Exception`` cannot swallow it."""

    def __init__(self, status: str, message: str, cell=None):
        super().__init__(message)
        self.status, self.message, self.cell = status, message, cell


class StudentRaised:
    """Mixin of every exception re-raised on behalf of student code."""

    where = None


_EXC_CACHE: dict = {}


def student_exception(info: dict) -> BaseException:
    """Rebuild the student's exception as an instance of its nearest builtin class (plus :class:`StudentRaised`)."""
    import builtins

    base = Exception
    for name in info.get("bases", []):
        cls = getattr(builtins, str(name), None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            base = cls
            break
    name = str(info.get("type", "Exception"))[:80]
    key = (name, base)
    if key not in _EXC_CACHE:
        _EXC_CACHE[key] = type(name, (base, StudentRaised), {"__module__": "submission"})
    exc = _EXC_CACHE[key](str(info.get("message", "")))
    exc.where = info.get("where")
    return exc


class Worker:
    """One sandboxed worker process and its channel."""

    def __init__(self, job: dict, tmp: str):
        self.job, self.tmp = job, tmp
        self.output = bytearray()
        self.output_total = 0
        self.limit_hit = False
        mode = job["sandbox"]
        local = tempfile.mkdtemp(prefix="work-", dir=tmp)
        workdir = sandbox.workdir_for(mode, local)
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        cmd = sandbox.wrap(mode, [sys.executable, "-I", job["worker"], str(req_r), str(resp_w), workdir],
                           tmp_mb=job["tmp_mb"], hide=job["hide"])
        self.cell = None  # the cell the worker is running while it starts up
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(req_r, resp_w),
            cwd=local, env=sandbox.clean_env(workdir), start_new_session=True,
            preexec_fn=sandbox.limit(job["memory"], job["cpu_seconds"], job["file_bytes"],
                                     256 if mode == "namespaces+nobody" else None))
        for fd in (req_r, resp_w, out_w):
            os.close(fd)
        self.drain = threading.Thread(target=self._drain, args=(out_r,), daemon=True)
        self.drain.start()
        self.handles: dict = {}

    def _drain(self, fd: int) -> None:
        """Keep the first bytes of the worker's output, count the rest, kill it past the limit."""
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    return
                self.output_total += len(chunk)
                if len(self.output) < OUTPUT_KEEP:
                    self.output += chunk[: OUTPUT_KEEP - len(self.output)]
                if self.output_total > self.job["max_output"] and not self.limit_hit:
                    self.limit_hit = True
                    self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        self.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self.req_w, self.resp_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.drain.join(timeout=5)

    def _lost(self, what: str) -> WorkerLost:
        """Why the worker went away, as a status and a message."""
        self.kill()
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.drain.join(timeout=5)
        if self.limit_hit:
            return WorkerLost("error", f"your code printed more than {self.job['max_output']} bytes "
                                       f"(the output limit) {what}")
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code in (signal.SIGSEGV, signal.SIGABRT) else ""
            return WorkerLost("crashed", f"the Python process was killed by {name}{hint} {what}")
        if code == 137:  # the sandbox's shell reports a killed worker as 128 + 9
            return WorkerLost("crashed", f"the Python process was killed by SIGKILL {what}")
        if code is not None and code > 128:
            return WorkerLost("crashed", f"the Python process was killed by signal {code - 128} {what}")
        return WorkerLost("crashed", f"the Python process exited (code {code}) {what}")

    def request(self, message: dict, deadline: float, what: str) -> dict:
        data = json.dumps(message, allow_nan=False).encode()
        payload = len(data).to_bytes(8, "big") + data
        view = memoryview(payload)
        try:
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                _, ready, _ = select.select([], [self.req_w], [], min(left, 1.0))
                if ready:
                    view = view[os.write(self.req_w, view[: 1 << 16]):]
                elif self.proc.poll() is not None:
                    raise self._lost(what)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                ready, _, _ = select.select([self.resp_r], [], [], min(left, 1.0))
                if not ready:
                    continue
                reply = codec.read_message(self.resp_r)
                if "progress" in reply and len(reply) == 1:
                    self.cell = int(reply["progress"])
                    continue
                return reply
        except TimeoutError:
            self.kill()
            raise WorkerLost("timeout", f"your code ran past the {self.job['timeout']:g} s limit {what}") from None
        except (EOFError, BrokenPipeError, OSError):
            raise self._lost(what) from None
        except (codec.CodecError, ValueError) as e:
            self.kill()
            raise WorkerLost("error", f"your code returned something the grader cannot read ({e}) {what}") from None

    def value(self, response: dict):
        if "exc" in response:
            raise student_exception(response["exc"])
        return codec.decode(response["ok"], self.remote)

    def remote(self, h: codec.Handle):
        if h.owner != "worker":
            raise codec.CodecError("the worker sent back a handle it does not own")
        return Remote(self, h)


class Remote:
    """Stand-in for an object that lives in the worker (a student's function, class or object)."""

    __slots__ = ("_worker", "_handle")

    def __init__(self, worker: Worker, handle: codec.Handle):
        object.__setattr__(self, "_worker", worker)
        object.__setattr__(self, "_handle", handle)

    def __call__(self, *args, **kwargs):
        w = object.__getattribute__(self, "_worker")
        h = object.__getattribute__(self, "_handle")
        leaves: list = []  # the checker's tensors that require grad, in the order they are sent

        def on_encode(t):
            if t.requires_grad:
                leaves.append(t)
                return {"grad_input": len(leaves) - 1}
            return None

        with codec.tensor_hooks(encode=on_encode):
            message = {"op": "call", "handle": h.id, "args": codec.encode(args, _no_local_objects),
                       "kwargs": codec.encode(kwargs, _no_local_objects)}
        reply = w.request(message, Deadline.at, f"while calling your {h.type}")
        marked: list = []

        def on_decode(t, fields):
            if isinstance(fields.get("grad_output"), int):
                marked.append(t)
            return t

        with codec.tensor_hooks(decode=on_decode):
            value = w.value(reply)
        if marked and isinstance(reply.get("graph"), int):
            import torch

            if torch.is_grad_enabled():
                value = _link_gradients(value, marked, leaves, _Graph(w, reply["graph"], len(leaves)))
        return value

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        w = object.__getattribute__(self, "_worker")
        h = object.__getattribute__(self, "_handle")
        return w.value(w.request({"op": "getattr", "handle": h.id, "name": name}, Deadline.at,
                                 f"while reading .{name} of your {h.type}"))

    def __repr__(self):
        return f"<your {object.__getattribute__(self, '_handle').type}>"


class _Graph:
    """The worker-side autograd graph of one call: ``backward`` sends output gradients over and
    brings the input gradients back."""

    def __init__(self, worker: Worker, graph: int, n_inputs: int):
        self.worker, self.graph, self.n_inputs = worker, graph, n_inputs

    def backward(self, grads) -> list:
        message = {"op": "backward", "graph": self.graph, "grads": codec.encode(list(grads), _no_local_objects)}
        got = self.worker.value(self.worker.request(message, Deadline.at, "while back-propagating through your code"))
        if not isinstance(got, list) or len(got) != self.n_inputs:
            raise RuntimeError("the worker returned the wrong number of gradients")
        return got


def _link_gradients(value, marked: list, leaves: list, graph: _Graph):
    """Replace the tensors in ``value`` that carry a graph in the worker by outputs of a
    :class:`torch.autograd.Function` whose backward asks the worker, so ``.backward()``,
    ``torch.autograd.grad`` and ``gradcheck`` in a check reach the student's code."""
    import torch

    class RemoteGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            return tuple(m.clone() for m in marked)

        @staticmethod
        def backward(ctx, *grads):
            got = graph.backward(grads)
            return tuple(got) if leaves else (None,)

    inputs = leaves or [torch.zeros((), requires_grad=True)]  # the student's own parameters may need grads
    linked = RemoteGrad.apply(*inputs)
    swap = {id(m): n for m, n in zip(marked, linked)}

    def rebuild(v):
        if isinstance(v, torch.Tensor):
            return swap.get(id(v), v)
        if isinstance(v, list):
            return [rebuild(x) for x in v]
        if isinstance(v, tuple):
            return tuple(rebuild(x) for x in v)
        if isinstance(v, dict):
            return {k: rebuild(x) for k, x in v.items()}
        return v

    return rebuild(value)


def _no_local_objects(obj):
    if isinstance(obj, Remote):
        return object.__getattribute__(obj, "_handle")
    raise TypeError(f"the grader cannot pass a {type(obj).__name__} to your code; only data crosses")


class Deadline:
    """When the check being run must end (``time.monotonic()`` seconds)."""

    at = 0.0


def short(message: str, n: int = 1500) -> str:
    message = message.strip()
    return message if len(message) <= n else message[:n] + " [...]"


def classify(exc: BaseException, names: set) -> tuple[str, str]:
    """(status, message) for an exception that ended a check cell."""
    if isinstance(exc, WorkerLost):
        return exc.status, exc.message
    where = f" ({exc.where})" if isinstance(exc, StudentRaised) and exc.where else ""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, NotImplementedError):
        return "failed", f"not done yet: {short(str(exc)) or 'NotImplementedError'}"
    if isinstance(exc, AssertionError) and not isinstance(exc, StudentRaised):
        return "failed", short(str(exc)) or "an assertion failed"
    if isinstance(exc, NameError) and not isinstance(exc, StudentRaised) and getattr(exc, "name", None) in names:
        return "failed", f"your notebook does not define `{exc.name}`"
    if isinstance(exc, StudentRaised):
        return "error", short(f"your code raised {text}{where}")
    return "error", short(f"the check could not run your code: {text}")


def run_job(job: dict) -> dict:
    """Run every check cell of ``job``; return the outcome of each (see :func:`main`)."""
    result = {"cells": [], "checks": [], "worker_starts": 0, "output_bytes": 0, "output_head": "",
              "start_seconds": [], "dropped": {}}
    names = set(job["names"])
    tmp = tempfile.mkdtemp(prefix="grade-")

    # The trusted namespace: the solution's setup cell, run here, never in the worker's reach.
    # (It runs in a thread while the worker starts: both spend their time importing torch.)
    base = {"__name__": "__main__", "get_ipython": _NoIPython}
    setup_failed = []

    def trusted_setup():
        try:
            for code in job["trusted_setup"]:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(to_python(code), "<setup>", "exec"), base)  # noqa: S102 - instructor code
        except BaseException as e:  # noqa: BLE001 - re-raised below: the instructor's setup must work
            setup_failed.append(e)

    setup_thread = threading.Thread(target=trusted_setup, daemon=True)
    setup_thread.start()

    state = {"worker": None, "values": {}, "fatal": None, "restarts_left": job["max_restarts"]}
    dropped: dict = {}  # worker cell index -> WorkerLost: a cell that hung, crashed or flooded the output

    def retire(w: Worker) -> None:
        w.close()
        result["output_bytes"] += w.output_total
        result["output_head"] = result["output_head"] or w.output.decode("utf-8", "replace")

    def start() -> None:
        """Start a worker and run the cells; a cell that kills the start-up is replaced by its unfinished
        lab version and the start-up is retried, so a dead or endless cell costs only its own exercise."""
        while True:
            cells = [dict(c) for c in job["worker_cells"]]
            for i in dropped:
                cells[i]["code"] = job["cell_info"][i].get("stub") or "pass"
            result["worker_starts"] += 1
            t0 = time.monotonic()
            w = Worker(job, tmp)
            try:
                reply = w.request({"op": "run", "cells": cells, "hidden": job["hide"],
                                   "strict": not job["sandbox"].startswith("namespaces")},
                                  t0 + job["startup_timeout"], "while running your exercise cells")
                if not isinstance(reply.get("ok"), list) or len(reply["ok"]) != len(cells):
                    raise WorkerLost("error", "the worker sent a malformed reply while running your exercise cells")
                values = {}
                for name in sorted(names):
                    Deadline.at = t0 + job["startup_timeout"]
                    try:
                        values[name] = w.value(w.request({"op": "get", "name": name}, Deadline.at,
                                                         f"while looking up `{name}`"))
                    except WorkerLost:
                        raise
                    except Exception:  # noqa: BLE001 - missing: the check reports "does not define"
                        pass
            except WorkerLost as e:
                e.cell = w.cell
                retire(w)
                info = job["cell_info"][e.cell] if e.cell is not None and e.cell < len(cells) else None
                if info and info["kind"] != "setup" and e.cell not in dropped and state["restarts_left"] > 0:
                    state["restarts_left"] -= 1
                    label = f"exercise cell {info['exercise']}" if info["exercise"] else f"cell {info['id']}"
                    dropped[e.cell] = WorkerLost(e.status, e.message.replace(
                        "while running your exercise cells", f"while running your {label}"), e.cell)
                    continue
                raise
            if not result["cells"]:
                result["cells"] = [{k: v for k, v in dict(c, ok=bool(r.get("ok")), error=r.get("error")).items()
                                    if k != "stub"} for c, r in zip(job["cell_info"], reply["ok"])]
            for i, e in dropped.items():
                result["cells"][i].update(ok=False, error=None)
                result["dropped"][str(i)] = {"status": e.status, "message": e.message}
            result["start_seconds"].append(round(time.monotonic() - t0, 2))
            state["worker"], state["values"] = w, values
            return

    try:
        start()
    except WorkerLost as e:
        state["fatal"] = e
    setup_thread.join()
    if setup_failed:
        raise RuntimeError("the solution's setup cell failed in the checker") from setup_failed[0]
    dropped_exercises = {job["cell_info"][i]["exercise"]: e for i, e in dropped.items()}
    for check in job["checks"]:
        entry = {k: check[k] for k in ("id", "exercise", "points", "hidden")}
        t0 = time.monotonic()
        try:
            if state["fatal"] is not None:
                raise state["fatal"]
            if state["worker"] is None:
                try:
                    start()
                except WorkerLost as e:
                    state["fatal"] = e
                    raise
                dropped_exercises = {job["cell_info"][i]["exercise"]: e for i, e in dropped.items()}
            if check["exercise"] in dropped_exercises:
                raise dropped_exercises[check["exercise"]]
            ns = dict(base)
            ns.update(state["values"])
            Deadline.at = time.monotonic() + job["timeout"]
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(to_python(check["code"]), f"<check {check['exercise']}>", "exec"), ns)  # noqa: S102
            lines = buffer.getvalue().strip().splitlines()
            entry.update(status="passed", message=short(lines[-1]) if lines else "")
        except BaseException as e:  # noqa: BLE001 - every outcome becomes a row
            if isinstance(e, KeyboardInterrupt):
                raise
            status, message = classify(e, names)
            entry.update(status=status, message=message)
            if isinstance(e, WorkerLost) and state["worker"] is not None and e is not state["fatal"] and \
                    e not in dropped.values():
                retire(state["worker"])  # a check hung or crashed the worker: the next check gets a fresh one
                state["worker"] = None
                if state["restarts_left"] <= 0:
                    state["fatal"] = WorkerLost(e.status, e.message + " (and the grader stopped restarting it)")
                state["restarts_left"] -= 1
            elif not isinstance(e, (AssertionError, NotImplementedError, NameError, WorkerLost, StudentRaised)):
                entry["trace"] = traceback.format_exc(limit=-3)
        entry["seconds"] = round(time.monotonic() - t0, 2)
        result["checks"].append(entry)
    if state["worker"] is not None:
        retire(state["worker"])
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv) -> int:
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    result = run_job(job)
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
