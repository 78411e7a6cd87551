"""Keeping the checking tools honest while checks run in the student's process.

The grader runs each check cell in the same interpreter as the student's exercise cells (so a check
means exactly what it means in the notebook: kernels launched into the check's buffers, callables and
modules passed in, saved tensors inspected, ``torch.compile``). Three guards keep a submission from
passing by changing the tools the checks use:

1. :func:`freeze` is called after the instructor's setup cell and before any student code. It records
   the identity of every attribute of the trusted modules (``torch``, ``numpy``, ``attnlib``, ``math``,
   ``builtins`` and the modules the check cells import) and of the classes the checks rely on
   (``attnlib.checks.Check``, ``torch.Tensor``, ...), and installs an audit hook - which Python code
   cannot remove - that refuses to change the code or defaults of any trusted function and the class of
   a trusted module (Python raises audit events for those, not for ordinary attribute assignment).
2. :func:`verify` compares the trusted modules and classes with that record. The worker calls it after
   the exercise cells and before and after every check, and ``attnlib.checks.Check`` calls the fast form
   at every assertion (a ``Check`` binds its methods when it is created, at the top of a check cell, so
   a patch of the class made later has no effect on it), so a function patched at import or inside an
   exercise function is caught while it is in place. A change means the check (and every later one)
   fails with a message that names what changed.
3. :func:`forbid` replaces the attnlib functions an exercise must not call (the exercise cell's
   ``forbidden`` metadata: the reference its check compares with) by wrappers that raise
   :class:`ForbiddenReference` when a frame of that exercise's cell is on the stack, and otherwise call
   the original (the checks themselves, and attnlib's own code, still use the reference).

What this does not stop (said in the README): code written to attack the grader itself - reading the
worker's frames to forge a verdict, a patch of a torch function that undoes itself before the next
verification from code the checks do not call directly (a hook, a backward), or C-level tricks. The sandbox still holds (no network, read-only
files, hidden solutions), and every submission's rebuilt notebook is kept for the instructor.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import types

TRUSTED_PREFIXES = ("torch", "numpy", "attnlib", "math", "builtins", "functools", "operator")
# Modules checked at every assertion (cheap); the rest are checked before and after each check.
FAST_MODULES = ("builtins", "math", "torch", "torch.testing", "torch.testing._comparison", "torch.nn.functional",
                "torch.autograd", "numpy", "numpy.testing", "attnlib.checks")
# Classes whose attributes may not be set or deleted once frozen (by name, resolved at freeze time).
PROTECTED_CLASSES = ("attnlib.checks.Check", "attnlib.checks.Case", "torch.Tensor", "torch._C.TensorBase",
                     "torch.nn.Module", "torch.nn.Parameter", "torch.autograd.Function")

_state: dict = {"rest": {}, "rest_classes": {}, "library_dirs": (), "tables": {}, "frozen": False, "snapshot": {}, "fast": {}, "classes": {}, "fast_classes": {}, "tampered": None,
                "forbidden_hits": []}


class ForbiddenReference(BaseException):
    """An exercise called the reference its check compares with. A ``BaseException``, so that an
    ``except Exception`` in the student's code or in a check cannot swallow it."""


def _trusted(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in TRUSTED_PREFIXES)


def _record(module) -> dict:
    """The module's attributes (the objects themselves, so that an id cannot be reused), dunders aside."""
    try:
        items = dict(vars(module))
    except TypeError:
        return {}
    return {k: v for k, v in items.items() if not (k.startswith("__") and k.endswith("__")) or k == "__getattr__"}


def _resolve(dotted: str):
    """The object a dotted name denotes (``attnlib.core.masked_softmax``), importing the module part."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {dotted!r}")


def preimport(modules) -> None:
    """Import the modules the check cells import, while only instructor code has run (quietly skips
    a module this machine lacks: the check that needs it reports that itself)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - e.g. triton on a machine without it
            pass


