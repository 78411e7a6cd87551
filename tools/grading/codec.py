"""Framed JSON messages between the supervising checker and the sandboxed worker.

Only JSON crosses (cell code, names, verdicts); nothing is unpickled or evaluated. A message is an
8-byte big-endian length followed by UTF-8 JSON, at most :data:`MAX_MESSAGE` bytes (a bigger one is
refused: a memory bomb, not an answer).
"""

from __future__ import annotations

import json
import os
import struct

MAX_MESSAGE = 64 * 2**20  # bytes


class CodecError(ValueError):
    """A message that is not a well-formed framed JSON object."""


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
