"""``python -m pipeline ARGS`` with every thread profiled: ``python -m tests.bench.profile_worker OUT.prof ARGS``.

``python -m cProfile`` sees only the main thread, and a worker's work runs on other threads (a task's, its stages'
pools, the limiter's renewer). Here each thread gets a profiler of its own, and at exit their statistics are merged
into ``OUT.prof`` (read it with ``pstats``). The benches start their workers this way when ``BENCH_PROFILE_DIR`` is
set (``tests.bench.bench_executor.worker_command``). Profiling slows the worker: time a run without it.
"""

from __future__ import annotations

import atexit
import contextlib
import cProfile
import pstats
import sys
import threading
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _run(self)
    finally:
        profile.disable()


def _dump(path: str) -> None:
    stats: pstats.Stats | None = None
    with _lock:
        profiles = list(_profiles)
    for profile in profiles:
        with contextlib.suppress(TypeError, ValueError):  # a thread's profile with nothing recorded
            profile.create_stats()
            stats = pstats.Stats(profile) if stats is None else stats.add(profile)
    if stats is not None:
        stats.dump_stats(path)


def main(argv: list[str]) -> Any:
    path, args = argv[0], argv[1:]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile()
    _profiles.append(main_profile)
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
