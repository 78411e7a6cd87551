"""The supervising side: grades one submission by sending the instructor's check cells to a sandboxed worker.

``python checker.py JOB.json RESULT.json`` (started by ``tools/grade.py``, one per submission). The
worker (:mod:`worker`) runs the solution's setup cell, the student's exercise cells and then each
check cell beside them, as a notebook kernel would, with the checking tools locked and verified
(:mod:`integrity`). This process never runs student code: it starts and limits the worker, sends it
one check at a time with a fresh nonce, and accepts only a verdict that carries that nonce.

Each check cell has a wall-clock limit. A worker that runs past it, dies, or
prints more than the output limit is killed (with everything it started) and a
fresh one is started for the next check, so one endless loop costs one
exercise, not the notebook.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import secrets
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import codec  # noqa: E402
import sandbox  # noqa: E402

STATUSES = ("passed", "failed", "error", "timeout", "crashed")
OUTPUT_KEEP = 4096  # bytes of the student's printed output kept for the report


class WorkerLost(BaseException):
    """The worker timed out, died or printed too much: the current check ends with ``status``.

    A ``BaseException``, so that a check's ``except Exception`` cannot swallow it."""

    def __init__(self, status: str, message: str, cell=None):
        super().__init__(message)
        self.status, self.message, self.cell = status, message, cell


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
        self.startup_output = b""  # what the exercise cells printed (the student's report shows its start)

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

def run_job(job: dict) -> dict:
    """Run every check cell of ``job``; return the outcome of each (see :func:`main`)."""
    result = {"cells": [], "checks": [], "worker_starts": 0, "output_bytes": 0, "output_head": "",
              "start_seconds": [], "dropped": {}, "tampered": None}
    tmp = tempfile.mkdtemp(prefix="grade-")
    state = {"worker": None, "fatal": None, "restarts_left": job["max_restarts"]}
    dropped: dict = {}  # worker cell index -> WorkerLost: a cell that hung, crashed or flooded the output

    def retire(w: Worker) -> None:
        w.close()
        result["output_bytes"] += w.output_total
        # Only what the exercise cells printed reaches the student's report (checks' output may hold hidden code).
        result["output_head"] = result["output_head"] or bytes(w.startup_output).decode("utf-8", "replace")

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
                reply = w.request({"op": "run", "cells": cells, "hidden": job["hide"], "names": job["names"],
                                   "forbidden": job["forbidden"], "preimport": job["preimport"],
                                   "max_output": job["max_output"],
                                   "strict": not job["sandbox"].startswith("namespaces")},
                                  t0 + job["startup_timeout"], "while running your exercise cells")
                if not isinstance(reply.get("ok"), list) or len(reply["ok"]) != len(cells):
                    raise WorkerLost("error", "the worker sent a malformed reply while running your exercise cells")
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
            w.startup_output = bytes(w.output)
            if not result["cells"]:
                result["cells"] = [{k: v for k, v in dict(c, ok=bool(r.get("ok")), error=r.get("error")).items()
                                    if k != "stub"} for c, r in zip(job["cell_info"], reply["ok"])]
            if not reply["ok"][0].get("ok"):
                raise RuntimeError(f"the solution's setup cell failed in the worker: {reply['ok'][0].get('error')}")
            result["tampered"] = result["tampered"] or reply.get("tampered")
            for i, e in dropped.items():
                result["cells"][i].update(ok=False, error=None)
                result["dropped"][str(i)] = {"status": e.status, "message": e.message}
            result["start_seconds"].append(round(time.monotonic() - t0, 2))
            state["worker"] = w
            return

    try:
        start()
    except WorkerLost as e:
        state["fatal"] = e
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
            nonce = secrets.token_hex(16)
            w = state["worker"]
            reply = w.request({"op": "check", "code": check["code"], "exercise": check["exercise"],
                               "hidden": check["hidden"], "nonce": nonce},
                              time.monotonic() + job["timeout"], f"in check {check['id']}")
            if reply.get("nonce") != nonce or reply.get("status") not in STATUSES:
                raise WorkerLost("error", "something other than the grader wrote on the grader's channel "
                                          f"during check {check['id']} (a forged or garbled verdict)")
            entry.update(status=reply["status"], message=str(reply.get("message", ""))[:2000])
            if reply.get("trace"):
                entry["trace"] = str(reply["trace"])
            if reply["status"] == "failed" and "checking tools" in entry["message"]:
                result["tampered"] = result["tampered"] or entry["message"]
        except BaseException as e:  # noqa: BLE001 - every outcome becomes a row
            if isinstance(e, KeyboardInterrupt):
                raise
            if not isinstance(e, WorkerLost):
                raise
            entry.update(status=e.status, message=e.message)
            if state["worker"] is not None and e is not state["fatal"] and e not in dropped.values():
                retire(state["worker"])  # a check hung or crashed the worker: the next check gets a fresh one
                state["worker"] = None
                if state["restarts_left"] <= 0:
                    state["fatal"] = WorkerLost(e.status, e.message + " (and the grader stopped restarting it)")
                state["restarts_left"] -= 1
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
