"""Length-prefixed pickles over a pipe: how the worker talks to its child processes (``pipeline.identity``'s face
analysis, ``pipeline.task_process``'s tasks). Both ends are this program; nothing else writes these pipes."""

from __future__ import annotations

import pickle
import struct
from typing import Any

_HEADER = struct.Struct("!Q")


def write_frame(stream: Any, obj: object) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: Any) -> Any:
    """One frame; ``EOFError`` when the other end closed the pipe (before or inside a frame)."""
    (size,) = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
    return pickle.loads(_read_exactly(stream, size))


def _read_exactly(stream: Any, size: int) -> bytes:
    """``size`` bytes: an unbuffered pipe may return fewer at a time."""
    parts, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the other process closed the pipe")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