def freeze() -> None:
    """Record the trusted modules and install the audit hook (once per process). ``attnlib.checks.Check``
    is told to call :func:`verify` (fast form) at every assertion before its class is locked."""
    try:
        import attnlib.checks as checks

        checks.Check._integrity = staticmethod(functools.partial(verify, full=False))
    except Exception:  # noqa: BLE001 - a lab that does not use attnlib.checks
        pass
    snapshot = {name: _record(m) for name, m in list(sys.modules.items())
                if m is not None and _trusted(name)}
    _state["snapshot"] = snapshot
    _state["library_dirs"] = _library_dirs()
    _state["fast"] = {n: snapshot[n] for n in FAST_MODULES if n in snapshot}
    _state["rest"] = {n: v for n, v in snapshot.items() if n not in _state["fast"]}
    # The contents of the tables the checking tools read (e.g. torch.testing's default tolerances).
    _state["tables"] = {(n, k): _copy(v) for n in FAST_MODULES if n in snapshot
                        for k, v in snapshot[n].items() if isinstance(v, (dict, list, set))}
    classes = set()
    for dotted in PROTECTED_CLASSES:
        try:
            classes.add(_resolve(dotted))
        except Exception:  # noqa: BLE001 - a class this torch does not have
            pass
    _state["classes"] = {cls: dict(vars(cls)) for cls in classes}
    _state["fast_classes"] = {cls: v for cls, v in _state["classes"].items()
                              if cls.__module__.startswith("attnlib")}
    _state["rest_classes"] = {cls: v for cls, v in _state["classes"].items() if cls not in _state["fast_classes"]}
    trusted_modules = {id(m) for name, m in sys.modules.items() if m is not None and _trusted(name)}

    def hook(event, args):
        if not _state["frozen"]:
            return
        if event in ("gc.get_objects", "gc.get_referrers", "gc.get_referents"):
            raise PermissionError(f"the grader does not allow {event} (it would reach the grader's own objects)")
        if event not in ("object.__setattr__", "object.__delattr__"):
            return
        obj, name = args[0], args[1]
        if isinstance(obj, types.FunctionType) and name in ("__code__", "__defaults__", "__kwdefaults__") \
                and _trusted(str(getattr(obj, "__module__", "") or "")):
            raise PermissionError(f"the grader does not allow changing {obj.__qualname__}.{name}")
        if name == "__class__" and id(obj) in trusted_modules:
            raise PermissionError(f"the grader does not allow changing the class of module {obj.__name__}")

    sys.addaudithook(hook)
    _state["frozen"] = True


def _library_dirs() -> tuple:
    dirs = []
    for name in ("torch", "numpy", "attnlib"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(os.path.realpath(module.__file__)) + os.sep)
    return tuple(dirs)


def _library_wrapper(new, old, lenient: bool) -> bool:
    """A function of a trusted library's own files put in place by that library, as ``torch._dynamo`` does
    when it is first used: it wraps ``torch.manual_seed`` (``functools.wraps``, accepted everywhere) and
    replaces ``nn.Module.__init__`` (accepted only outside the checking tools, ``lenient``)."""
    code = getattr(new, "__code__", None)
    if code is None or not os.path.realpath(code.co_filename).startswith(_state["library_dirs"]):
        return False
    return lenient or getattr(new, "__wrapped__", None) is old


def _copy(table):
    return type(table)(table) if not isinstance(table, dict) else dict(table)


def _tables_changed() -> str | None:
    for (name, key), copy in _state["tables"].items():
        table = _state["snapshot"][name][key]
        try:
            same = len(table) == len(copy) and table == copy
        except Exception:  # noqa: BLE001 - an entry that cannot be compared counts as changed
            same = False
        if not same:
            return f"the contents of {name}.{key} were changed"
    return None


