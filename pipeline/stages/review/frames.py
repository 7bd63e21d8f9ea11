"""Length-prefixed pickles over a pipe: how a worker talks to the identity check's analysis processes
(``pipeline.stages.review.identity``). Both ends are this program; nothing else writes these pipes."""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
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


def start_child(module: str, **popen: Any) -> subprocess.Popen[bytes]:
    """``python -m MODULE`` from the project's root, its stdin and stdout the pipes of the frames."""
    root = str(Path(__file__).resolve().parents[3])  # the folder that holds pipeline/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root,
                            env=env, **popen)


def stop_child(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Close its stdin (a child's signal to finish and exit), then wait; kill it after ``timeout``."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
