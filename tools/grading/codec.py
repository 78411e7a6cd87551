"""Plain-data messages between the trusted checker and the untrusted worker.

Nothing here unpickles or evaluates anything: a message is JSON, and the only
values that cross are data (``None``, bool, int, float, str, lists, tuples,
dicts, ``torch.Tensor``, ``numpy.ndarray`` of numbers, ``torch.dtype``,
``slice``) or a *handle*: the number of an object that stays in the process
that owns it. A tensor crosses as its dtype, shape and raw bytes, so a tensor
subclass with a patched ``__eq__`` arrives as a plain tensor.

Messages are framed as an 8-byte big-endian length followed by UTF-8 JSON.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import struct

MAX_MESSAGE = 64 * 2**20  # bytes; a bigger message is refused (a memory bomb, not an answer)
MAX_DEPTH = 32


class CodecError(ValueError):
    """A message that is not well-formed plain data."""


_HOOKS: dict = {"encode": None, "decode": None}


@contextlib.contextmanager
def tensor_hooks(encode=None, decode=None):
    """Within the block, ``encode(tensor) -> dict|None`` adds fields to each encoded tensor and
    ``decode(tensor, fields) -> tensor`` sees each decoded one (used to link gradients across)."""
    old = dict(_HOOKS)
    _HOOKS.update(encode=encode, decode=decode)
    try:
        yield
    finally:
        _HOOKS.update(old)


class Handle:
    """A reference to an object owned by the *other* process (decoded, never dereferenced here)."""

    __slots__ = ("id", "type", "owner")

    def __init__(self, id: int, type: str, owner: str):
        self.id, self.type, self.owner = id, type, owner


def _float(x: float):
    if math.isnan(x) or math.isinf(x):
        return {"__float__": repr(x)}
    return x


def encode(value, to_handle, depth: int = 0):
    """JSON-able form of ``value``; ``to_handle(obj)`` returns a :class:`Handle` for non-data objects."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int or isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, complex):
        return {"__complex__": [_float(value.real), _float(value.imag)]}
    if isinstance(value, (list, tuple)):
        items = [encode(v, to_handle, depth + 1) for v in value]
        return items if type(value) is list else {"__tuple__": items}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k, to_handle, depth + 1), encode(v, to_handle, depth + 1)]
                             for k, v in value.items()]}
    if isinstance(value, slice):
        return {"__slice__": [encode(value.start, to_handle, depth + 1), encode(value.stop, to_handle, depth + 1),
                              encode(value.step, to_handle, depth + 1)]}
    if value is Ellipsis:
        return {"__ellipsis__": True}
    if isinstance(value, Handle):
        return {"__handle__": value.id, "type": value.type, "owner": value.owner}
    encoded = _encode_array(value)
    if encoded is not None:
        return encoded
    h = to_handle(value)
    return {"__handle__": h.id, "type": h.type, "owner": h.owner}


def _encode_array(value):
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(value, torch.dtype):
            return {"__dtype__": str(value)}
        if isinstance(value, torch.Size):
            return {"__tuple__": [int(s) for s in value]}
        if isinstance(value, torch.Tensor):
            t = torch.Tensor.detach(value)
            if t.layout != torch.strided or t.is_quantized:
                t = t.to_dense()
            t = t.cpu().contiguous().clone()
            t = torch.Tensor.as_subclass(t, torch.Tensor)
            data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            out = {"__tensor__": base64.b64encode(data).decode("ascii"), "dtype": str(t.dtype),
                   "shape": list(t.shape)}
            grad = value.grad if value.is_leaf else None
            if isinstance(grad, torch.Tensor):  # a parameter's accumulated gradient travels with it
                out["grad"] = _encode_array(grad)
            if _HOOKS["encode"] is not None:
                out.update(_HOOKS["encode"](value) or {})
            return out
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            a = np.ascontiguousarray(value)
            return {"__ndarray__": base64.b64encode(a.tobytes()).decode("ascii"), "dtype": a.dtype.str,
                    "shape": list(a.shape)}
        if isinstance(value, np.generic) and value.dtype.kind in "biufc":
            return encode(value.item(), lambda v: None)
    return None