def _diff(record: dict, classes: dict, lenient: bool = False) -> str | None:
    """What changed in ``record``'s modules and ``classes`` (``lenient``: a trusted library's own
    replacement is accepted and recorded)."""
    for cls, attrs in classes.items():
        now = vars(cls)
        for key, value in attrs.items():
            if key not in now:
                return f"{cls.__module__}.{cls.__qualname__}.{key} was deleted"
            if now[key] is not value:
                if _library_wrapper(now[key], value, lenient):
                    attrs[key] = now[key]
                    continue
                return f"{cls.__module__}.{cls.__qualname__}.{key} was replaced"
        added = [k for k in now if k not in attrs and not k.startswith("_abc")]
        if added and cls.__module__.startswith("attnlib"):
            return f"{cls.__module__}.{cls.__qualname__}.{added[0]} was added"
    for name, attrs in record.items():
        module = sys.modules.get(name)
        if module is None:
            continue
        try:
            now = vars(module)
        except TypeError:
            continue
        for key, value in attrs.items():
            if key not in now:
                return f"{name}.{key} was deleted"
            if now[key] is not value:
                if _library_wrapper(now[key], value, lenient) or (lenient and not callable(value)):
                    # torch._dynamo wraps torch.manual_seed when it is imported; libraries rebind their own
                    # data (caches, sets of names) as they run
                    attrs[key] = now[key]
                    continue
                return f"{name}.{key} was replaced"
        if "__getattr__" in now and "__getattr__" not in attrs:
            return f"{name}.__getattr__ was added"
    return None


def verify(full: bool = True) -> None:
    """Raise :class:`Tampered` if a trusted module changed since :func:`freeze` (``full=False``: only the
    modules the checks use at every assertion)."""
    if not _state["frozen"]:
        return
    if _state["tampered"] is None:
        _state["tampered"] = _diff(_state["fast"], _state["fast_classes"]) or _tables_changed()
        if full and _state["tampered"] is None:
            _state["tampered"] = _diff(_state["rest"], _state["rest_classes"], lenient=True)
    if _state["tampered"] is not None:
        raise Tampered(_state["tampered"])


class Tampered(BaseException):
    """A trusted module was changed by the submission; the message says which attribute."""


def tampered() -> str | None:
    return _state["tampered"]


def forbid(rules: dict) -> None:
    """``rules``: ``{dotted name: [exercise, ...]}``. Replace each named attnlib function (everywhere an
    attnlib module holds it) by a wrapper that raises :class:`ForbiddenReference` when called from the
    exercise cell of one of those exercises; a class gets the same guard on ``__init__``."""
    for dotted, exercises in rules.items():
        original = _resolve(dotted)
        cells = frozenset(f"<exercise {e}>" for e in exercises)
        label = f"Exercise {', '.join(sorted(exercises))}"

        def called_from_exercise(cells=cells) -> bool:
            frame = sys._getframe(2)
            while frame is not None:
                if frame.f_code.co_filename in cells:
                    return True
                frame = frame.f_back
            return False

        def refuse(dotted=dotted, label=label):
            message = (f"{label}: your code calls {dotted}, the reference this exercise is checked against; "
                       "write it yourself (the lab's 'How this lab works' says which attnlib functions "
                       "each exercise may use)")
            _state["forbidden_hits"].append(message)
            raise ForbiddenReference(message)

        if not isinstance(original, (type, types.FunctionType, types.BuiltinFunctionType)):
            raise TypeError(f"forbidden: {dotted} is a {type(original).__name__}; only functions and classes can "
                            "be forbidden (name the Python function that launches a kernel instead)")
        if isinstance(original, type):
            init = original.__init__

            @functools.wraps(init)
            def guarded_init(self, *args, __init=init, __check=called_from_exercise, __refuse=refuse, **kwargs):
                if __check():
                    __refuse()
                return __init(self, *args, **kwargs)

            original.__init__ = guarded_init
            continue

        @functools.wraps(original)
        def guarded(*args, __original=original, __check=called_from_exercise, __refuse=refuse, **kwargs):
            if __check():
                __refuse()
            return __original(*args, **kwargs)

        guarded.__forbidden_original__ = original
        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith("attnlib"):
                continue
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, guarded)


def forbidden_hits() -> list:
    """Messages of forbidden calls so far; :func:`clear_hits` empties the list (per check)."""
    return list(_state["forbidden_hits"])


def clear_hits() -> None:
    _state["forbidden_hits"].clear()
