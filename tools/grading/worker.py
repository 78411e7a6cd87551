"""The sandboxed side: runs one student's exercise cells, then the instructor's check cells beside them.

Started by :mod:`checker` inside the sandbox (see :mod:`sandbox`). It receives cell code on a
private channel and executes, in one module registered as ``__main__`` (as a notebook kernel does):
the solution's setup cell, the solution's definition-only cells and the student's exercise cells
(each compiled as ``<exercise N.M>``). Then, for each ``check`` request, it runs one check cell in a
fresh module holding those names, so a check means exactly what it means in the notebook: Triton
kernels launched with a grid into the check's buffers, callables and modules passed to the student's
code, saved-tensor inspection, ``torch.compile``, autograd, subprocesses.

The checking tools are kept honest by :mod:`integrity` (frozen after the setup cell, verified at every
assertion and around every check) and the references an exercise must not call are guarded there too.
Each verdict goes back with the nonce of its request.

Usage (by the checker only): ``python -I worker.py REQUEST_FD RESPONSE_FD WORKDIR``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import traceback
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True

import codec  # noqa: E402
import integrity  # noqa: E402

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MUTATING = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
             "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.move", "os.chdir"}
_FORBIDDEN = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
              "os.setuid", "sys.addaudithook"}
# Refused only where no namespace contains them (Triton on a GPU runs its compilers as subprocesses).
_PROCESSES = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
              "pty.spawn", "os.startfile"}


def install_guard(workdir: str, hidden=(), strict: bool = True) -> None:
    """Defence in depth (and the only guard where namespaces are unavailable):
    an audit hook - which Python code cannot remove - that refuses network
    access, new processes, signals to other processes, file writes outside
    ``workdir`` and reading the ``hidden`` folders (solutions, submissions,
    results); ``strict`` (no namespaces) also refuses new processes. Code that
    calls the C library through ``ctypes`` can bypass it; the namespace sandbox
    cannot be bypassed that way."""
    root = os.path.realpath(workdir)
    me = os.getpid()
    hidden = [os.path.realpath(h) for h in hidden]
    forbidden = _FORBIDDEN | (_PROCESSES if strict else set())

    def secret(path) -> bool:
        if isinstance(path, int):
            return False
        real = os.path.realpath(os.path.join(root, os.fsdecode(path)))
        return any(real == h or real.startswith(h + os.sep) for h in hidden)

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        real = os.path.realpath(os.path.join(root, str(path)))
        return real == "/dev/null" or real == root or real.startswith(root + os.sep)

    def hook(event, args):
        if event in forbidden:
            raise PermissionError(f"the grader does not allow {event} in a submission")
        if event == "os.kill" and args and args[0] not in (me, 0):
            raise PermissionError("the grader does not allow signalling other processes")
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes and not inside(path):
                raise PermissionError(f"the grader does not allow writing {path!r}")
            if secret(path):
                raise PermissionError(f"the grader does not allow reading {path!r}")
        elif event in ("os.listdir", "os.scandir") and args and secret(args[0] if args[0] is not None else "."):
            raise PermissionError(f"the grader does not allow listing {args[0]!r}")
        elif event in _MUTATING:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
                    raise PermissionError(f"the grader does not allow {event} on {path!r}")

    sys.addaudithook(hook)


class _NoIPython:
    """``get_ipython()`` for cells with magics: the grader skips them."""

    def __getattr__(self, name):
        def skip(*args, **kwargs):
            print(f"(the grader skipped IPython {name}{args[:1]})")
        return skip


def to_python(source: str) -> str:
    """Turn IPython syntax (``%magic``, ``!cmd``) into plain Python calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return source
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - let compile() report the syntax error
        return source