def decode(obj, from_handle, depth: int = 0):
    """Inverse of :func:`encode`; ``from_handle(Handle)`` builds the local stand-in for a handle."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [decode(v, from_handle, depth + 1) for v in obj]
    if not isinstance(obj, dict) or len(obj) == 0:
        raise CodecError(f"unexpected {type(obj).__name__} in a message")
    if "__tuple__" in obj:
        return tuple(decode(v, from_handle, depth + 1) for v in obj["__tuple__"])
    if "__dict__" in obj:
        out = {}
        for pair in obj["__dict__"]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise CodecError("malformed dict entry")
            key = decode(pair[0], from_handle, depth + 1)
            try:
                hash(key)
            except TypeError:
                raise CodecError("unhashable dict key") from None
            out[key] = decode(pair[1], from_handle, depth + 1)
        return out
    if "__float__" in obj:
        if obj["__float__"] not in ("nan", "inf", "-inf"):
            raise CodecError("bad float")
        return float(obj["__float__"])
    if "__complex__" in obj:
        re_, im = (decode(v, from_handle, depth + 1) for v in obj["__complex__"])
        return complex(float(re_), float(im))
    if "__slice__" in obj:
        return slice(*(decode(v, from_handle, depth + 1) for v in obj["__slice__"]))
    if "__ellipsis__" in obj:
        return Ellipsis
    if "__dtype__" in obj:
        import torch

        name = str(obj["__dtype__"]).removeprefix("torch.")
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise CodecError(f"unknown dtype {name!r}")
        return dtype
    if "__tensor__" in obj:
        t = _decode_tensor(obj)
        if isinstance(obj.get("grad"), dict) and "__tensor__" in obj["grad"]:
            grad = _decode_tensor(obj["grad"])
            if grad.shape == t.shape and grad.dtype == t.dtype:
                t.grad = grad
        return t if _HOOKS["decode"] is None else _HOOKS["decode"](t, obj)
    if "__ndarray__" in obj:
        import numpy as np

        dtype = np.dtype(str(obj["dtype"]))
        if dtype.kind not in "biufc":
            raise CodecError("only numeric arrays cross")
        shape = [int(s) for s in obj["shape"]]
        return np.frombuffer(base64.b64decode(obj["__ndarray__"]), dtype=dtype).reshape(shape).copy()
    if "__handle__" in obj:
        return from_handle(Handle(int(obj["__handle__"]), str(obj.get("type", "object")), str(obj.get("owner", ""))))
    raise CodecError(f"unknown value tag {sorted(obj)[:3]}")


def _decode_tensor(obj):
    import torch

    name = str(obj["dtype"]).removeprefix("torch.")
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise CodecError(f"unknown dtype {name!r}")
    shape = [int(s) for s in obj["shape"]]
    if any(s < 0 for s in shape):
        raise CodecError("negative tensor dimension")
    data = base64.b64decode(obj["__tensor__"])
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != numel * itemsize:
        raise CodecError(f"tensor of shape {shape} and dtype {dtype} cannot hold {len(data)} bytes")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape).clone()
    return t


def write_message(fd: int, message: dict) -> None:
    """Send one framed JSON message on file descriptor ``fd``."""
    data = json.dumps(message, allow_nan=False).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise CodecError(f"message of {len(data)} bytes is over the {MAX_MESSAGE}-byte limit")
    payload = struct.pack(">Q", len(data)) + data
    view = memoryview(payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> dict:
    """Receive one framed JSON message from ``fd`` (raises ``EOFError`` if the peer is gone)."""
    (length,) = struct.unpack(">Q", _read_exact(fd, 8))
    if length > MAX_MESSAGE:
        raise CodecError(f"message of {length} bytes is over the {MAX_MESSAGE}-byte limit")
    message = json.loads(_read_exact(fd, length).decode("utf-8"))
    if not isinstance(message, dict):
        raise CodecError("a message must be a JSON object")
    return message
