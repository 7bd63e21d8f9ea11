"""``python -m pipeline ARGS`` with every thread profiled: ``python -m tests.bench.profile_worker OUT.prof ARGS``.

``python -m cProfile`` sees only the main thread, and a worker's work runs on other threads (a task's, its stages'
pools, the limiter's renewer). Here each thread gets a profiler of its own, merged into one ``pstats.Stats`` when
the thread ends (hundreds of pool threads: merging them all at exit took minutes); at exit, with the threads still
running, it is written to ``OUT.prof`` (read it with ``pstats``). Times are each thread's CPU seconds
(``time.thread_time``), not wall time: a thread waiting on a lock or a socket costs nothing there. The benches start their workers this way when ``BENCH_PROFILE_DIR`` is
set (``tests.bench.bench_executor.worker_command``). Profiling slows the worker: time a run without it.
"""

from __future__ import annotations

import atexit
import contextlib
import cProfile
import pstats
import sys
import threading
import time
from typing import Any

_running: set[cProfile.Profile] = set()  # the profiles of threads still running
_merged: list[pstats.Stats] = []  # at most one: what the ended threads recorded
_lock = threading.Lock()
_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile(time.thread_time)
    with _lock:
        _running.add(profile)
    profile.enable()
    try:
        _run(self)
    finally:
        profile.disable()
        with _lock:
            _running.discard(profile)
            _merge(profile)


def _merge(profile: cProfile.Profile) -> None:  # under _lock
    with contextlib.suppress(TypeError, ValueError):  # a profile with nothing recorded
        profile.create_stats()
        if _merged:
            _merged[0].add(profile)
        else:
            _merged.append(pstats.Stats(profile))


def _dump(path: str) -> None:
    with _lock:
        for profile in list(_running):
            _merge(profile)
        if _merged:
            _merged[0].dump_stats(path)


def main(argv: list[str]) -> Any:
    path, args = argv[0], argv[1:]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile(time.thread_time)
    _running.add(main_profile)
    atexit.register(_dump, path)
    from pipeline.cli import main as pipeline_main  # after the patch: threads started at import are profiled too

    sys.argv = ["pipeline", *args]
    main_profile.enable()
    try:
        return pipeline_main()
    finally:
        main_profile.disable()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