def describe(exc: BaseException, label: str | None = None) -> dict:
    """Plain-data description of an exception raised by student code."""
    bases = [c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins"]
    where = None
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if f.filename.startswith("<")]
    if frames:
        where = f"{frames[-1].filename.strip('<>')}, line {frames[-1].lineno}"
    elif isinstance(exc, SyntaxError) and exc.lineno:
        where = f"{(exc.filename or label or '').strip('<>')}, line {exc.lineno}"
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001
        message = "<unprintable message>"
    return {"type": type(exc).__name__, "bases": bases or ["Exception"], "message": message[:4000], "where": where}


OUTPUT_MESSAGE = 1500  # characters of a check's message kept


def short(message: str, n: int = OUTPUT_MESSAGE) -> str:
    message = message.strip()
    return message if len(message) <= n else message[:n] + " [...]"


def _last_cell_frame(exc: BaseException):
    """The innermost traceback entry that belongs to a notebook cell (``<exercise 1.3>``, ``<check 1.3>``)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<")]
    return frames[-1] if frames else None


def classify(exc: BaseException, names: set) -> tuple[str, str, bool]:
    """(status, message, unexpected) for an exception that ended a check cell. ``unexpected``: an error of the
    check itself, whose traceback the instructor's file keeps."""
    if isinstance(exc, integrity.ForbiddenReference):
        return "failed", short(str(exc)), False
    if isinstance(exc, integrity.Tampered):
        return "failed", tamper_message(str(exc)), False
    if isinstance(exc, OutputFlood):
        return "error", str(exc), False
    frame = _last_cell_frame(exc)
    student = frame is not None and frame.filename.startswith("<exercise ")
    where = f" ({frame.filename.strip('<>')}, line {frame.lineno})" if student else ""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001
        text = f"{type(exc).__name__}: <unprintable message>"
    if isinstance(exc, NotImplementedError):
        return "failed", f"not done yet: {short(str(exc)) or 'NotImplementedError'}", False
    if isinstance(exc, AssertionError) and not student:
        return "failed", short(str(exc)) or "an assertion failed", False
    if isinstance(exc, NameError) and not student and getattr(exc, "name", None) in names:
        return "failed", f"your notebook does not define `{exc.name}`", False
    if student:
        return "error", short(f"your code raised {text}{where}"), False
    return "error", short(f"the check could not run your code: {text}"), True


class OutputFlood(BaseException):
    """The code printed past the output limit during a check."""


class BoundedOutput(io.TextIOBase):
    """Where a check's prints go: the tail is kept (the last line is the check's message), and printing
    more than ``limit`` characters ends the check, as the output limit ends a process that floods its pipe."""

    def __init__(self, limit: int):
        self.limit, self.total, self.tail = limit, 0, ""

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        self.total += len(text)
        self.tail = (self.tail + text)[-4096:]
        if self.total > self.limit:
            raise OutputFlood(f"your code printed more than {self.limit} bytes (the output limit) during the check")
        return len(text)

    def getvalue(self) -> str:
        return self.tail


def tamper_message(what: str) -> str:
    return (f"your code changed the grader's checking tools ({what}); no check can pass while they are "
            "changed, so this check and the ones after it score zero")


