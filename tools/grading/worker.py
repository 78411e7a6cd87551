"""The untrusted side: runs one student's exercise cells and answers calls.

Started by :mod:`checker` inside the sandbox (see :mod:`sandbox`), one worker
per submission. It receives cell code on a private channel, executes the
solution's setup cells and the student's exercise cells in one namespace, then
serves requests: ``get`` a name, ``call`` a handle, ``getattr`` on a handle.
Everything it sends back is plain data or a handle number (see :mod:`codec`):
the checking code never runs in this process, so nothing the student patches
here (``torch.testing.assert_close``, ``numpy.testing``, ``attnlib.checks``,
builtins) can reach the checks.

Usage (by the checker only): ``python -I worker.py REQUEST_FD RESPONSE_FD WORKDIR``.
"""

from __future__ import annotations

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True

import codec  # noqa: E402

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


class Server:
    def __init__(self, req_fd: int, resp_fd: int, workdir: str):
        self.req_fd, self.resp_fd, self.workdir = req_fd, resp_fd, workdir
        self.ns: dict = {"__name__": "__main__", "get_ipython": _NoIPython}
        self.handles: dict[int, object] = {}
        self.ids: dict[int, int] = {}
        self.hidden: list = []
        self.strict = True
        self.pid = os.getpid()
        self.graphs: list = []  # (inputs, outputs) of calls whose result carries an autograd graph

    def only_me(self) -> None:
        """A process forked by student code never speaks on the channel: it ends here."""
        if os.getpid() != self.pid:
            os._exit(0)

    def to_handle(self, obj) -> codec.Handle:
        key = id(obj)
        if key not in self.ids:
            self.ids[key] = len(self.handles) + 1
            self.handles[self.ids[key]] = obj
        return codec.Handle(self.ids[key], type(obj).__name__, "worker")

    def from_handle(self, h: codec.Handle):
        if h.owner != "worker" or h.id not in self.handles:
            raise codec.CodecError(f"unknown handle {h.id}")
        return self.handles[h.id]

    def answer(self, value) -> dict:
        return {"ok": codec.encode(value, self.to_handle)}

    def run(self, cells: list) -> dict:
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
        return {"ok": results}

    def call(self, request: dict) -> dict:
        """Call a student's function. Tensors that require grad in the checker require grad here too;
        if the result carries a graph, it is kept so that the checker's ``backward`` can come back."""
        fn = self.from_handle(codec.Handle(request["handle"], "", "worker"))
        inputs: dict = {}

        def on_decode(t, fields):
            k = fields.get("grad_input")
            if isinstance(k, int) and (t.is_floating_point() or t.is_complex()):
                t.requires_grad_(True)
                inputs[k] = t
            return t

        with codec.tensor_hooks(decode=on_decode):
            args = codec.decode(request["args"], self.from_handle)
            kwargs = codec.decode(request["kwargs"], self.from_handle)
        result = fn(*args, **kwargs)
        outputs: list = []

        def on_encode(t):
            # A computed tensor (or an input handed back) carries the graph; a parameter is plain data.
            if t.requires_grad and (t.grad_fn is not None or any(t is i for i in inputs.values())):
                outputs.append(t)
                return {"grad_output": len(outputs) - 1}
            return None

        with codec.tensor_hooks(encode=on_encode):
            reply = self.answer(result)
        if outputs:
            self.graphs.append(([inputs[k] for k in sorted(inputs)], outputs))
            reply["graph"] = len(self.graphs) - 1
        return reply

    def backward(self, request: dict) -> dict:
        """Back-propagate the checker's output gradients; return the gradients of the inputs."""
        import torch

        inputs, outputs = self.graphs[int(request["graph"])]
        grads = codec.decode(request["grads"], self.from_handle)
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
        for t in inputs:
            t.grad = None
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs], retain_graph=True)
        return self.answer([t.grad for t in inputs])

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "run":
            self.hidden = [str(p) for p in request.get("hidden", [])]
            self.strict = bool(request.get("strict", True))
            return self.run(request["cells"])
        if op == "get":
            name = request["name"]
            if name not in self.ns:
                return {"exc": {"type": "NameError", "bases": ["NameError", "Exception"],
                                "message": f"name {name!r} is not defined", "where": None}}
            return self.answer(self.ns[name])
        if op == "call":
            return self.call(request)
        if op == "backward":
            return self.backward(request)
        if op == "getattr":
            obj = self.from_handle(codec.Handle(request["handle"], "", "worker"))
            return self.answer(getattr(obj, request["name"]))
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