class Server:
    def __init__(self, req_fd: int, resp_fd: int, workdir: str):
        self.req_fd, self.resp_fd, self.workdir = req_fd, resp_fd, workdir
        self.module = types.ModuleType("__main__")
        self.module.__dict__["get_ipython"] = _NoIPython
        self.ns: dict = self.module.__dict__
        sys.modules["__main__"] = self.module  # torch.compile and Triton look functions' globals up by module
        self.hidden: list = []
        self.strict = True
        self.names: set = set()
        self.max_output = 10 * 2**20
        self.pid = os.getpid()

    def only_me(self) -> None:
        """A process forked by student code never speaks on the channel: it ends here."""
        if os.getpid() != self.pid:
            os._exit(0)

    def run(self, request: dict) -> dict:
        cells = request["cells"]
        results = []
        for i, cell in enumerate(cells):
            label = cell.get("label", f"cell {i}")
            if cell.get("guard"):
                install_guard(self.workdir, self.hidden, self.strict)
            sys.stdout.flush()
            self.only_me()
            codec.write_message(self.resp_fd, {"progress": i})  # so a crash or hang can be blamed on this cell
            try:
                code = compile(to_python(cell["code"]), f"<{label}>", "exec")
                exec(code, self.ns)  # noqa: S102 - this is the sandboxed student process
                results.append({"ok": True})
            except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
                results.append({"ok": False, "error": describe(e, label)})
            sys.stdout.flush()
            self.only_me()
            if i == 0:  # the instructor's setup cell has run: lock the checking tools before any student code
                try:
                    integrity.preimport(request.get("preimport", []))
                    integrity.forbid(request.get("forbidden", {}))
                    integrity.freeze()
                except Exception as e:  # noqa: BLE001 - the instructor's metadata is wrong: stop, say why
                    results[0] = {"ok": False, "error": describe(e, "the solution's forbidden metadata")}
                    return {"ok": results + [{"ok": False, "error": None}] * (len(cells) - 1), "tampered": None}
        with contextlib.suppress(integrity.Tampered):
            integrity.verify()
        return {"ok": results, "tampered": integrity.tampered()}

    def check(self, request: dict) -> dict:
        """Run one check cell in a fresh ``__main__`` module holding the exercise cells' names."""
        nonce = request["nonce"]
        module = types.ModuleType("__main__")
        module.__dict__.update(self.ns)
        buffer = BoundedOutput(self.max_output)
        integrity.clear_hits()
        status, message, trace = "passed", "", None
        try:
            sys.modules["__main__"] = module
            integrity.verify()
            with contextlib.redirect_stdout(buffer):
                exec(compile(to_python(request["code"]), f"<check {request['exercise']}>", "exec"),  # noqa: S102
                     module.__dict__)
            integrity.verify()
            lines = buffer.getvalue().strip().splitlines()
            message = short(lines[-1]) if lines else ""
        except BaseException as e:  # noqa: BLE001 - every outcome becomes a verdict
            status, message, unexpected = classify(e, self.names)
            if unexpected:
                trace = traceback.format_exc(limit=-3)
        finally:
            sys.modules["__main__"] = self.module
        with contextlib.suppress(integrity.Tampered):
            integrity.verify()
        if integrity.tampered():
            status, message, trace = "failed", tamper_message(integrity.tampered()), None
        elif integrity.forbidden_hits():
            status, message, trace = "failed", short(integrity.forbidden_hits()[0]), None
        verdict = {"nonce": nonce, "status": status, "message": message}
        if trace:
            verdict["trace"] = trace[-4000:]  # the instructor's file only; never the student's report
        return verdict

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "run":
            self.hidden = [str(p) for p in request.get("hidden", [])]
            self.strict = bool(request.get("strict", True))
            self.names = set(request.get("names", []))
            self.max_output = int(request.get("max_output", 10 * 2**20))
            return self.run(request)
        if op == "check":
            return self.check(request)
        raise codec.CodecError(f"unknown op {op!r}")

    def serve(self) -> None:
        while True:
            try:
                request = codec.read_message(self.req_fd)
            except EOFError:
                return
            try:
                response = self.handle(request)
            except BaseException as e:  # noqa: BLE001 - report, keep serving
                response = {"exc": describe(e)}
            sys.stdout.flush()
            sys.stderr.flush()
            self.only_me()
            try:
                codec.write_message(self.resp_fd, response)
            except (codec.CodecError, TypeError, ValueError) as e:
                codec.write_message(self.resp_fd, {"exc": describe(e)})


def main(argv) -> None:
    req_fd, resp_fd, workdir = int(argv[1]), int(argv[2]), argv[3]
    # Keep the channel on private descriptors; student code gets /dev/null as stdin.
    req, resp = os.dup(req_fd), os.dup(resp_fd)
    os.close(req_fd)
    os.close(resp_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    sys.stdout.reconfigure(line_buffering=True)
    sys.setrecursionlimit(3000)
    os.chdir(workdir)
    Server(req, resp, workdir).serve()


if __name__ == "__main__":
    main(sys.argv)
